//! Per-viewer adaptation on links of different capacity: one camera, two
//! `meshcam view --decode` viewers, each on a link of its own (network
//! namespaces, tests/common/netns.rs), one of them shaped to 500 kbit/s
//! from the start. The camera encodes a top layer the shaped link cannot
//! carry (1280x720 at 2 Mbit/s) and a low one it can (640x360 at
//! 300 kbit/s); the content is noise, so x264 really spends the bitrates.
//!
//! The shaped viewer must end on the low layer soon after its first frame
//! and then play smoothly there, the other viewer stays on the top layer,
//! and once the shaping is gone the shaped viewer climbs back. Once with a
//! viewer that sends TWCC feedback, once with one that sends only receiver
//! reports (`--no-twcc`), where the camera estimates from loss.
//!
//! A third test puts the shaped viewer behind a link narrower than every
//! layer (300 kbit/s) and checks that nobody else pays for it: the encoder,
//! the other viewer and the camera's memory.
//!
//! The layer and estimator come from the camera's telemetry (the `stats`
//! command); frame rate, frozen time and the decoded size from the
//! viewers' report lines. Every wait polls until its condition or its
//! deadline; the only timing thresholds are the outcome deadlines below.
//! The figures measured are printed (`-- --nocapture`). Needs root for the
//! namespaces and the shaping (the tests fail saying so otherwise).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::netns::{LineProcess, NsBroker, NsCamera, Star, observer_at};
use common::{inbox, two_layer_camera};
use serde_json::Value;

const ROOM: &str = "home";
/// The viewer of `Star::viewers` whose link is shaped.
const SHAPED: usize = 0;
const FREE: usize = 1;
const SHAPED_RATE: &str = "500kbit";

/// The shaped viewer is on the low layer within this of its first frame.
const DOWN: Duration = Duration::from_secs(5);
/// Then plays for this long at no less than [`SHAPED_FPS`], frozen less
/// than [`FROZEN_PERCENT`] of it.
const WINDOW: Duration = Duration::from_secs(10);
const SHAPED_FPS: f64 = 20.0;
const FROZEN_PERCENT: f64 = 1.0;
/// What the unshaped viewer keeps meanwhile.
const FREE_FPS: f64 = 25.0;
/// Back on the top layer within this of the shaping being removed (the
/// target is about 15 s).
const UP: Duration = Duration::from_secs(20);
/// Joining and connecting: a bound that only turns a hang into a failure.
const CONNECT: Duration = Duration::from_secs(30);
/// How often telemetry is asked for during the window.
const POLL: Duration = Duration::from_millis(250);

/// Noise: x264 really spends the bitrates.
const PICTURE: &str = "pattern=snow";

/// One camera encoding two layers takes most of a core: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The connection to `peer` in telemetry; panics with the telemetry when
/// there is none.
fn connection<'a>(stats: &'a Value, peer: &str) -> &'a Value {
    common::connection_to(stats, peer)
        .unwrap_or_else(|| panic!("no connection to {peer} in the telemetry: {stats}"))
}

fn layer_of(stats: &Value, peer: &str) -> Option<u64> {
    common::connection_to(stats, peer).and_then(|c| c["layer"].as_u64())
}

/// The viewer's next report line, not one printed before now, and when it
/// was read.
fn fresh_report(viewer: &mut LineProcess) -> (Value, Instant) {
    viewer.drain(Duration::ZERO);
    let line = viewer.wait_for("report", Duration::from_secs(5), |v| v["event"] == "report");
    (line, Instant::now())
}

