//! A link that narrows under a viewer we did not write, mid-stream, and
//! widens again: GStreamer's webrtcbin at its default settings (receiver
//! reports every 5 s on average, NACKs, no REMB), counting the access
//! units its depayloader puts out. One camera (moving SMPTE bars,
//! 1280x720 at 2 Mbit/s and 640x360 at 300 kbit/s), two such receivers,
//! each on a link of its own (tests/common/netns.rs); once both play the
//! top layer, one link is shaped to 500 kbit/s (`tbf`, 16 kB burst, 100 ms
//! of queue) for [`SHAPED_FOR`], then freed.
//!
//! From [`SETTLE`] after the link narrowed until it widens, the shaped
//! receiver's picture never waits more than [`LONGEST_GAP`] for a frame
//! and averages [`SHAPED_FPS`]; the other receiver never notices (at least
//! [`FREE_FPS`] in every 2 s); the shaped one is back on the top layer
//! within [`UP`] of the link widening. Needs root for the namespaces and
//! the shaping (the tests fail saying so otherwise).

mod common;

use std::time::{Duration, Instant};

use common::inbox;
use common::netns::{NsBroker, NsCamera, Star, observer_at};
use common::webrtcbin::WebrtcbinViewer;
use serde_json::Value;

const ROOM: &str = "home";
const SHAPED: usize = 0;
const FREE: usize = 1;

const SHAPED_FOR: Duration = Duration::from_secs(40);
const SETTLE: f64 = 2.0;
const LONGEST_GAP: f64 = 0.5;
const SHAPED_FPS: f64 = 25.0;
const FREE_FPS: f64 = 28.0;
const UP: Duration = Duration::from_secs(15);
/// Joining, connecting, the first frames: a bound that only turns a hang
/// into a failure.
const CONNECT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

const CAMERA: &str = r#"rooms = ["home"]
[video]
source = "pipeline"
pipeline = "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! video/x-raw,width=1280,height=720,framerate=30/1"
width = 1280
height = 720
fps = 30
bitrate_kbps = 2000
encoder = "x264enc"
[[video.layers]]
width = 640
height = 360
bitrate_kbps = 300
"#;

/// The frame events of one receiver: (seconds on its clock, frames so far,
/// longest gap in the frames before, in seconds).
struct Frames(Vec<(f64, f64, f64)>);

impl Frames {
    fn of(viewer: &WebrtcbinViewer) -> Self {
        Self(
            viewer
                .process
                .seen
                .iter()
                .filter(|v| v["event"] == "frame")
                .map(|v| {
                    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
                    (n("t"), n("count"), n("gap_ms") / 1000.0)
                })
                .collect(),
        )
    }

    /// The events whose frames all came within `from..=to`.
    fn within(&self, from: f64, to: f64) -> Vec<(f64, f64, f64)> {
        self.0
            .windows(2)
            .filter(|w| w[0].0 >= from && w[1].0 <= to)
            .map(|w| w[1])
            .collect()
    }

    fn longest_gap(&self, from: f64, to: f64) -> f64 {
        self.within(from, to)
            .iter()
            .map(|e| e.2)
            .fold(0.0, f64::max)
    }

