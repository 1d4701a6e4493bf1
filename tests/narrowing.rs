//! A link that narrows under a viewer we did not write, mid-stream, and
//! widens again. Three receivers at their default settings on the link
//! that narrows: GStreamer's webrtcbin (receiver reports every 5 s on
//! average, no NACKs, no REMB, no TWCC; access units out of its
//! depayloader are counted), aiortc (receiver reports, NACKs, PLIs, REMB;
//! decoded frames, tests/interop/aiortc_viewer.py), and a stock headless
//! Chromium tab on the independent page (TWCC, NACKs; frames presented,
//! web/bench/tabs.mjs). One camera (moving SMPTE bars, 1280x720 at
//! 2 Mbit/s and 640x360 at 300 kbit/s); the receiver under test and a
//! webrtcbin receiver beside it, each on a link of its own
//! (tests/common/netns.rs); once both play the top layer, the first link is
//! shaped to 500 kbit/s (`tbf`, 16 kB burst, 100 ms of queue) for
//! [`SHAPED_FOR`], then freed.
//!
//! From [`SETTLE`] after the link narrowed until it widens, the shaped
//! receiver's picture never waits more than [`LONGEST_GAP`] for a frame
//! and averages [`SHAPED_FPS`]; the other receiver never notices (at least
//! [`FREE_FPS`] in every 2 s); the shaped one is back on the top layer
//! within [`UP`] of the link widening; nobody is offered a new connection.
//! aiortc's onset misses the target, and its test is held to less (it
//! says what). Needs root for the namespaces and the shaping (the tests
//! fail saying so otherwise); one test at a time, as each camera encodes
//! two layers.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::netns::{BROKER_WS_PORT, LineProcess, NsBroker, NsCamera, Spoke, Star, observer_at};
use common::webrtcbin::WebrtcbinViewer;
use common::{TempDir, inbox, two_layer_camera};
use serde_json::Value;

const ROOM: &str = "home";
const SHAPED: usize = 0;
const FREE: usize = 1;

const SHAPED_FOR: Duration = Duration::from_secs(40);
const SETTLE: f64 = 2.0;
const AIORTC_SETTLE: f64 = 10.0;
const LONGEST_GAP: f64 = 0.5;
const SHAPED_FPS: f64 = 25.0;
const FREE_FPS: f64 = 28.0;
const UP: Duration = Duration::from_secs(15);
/// Joining, connecting, the first frames: a bound that only turns a hang
/// into a failure.
const CONNECT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// One camera encoding two layers takes most of a core: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Moving bars.
const PICTURE: &str = "pattern=smpte horizontal-speed=4";

/// Frame counts over a receiver's own clock: (seconds, frames so far,
/// longest gap in the frames before, in seconds).
struct Frames(Vec<(f64, f64, f64)>);

impl Frames {
    /// From the lines of `event` carrying `t`, `count` and `gap_ms`.
    fn of(lines: &[Value], event: &str, count: &str) -> Self {
        Self(
            lines
                .iter()
                .filter(|v| v["event"] == event)
                .map(|v| {
                    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
                    (n("t"), n(count), n("gap_ms") / 1000.0)
                })
                .collect(),
        )
    }

    /// The longest wait for a frame within `from..=to`. A gap is told by
    /// the event after it, and may have begun before `from`: only its part
    /// after `from` counts.
    fn longest_gap(&self, from: f64, to: f64) -> f64 {
        self.0
            .iter()
            .filter(|e| e.0 > from && e.0 <= to)
            .map(|e| e.2.min(e.0 - from))
            .fold(0.0, f64::max)
    }

    /// Frames per second over `from..=to`: those between the first event
    /// and the last within it, over the time from `from` (a stall right
    /// after `from` counts against it).
    fn fps(&self, from: f64, to: f64) -> f64 {
        let events: Vec<_> = self.0.iter().filter(|e| e.0 >= from && e.0 <= to).collect();
        match (events.first(), events.last()) {
            (Some(a), Some(b)) if b.0 > from => (b.1 - a.1) / (b.0 - from),
            _ => 0.0,
        }
    }