fn number(line: &Value, key: &str) -> f64 {
    line[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// What a viewer did between two of its report lines.
struct Window {
    seconds: f64,
    fps: f64,
    /// The lowest `fps` of the report lines in between.
    min_fps: f64,
    decoded_fps: f64,
    frozen_percent: f64,
    freezes: f64,
    height: f64,
}

impl Window {
    fn between(viewer: &LineProcess, first: &(Value, Instant), last: &(Value, Instant)) -> Self {
        let ((a, at), (b, bt)) = (first, last);
        let seconds = bt.duration_since(*at).as_secs_f64();
        let delta = |key| number(b, key) - number(a, key);
        let min_fps = viewer
            .seen
            .iter()
            .rev()
            .take_while(|v| *v != a)
            .filter(|v| v["event"] == "report")
            .map(|v| number(v, "fps"))
            .fold(f64::INFINITY, f64::min);
        Self {
            seconds,
            fps: delta("frames") / seconds,
            min_fps,
            decoded_fps: delta("decoded") / seconds,
            frozen_percent: delta("frozen_ms") / 10.0 / seconds,
            freezes: delta("freezes"),
            height: number(b, "height"),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:.1} s: {:.1} fps (lowest report {:.1}), {:.1} decoded/s, {:.2} % frozen \
             ({} freezes), decoded height {}",
            self.seconds,
            self.fps,
            self.min_fps,
            self.decoded_fps,
            self.frozen_percent,
            self.freezes,
            self.height
        )
    }
}

/// The scenario; `shaped_args` are the shaped viewer's extra arguments and
/// `estimators` what the camera may estimate its link with.
fn adapts(name: &str, shaped_args: &[&str], estimators: &[&str]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let star = Star::new();
    star.shape(SHAPED, SHAPED_RATE, "200ms")
        .unwrap_or_else(|e| panic!("{e}"));
    let _broker = NsBroker::start(&star);
    let cam = NsCamera::start(&star, &format!("cam-{name}"), &two_layer_camera(PICTURE));
    let obs_id = format!("obs-{name}");
    let mut obs = observer_at(
        &star.cam,
        star.viewers[SHAPED].cam_addr,
        &obs_id,
        &[&inbox(&obs_id)],
    );
    let dir = common::temp_dir(&format!("viewers-{name}"));
    let common_args = ["--decode", "--report-interval", "1"];
    let shaped_id = format!("shaped-{name}");
    let free_id = format!("free-{name}");
    let mut shaped = star.viewers[SHAPED].view(
        ROOM,
        &shaped_id,
        &[&common_args[..], shaped_args].concat(),
        &dir,
    );
    let mut free = star.viewers[FREE].view(ROOM, &free_id, &common_args, &dir);

    // Down: on the low layer within DOWN of the first frame.
    shaped.wait_for("first frame", CONNECT, |v| v["event"] == "first_frame");
    let first_frame = Instant::now();
    let stats = obs.stats_within(
        &cam.id,
        &format!("{shaped_id} on layer 1 within {DOWN:?} of its first frame"),
        DOWN.saturating_sub(first_frame.elapsed()),
        |s| layer_of(s, &shaped_id) == Some(1),
    );
    let down = first_frame.elapsed();
    let link = connection(&stats, &shaped_id);
    let estimator = link["estimator"].as_str().unwrap_or_default().to_owned();
    assert!(
        estimators.contains(&estimator.as_str()),
        "{shaped_id}'s link estimated by {estimator:?}, not one of {estimators:?}: {link}"
    );
    assert_eq!(
        (link["layer_width"].as_u64(), link["layer_height"].as_u64()),
        (Some(640), Some(360)),
        "layer 1 is the 640x360 one: {link}"
    );
    free.wait_for("first frame", CONNECT, |v| v["event"] == "first_frame");
    obs.stats_within(&cam.id, &format!("{free_id} on layer 0"), CONNECT, |s| {
        layer_of(s, &free_id) == Some(0)
    });

    // The window starts once what the top layer left queued in the
    // bottleneck has drained (a receiver report without loss): it is about
    // playing on the low layer, the switch is the deadline's above.
    obs.stats_within(
        &cam.id,
        &format!("{shaped_id}'s link without loss"),
        CONNECT,
        |s| common::connection_to(s, &shaped_id).is_some_and(|c| c["loss"] == 0.0),
    );
    // The window: the shaped viewer plays on the low layer, the other one
    // on the top layer all along.
    let shaped_start = fresh_report(&mut shaped);
    let free_start = fresh_report(&mut free);
    let end = shaped_start.1 + WINDOW;
    let mut last = stats;
    // The shaped link as telemetry saw it, for the failure messages.
    let mut trace = String::new();
    while Instant::now() < end {
        last = obs.stats(&cam.id);
        if let Some(c) = common::connection_to(&last, &shaped_id) {
            trace += &format!(
                "\n  {:5.2} s layer {} estimate {} kbit/s loss {} nack {} padding {} kbit/s",
                shaped_start.1.elapsed().as_secs_f64(),
                c["layer"],
                c["estimate_kbps"],
                c["loss"],
                c["nack_ratio"],
                c["padding_kbps"]
            );
        }
        assert_eq!(
            layer_of(&last, &free_id),
            Some(0),
            "{free_id} left the top layer: {last}"
        );
        std::thread::sleep(POLL);
    }
    let shaped_end = fresh_report(&mut shaped);
    let free_end = fresh_report(&mut free);
    let shaped_window = Window::between(&shaped, &shaped_start, &shaped_end);
    let free_window = Window::between(&free, &free_start, &free_end);
    let link = connection(&last, &shaped_id).clone();
    eprintln!(
        "{name}: {shaped_id} on layer 1 {:.2} s after its first frame (estimator {estimator}); \
         then {}; link {link}",
        down.as_secs_f64(),
        shaped_window.describe()
    );
    eprintln!("{name}: {free_id} meanwhile {}", free_window.describe());
    assert_eq!(link["layer"], 1, "{shaped_id} ends on layer 1: {link}");
    assert!(
        shaped_window.fps >= SHAPED_FPS,
        "{shaped_id} below {SHAPED_FPS} fps: {}; its link:{trace}",
        shaped_window.describe()
    );
    assert!(
        shaped_window.frozen_percent < FROZEN_PERCENT,
        "{shaped_id} frozen {FROZEN_PERCENT} % or more: {}; its link:{trace}",
        shaped_window.describe()
    );
    assert_eq!(
        shaped_window.height, 360.0,
        "{shaped_id} decodes the low layer"
    );
    assert!(
        free_window.fps >= FREE_FPS,
        "{free_id} below {FREE_FPS} fps: {}",
        free_window.describe()
    );
    assert_eq!(free_window.height, 720.0, "{free_id} decodes the top layer");

    // Up: back on the top layer within UP of the shaping's removal.
    star.unshape(SHAPED).unwrap_or_else(|e| panic!("{e}"));
    let unshaped = Instant::now();
    let stats = obs.stats_within(
        &cam.id,
        &format!("{shaped_id} back on layer 0 within {UP:?} of the shaping's removal"),
        UP,
        |s| layer_of(s, &shaped_id) == Some(0),
    );
    let up = unshaped.elapsed();
    eprintln!(
        "{name}: {shaped_id} back on layer 0 {:.2} s after the shaping was removed; link {}",
        up.as_secs_f64(),
        connection(&stats, &shaped_id)
    );
    shaped.wait_for("a 720-line picture decoded", CONNECT, |v| {
        v["event"] == "report" && v["height"] == 720
    });
}

#[test]
fn a_viewer_on_a_narrow_link_gets_the_low_layer_and_climbs_back_with_twcc() {
    adapts("twcc", &[], &["twcc"]);
}

#[test]
fn a_viewer_that_sends_only_receiver_reports_adapts_on_loss() {
    adapts("rr", &["--no-twcc"], &["loss", "remb"]);
}

/// Memory the camera may gain while serving a viewer it cannot serve well:
/// every viewer's queue is bounded (what it cannot send is dropped and
/// counted in `frames_dropped`), so this is room for allocator noise only.
const RSS_GROWTH: u64 = 16 * 1024 * 1024;

/// A viewer behind a link narrower than the lowest layer (300 kbit/s for
/// a 300 kbit/s layer plus its packet overhead) gets what the link lets
/// through and stays connected; the encoder keeps its frame rate, the other
/// viewer keeps the top layer at full rate, and the camera's memory stays
/// where it was.
#[test]
fn a_viewer_behind_a_link_narrower_than_every_layer_slows_nobody() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let star = Star::new();
    star.shape(SHAPED, "300kbit", "200ms")
        .unwrap_or_else(|e| panic!("{e}"));
    let _broker = NsBroker::start(&star);
    let cam = NsCamera::start(&star, "cam-narrow", &two_layer_camera(PICTURE));
    let obs_id = "obs-narrow";
    let mut obs = observer_at(
        &star.cam,
        star.viewers[SHAPED].cam_addr,
        obs_id,
        &[&inbox(obs_id)],
    );
    let dir = common::temp_dir("viewers-narrow");
    let args = ["--decode", "--report-interval", "1"];
    let (shaped_id, free_id) = ("shaped-narrow", "free-narrow");
    let _shaped = star.viewers[SHAPED].view(ROOM, shaped_id, &args, &dir);
    let mut free = star.viewers[FREE].view(ROOM, free_id, &args, &dir);
    free.wait_for("first frame", CONNECT, |v| v["event"] == "first_frame");
    let before = obs.stats_within(
        &cam.id,
        &format!("{shaped_id} on layer 1 and {free_id} on layer 0"),
        CONNECT,
        |s| layer_of(s, shaped_id) == Some(1) && layer_of(s, free_id) == Some(0),
    );

    let free_start = fresh_report(&mut free);
    let end = free_start.1 + WINDOW;
    let mut last = before.clone();
    while Instant::now() < end {
        last = obs.stats(&cam.id);
        assert_eq!(
            layer_of(&last, free_id),
            Some(0),
            "{free_id} left the top layer: {last}"
        );
        std::thread::sleep(POLL);
    }
    let free_end = fresh_report(&mut free);
    let window = Window::between(&free, &free_start, &free_end);
    let shaped = connection(&last, shaped_id);
    eprintln!(
        "narrow: {free_id} {}; {shaped_id}'s link {shaped}; camera {} → {} bytes RSS, pipeline {}",
        window.describe(),
        before["rss_bytes"],
        last["rss_bytes"],
        last["pipeline"]
    );
    assert_eq!(
        shaped["state"], "connected",
        "{shaped_id} dropped: {shaped}"
    );
    assert!(
        window.fps >= FREE_FPS && window.frozen_percent < FROZEN_PERCENT,
        "{free_id} suffered: {}",
        window.describe()
    );
    assert_eq!(window.height, 720.0, "{free_id} decodes the top layer");
    let pipeline_fps = last["pipeline"]["fps"].as_f64().unwrap_or_default();
    assert!(
        pipeline_fps >= FREE_FPS,
        "the encoder slowed to {pipeline_fps} fps: {}",
        last["pipeline"]
    );
    let rss = |s: &Value| s["rss_bytes"].as_u64().expect("rss_bytes in telemetry");
    assert!(
        rss(&last) < rss(&before) + RSS_GROWTH,
        "the camera grew from {} to {} bytes",
        rss(&before),
        rss(&last)
    );
}