    fn fps(&self, from: f64, to: f64) -> f64 {
        let events: Vec<_> = self.0.iter().filter(|e| e.0 >= from && e.0 <= to).collect();
        match (events.first(), events.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0),
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

fn layer_of(stats: &Value, peer: &str) -> Option<u64> {
    common::connection_to(stats, peer).and_then(|c| c["layer"].as_u64())
}

/// The receiver's clock now.
fn mark(viewer: &mut WebrtcbinViewer) -> f64 {
    viewer.process.send("mark");
    let line = viewer.wait("mark", Duration::from_secs(5), |v| v["event"] == "mark");
    line["t"].as_f64().expect("t in a mark")
}

#[test]
fn a_webrtcbin_receiver_steps_down_without_a_stall_when_its_link_narrows() {
    let star = Star::new();
    let _broker = NsBroker::start(&star);
    let cam = NsCamera::start(&star, "cam-narrowing", CAMERA);
    let obs_id = "obs-narrowing";
    let mut obs = observer_at(
        &star.cam,
        star.viewers[SHAPED].cam_addr,
        obs_id,
        &[&inbox(obs_id)],
    );
    let start = |i: usize, id: &str| {
        let spoke = &star.viewers[i];
        WebrtcbinViewer::start(
            &spoke.ns,
            &spoke.broker_url(),
            spoke.addr,
            ROOM,
            id,
            &["--no-decode"],
        )
    };
    let (shaped_id, free_id) = ("wbin-shaped", "wbin-free");
    let mut shaped = start(SHAPED, shaped_id);
    let mut free = start(FREE, free_id);
    shaped.wait_frames(90, 1, CONNECT);
    free.wait_frames(90, 1, CONNECT);
    obs.stats_within(&cam.id, "both on the top layer", CONNECT, |s| {
        layer_of(s, shaped_id) == Some(0) && layer_of(s, free_id) == Some(0)
    });

    star.shape(SHAPED, "500kbit", "100ms")
        .unwrap_or_else(|e| panic!("{e}"));
    let (narrowed, narrowed_free) = (mark(&mut shaped), mark(&mut free));
    let end = Instant::now() + SHAPED_FOR;
    let mut trace = String::new();
    while Instant::now() < end {
        let stats = obs.stats(&cam.id);
        if let Some(c) = common::connection_to(&stats, shaped_id) {
            trace += &format!(
                "\n  {:5.1} s layer {} estimate {} kbit/s ({}) loss {} nack {} padding {} kbit/s",
                SHAPED_FOR
                    .saturating_sub(end - Instant::now())
                    .as_secs_f64(),
                c["layer"],
                c["estimate_kbps"],
                c["estimator"],
                c["loss"],
                c["nack_ratio"],
                c["padding_kbps"]
            );
        }
        shaped.process.drain(POLL);
        free.process.drain(Duration::ZERO);
    }
    let (widened, widened_free) = (mark(&mut shaped), mark(&mut free));
    star.unshape(SHAPED).unwrap_or_else(|e| panic!("{e}"));
    let unshaped = Instant::now();
    let mut up = None;
    while up.is_none() && unshaped.elapsed() < UP {
        let stats = obs.stats(&cam.id);
        if layer_of(&stats, shaped_id) == Some(0) {
            up = Some(unshaped.elapsed());
        } else if let Some(c) = common::connection_to(&stats, shaped_id) {
            trace += &format!(
                "\n  widened +{:4.1} s layer {} estimate {} kbit/s padding {} kbit/s",
                unshaped.elapsed().as_secs_f64(),
                c["layer"],
                c["estimate_kbps"],
                c["padding_kbps"]
            );
        }
        shaped.process.drain(POLL);
    }
    free.process.drain(Duration::ZERO);

    let (s, f) = (Frames::of(&shaped), Frames::of(&free));
    let from = narrowed + SETTLE;
    let gap = s.longest_gap(from, widened);
    let fps = s.fps(from, widened);
    let free_fps = f.lowest_fps(narrowed_free, widened_free, 2.0);
    eprintln!(
        "{shaped_id}: longest gap {gap:.2} s, {fps:.1} fps while shaped, back up after {up:.1?}; \
         {free_id}: lowest {free_fps:.1} fps over 2 s; onset gap {:.2} s; offers {} and {}",
        s.longest_gap(narrowed, from + 1.0),
        shaped.offers(),
        free.offers()
    );
    eprintln!("{shaped_id}'s link:{trace}");
    assert_eq!(
        (shaped.offers(), free.offers()),
        (1, 1),
        "no receiver was offered a new connection"
    );
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