    /// The lowest frame rate over any `window` within `from..=to`.
    fn lowest_fps(&self, from: f64, to: f64, window: f64) -> f64 {
        let events: Vec<_> = self.0.iter().filter(|e| e.0 >= from && e.0 <= to).collect();
        events
            .iter()
            .filter_map(|a| {
                let b = events.iter().find(|b| b.0 - a.0 >= window)?;
                Some((b.1 - a.1) / (b.0 - a.0))
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// One line of the shaped link's trace, for failure messages.
fn trace_line(at: &str, c: &Value) -> String {
    format!(
        "\n  {at} layer {} estimate {} kbit/s ({}) loss {} nack {} padding {} kbit/s",
        c["layer"],
        c["estimate_kbps"],
        c["estimator"],
        c["loss"],
        c["nack_ratio"],
        c["padding_kbps"]
    )
}

fn layer_of(stats: &Value, peer: &str) -> Option<u64> {
    common::connection_to(stats, peer).and_then(|c| c["layer"].as_u64())
}

/// A receiver we did not write, read through its JSON lines.
enum Receiver {
    Webrtcbin(WebrtcbinViewer),
    /// tests/interop/aiortc_viewer.py: the webrtcbin viewer's lines.
    Aiortc {
        viewer: LineProcess,
        _dir: TempDir,
    },
    /// web/bench/tabs.mjs with one tab.
    Chromium {
        tab: LineProcess,
        _dir: TempDir,
    },
}

/// The Python environment scripts/setup makes for aiortc.
const AIORTC_PYTHON: &str = "/opt/meshcam-aiortc/bin/python";

impl Receiver {
    fn webrtcbin(spoke: &Spoke, id: &str) -> Self {
        Self::Webrtcbin(WebrtcbinViewer::start(
            &spoke.ns,
            &spoke.broker_url(),
            spoke.addr,
            ROOM,
            id,
            &["--no-decode"],
        ))
    }

    fn aiortc(spoke: &Spoke, id: &str) -> Self {
        assert!(
            Path::new(AIORTC_PYTHON).exists(),
            "the aiortc receiver needs {AIORTC_PYTHON}: ./scripts/setup test makes it"
        );
        let dir = common::temp_dir(id);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiortc_viewer.py");
        let mut command = spoke.ns.command(AIORTC_PYTHON);
        command
            .arg(script)
            .args(["--broker", &spoke.broker_url(), "--room", ROOM, "--id", id]);
        let mut viewer = LineProcess::spawn(&format!("aiortc viewer {id}"), command, &dir);
        viewer.wait_for("joined", CONNECT, |v| v["event"] == "joined");
        Self::Aiortc { viewer, _dir: dir }
    }

    /// A tab in `spoke`'s namespace, on the broker's WebSockets listener
    /// (on the first spoke's link).
    fn chromium(spoke: &Spoke, id: &str, camera: &str) -> Self {
        let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        assert!(
            web.join("node_modules/playwright-core").exists(),
            "the Chromium receiver needs web/node_modules: (cd web && npm ci), as scripts/test does"
        );
        let dir = common::temp_dir(id);
        let broker = format!("ws://{}:{BROKER_WS_PORT}", spoke.cam_addr);
        let mut command = spoke.ns.command("node");
        command
            .arg(web.join("bench/tabs.mjs"))
            .args(["--broker", &broker, "--room", ROOM, "--camera", camera])
            .args(["--ids", id, "--interval", "0.25"])
            .current_dir(&web);
        let tab = LineProcess::spawn(&format!("chromium tab {id}"), command, &dir);
        Self::Chromium { tab, _dir: dir }
    }

    fn lines(&mut self) -> &mut LineProcess {
        match self {
            Self::Webrtcbin(v) => &mut v.process,
            Self::Aiortc { viewer, .. } => viewer,
            Self::Chromium { tab, .. } => tab,
        }
    }

    /// Waits until it has played three seconds' worth of frames.
    fn wait_playing(&mut self) {
        match self {
            Self::Webrtcbin(v) => {
                v.wait_frames(90, 1, CONNECT);
            }
            Self::Aiortc { viewer, .. } => {
                viewer.wait_for("90 frames", CONNECT, |v| {
                    v["event"] == "frame" && v["count"].as_u64() >= Some(90)
                });
            }
            Self::Chromium { tab, .. } => {
                tab.wait_for("90 frames", CONNECT, |v| {
                    v["event"] == "report" && v["frames"].as_u64() >= Some(90)
                });
            }
        }
    }

    /// Its clock now: a mark from the scripts, the next report from the tab.
    fn now(&mut self) -> f64 {
        let line = match self {
            Self::Webrtcbin(WebrtcbinViewer { process, .. })
            | Self::Aiortc {
                viewer: process, ..
            } => {
                process.send("mark");
                process.wait_for("mark", Duration::from_secs(5), |v| v["event"] == "mark")
            }
            Self::Chromium { tab, .. } => {
                tab.drain(Duration::ZERO);
                tab.wait_for("a report", Duration::from_secs(5), |v| {
                    v["event"] == "report"
                })
            }
        };
        line["t"].as_f64().expect("t on the receiver's clock")
    }

    fn frames(&self) -> Frames {
        match self {
            Self::Webrtcbin(WebrtcbinViewer { process, .. })
            | Self::Aiortc {
                viewer: process, ..
            } => Frames::of(&process.seen, "frame", "count"),
            Self::Chromium { tab, .. } => Frames::of(&tab.seen, "report", "presented"),
        }
    }

    /// Offers it was made, re-offers and ICE restarts included.
    fn offers(&self) -> u64 {
        match self {
            Self::Webrtcbin(WebrtcbinViewer { process, .. })
            | Self::Aiortc {
                viewer: process, ..
            } => process
                .seen
                .iter()
                .filter(|v| v["event"] == "offer")
                .count() as u64,
            Self::Chromium { tab, .. } => tab
                .seen
                .iter()
                .rev()
                .find(|v| v["event"] == "report")
                .and_then(|v| v["offers"].as_u64())
                .unwrap_or(0),
        }
    }
}

/// The scenario, with `shaped` on the link that narrows: from `settle`
/// seconds after the narrowing no frame waits longer than [`LONGEST_GAP`].
fn steps_down_without_a_stall(
    name: &str,
    settle: f64,
    shaped: impl FnOnce(&Spoke, &str) -> Receiver,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let star = Star::new();
    let _broker = NsBroker::start(&star);
    let cam = NsCamera::start(&star, &format!("cam-{name}"), &two_layer_camera(PICTURE));
    let obs_id = format!("obs-{name}");
    let mut obs = observer_at(
        &star.cam,
        star.viewers[SHAPED].cam_addr,
        &obs_id,
        &[&inbox(&obs_id)],
    );
    let (shaped_id, free_id) = (format!("{name}-shaped"), format!("{name}-free"));
    let mut shaped = shaped(&star.viewers[SHAPED], &shaped_id);
    let mut free = Receiver::webrtcbin(&star.viewers[FREE], &free_id);
    shaped.wait_playing();
    free.wait_playing();
    obs.stats_within(&cam.id, "both on the top layer", CONNECT, |s| {
        layer_of(s, &shaped_id) == Some(0) && layer_of(s, &free_id) == Some(0)
    });

    star.shape(SHAPED, "500kbit", "100ms")
        .unwrap_or_else(|e| panic!("{e}"));
    let (narrowed, narrowed_free) = (shaped.now(), free.now());
    let end = Instant::now() + SHAPED_FOR;
    let mut trace = String::new();
    while Instant::now() < end {
        let stats = obs.stats(&cam.id);
        if let Some(c) = common::connection_to(&stats, &shaped_id) {
            let at = SHAPED_FOR.saturating_sub(end - Instant::now());
            trace += &trace_line(&format!("{:5.1} s", at.as_secs_f64()), c);
        }
        shaped.lines().drain(POLL);
        free.lines().drain(Duration::ZERO);
    }
    let (widened, widened_free) = (shaped.now(), free.now());
    star.unshape(SHAPED).unwrap_or_else(|e| panic!("{e}"));
    let unshaped = Instant::now();
    let mut up = None;
    while up.is_none() && unshaped.elapsed() < UP {
        let stats = obs.stats(&cam.id);
        if layer_of(&stats, &shaped_id) == Some(0) {
            up = Some(unshaped.elapsed());
        } else if let Some(c) = common::connection_to(&stats, &shaped_id) {
            let at = unshaped.elapsed().as_secs_f64();
            trace += &trace_line(&format!("widened +{at:4.1} s"), c);
        }
        shaped.lines().drain(POLL);
    }
    free.lines().drain(Duration::ZERO);

    let (s, f) = (shaped.frames(), free.frames());
    let from = narrowed + settle;
    let gap = s.longest_gap(from, widened);
    let fps = s.fps(from, widened);
    let free_fps = f.lowest_fps(narrowed_free, widened_free, 2.0);
    let offers = (shaped.offers(), free.offers());
    eprintln!(
        "{shaped_id}: longest gap {gap:.2} s, {fps:.1} fps while shaped, back up after {up:.1?}; \
         {free_id}: lowest {free_fps:.1} fps over 2 s; onset gap {:.2} s; offers {offers:?}",
        s.longest_gap(narrowed, from + 1.0),
    );
    let stalls: Vec<String> =
        s.0.iter()
            .filter(|e| e.2 > 0.3)
            .map(|e| format!("{:.1} s after the narrowing: {:.2} s", e.0 - narrowed, e.2))
            .collect();
    eprintln!("{shaped_id}'s stalls: {stalls:?}");
    eprintln!("{shaped_id}'s link:{trace}");
    assert_eq!(offers, (1, 1), "no receiver was offered a new connection");
    assert!(
        gap <= LONGEST_GAP,
        "{shaped_id} waited {gap:.2} s for a frame while shaped; its link:{trace}"
    );
    assert!(
        fps >= SHAPED_FPS,
        "{shaped_id} at {fps:.1} fps while shaped; its link:{trace}"
    );
    assert!(
        free_fps >= FREE_FPS,
        "{free_id} fell to {free_fps:.1} fps over 2 s while the other link was shaped"
    );
    assert!(
        up.is_some(),
        "{shaped_id} not back on the top layer within {UP:?} of the link widening; its link:{trace}"
    );
}

#[test]
fn a_webrtcbin_receiver_steps_down_without_a_stall_when_its_link_narrows() {
    steps_down_without_a_stall("wbin", SETTLE, Receiver::webrtcbin);
}

/// Chromium meets the onset target since a step down holds the top layer
/// back and never resends what the switch's key frame supersedes (it
/// stalled 1.3 to 2.6 s before), and climbs back within 15 s since a late
/// answer to a consent check no longer ends a probe while TWCC shows the
/// media arriving as sent (docs/BENCHMARKS.md, "A link that narrows").
#[test]
fn a_chromium_tab_steps_down_without_a_stall_when_its_link_narrows() {
    steps_down_without_a_stall("tab", SETTLE, |spoke, id| {
        Receiver::chromium(spoke, id, "cam-tab")
    });
}

/// aiortc misses the targets: it decodes no frame from about 1.5 s to 9 s
/// after the narrowing, though the camera is on the low layer at 1.7 s and
/// the receiver reports say the low layer arrives whole from 3.4 s, and in
/// one run of four a probe's loss later stopped it for 6.1 s again
/// (docs/BENCHMARKS.md, "A link that narrows"). Not run by the suite until
/// that is mended: `cargo test --features tools --test narrowing -- --ignored`.
/// When it runs, it asserts the steady state from 10 s on, the climb back,
/// no re-offer, and the other receiver untouched.
#[test]
#[ignore = "aiortc stalls for seconds after any loss: docs/BENCHMARKS.md"]
fn an_aiortc_receiver_steps_down_without_a_stall_when_its_link_narrows() {
    steps_down_without_a_stall("aiortc", AIORTC_SETTLE, Receiver::aiortc);
}
