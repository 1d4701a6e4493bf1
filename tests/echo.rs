//! Echo: a viewer that talks must not hear itself back through the
//! camera's microphone. The camera's speaker is wired straight into its
//! microphone (`interaudiosink` into `interaudiosrc`, in the camera's
//! process), the harshest echo path there is; a webrtcbin talker
//! (tests/interop/webrtcbin_viewer.py, not our stack) sends a tone and
//! reports the level of what the camera sends back. With `off` it hears
//! its tone; with `cancel` at least 25 dB less; with `half-duplex`
//! silence. The figures go to docs/BENCHMARKS.md ("Echo").

mod common;

use std::time::{Duration, Instant};

use common::SMALL_VIDEO;
use common::netns::{Net, NsBroker, NsCamera, Routes};
use common::webrtcbin::WebrtcbinViewer;

/// What the canceller is given to find the echo before it is measured.
const CONVERGE: Duration = Duration::from_secs(4);
/// How long the returned level is measured.
const MEASURE: Duration = Duration::from_secs(4);

fn camera_toml(mode: &str, channel: &str) -> String {
    format!(
        "rooms = [\"home\"]\n{SMALL_VIDEO}[audio]\nsource = \"pipeline\"\n\
         pipeline = \"interaudiosrc channel={channel}\"\n\
         [speaker]\nsink = \"pipeline\"\npipeline = \"interaudiosink channel={channel}\"\n\
         [talk]\necho = \"{mode}\"\n"
    )
}

/// The median level (dBFS) the talker hears of the camera's sound while it
/// talks, after the canceller's time to converge.
fn echo_level(net: &Net, mode: &str) -> f64 {
    let id = format!("cam-echo-{mode}");
    let cam = NsCamera::start(net, &id, &camera_toml(mode, &id));
    let mut talker = WebrtcbinViewer::start(
        &net.viewer,
        &net.broker_url(),
        net.viewer_addr,
        "home",
        &format!("wbin-echo-{mode}"),
        &["--no-decode", "--talker", "--talk-hz", "660", "--hear"],
    );
    talker.wait_frames(10, 1, Duration::from_secs(20));
    talker.process.send("talk");
    talker.wait("the floor", Duration::from_secs(15), |v| {
        v["event"] == "talk" && v["action"] == "granted"
    });
    let measure_from = Instant::now() + CONVERGE;
    let end = measure_from + MEASURE;
    let mut levels = Vec::new();
    while Instant::now() < end {
        let heard = talker.wait("a level", Duration::from_secs(5), |v| v["event"] == "heard");
        if Instant::now() >= measure_from {
            levels.push(heard["rms_db"].as_f64().expect("rms_db is a number"));
        }
    }
    assert!(levels.len() >= 4, "{mode}: {levels:?}");
    levels.sort_by(f64::total_cmp);
    let median = levels[levels.len() / 2];
    eprintln!("echo {mode}: median {median:.1} dBFS of {levels:?}");
    drop(talker);
    drop(cam);
    median
}

#[test]
fn a_talker_hears_its_echo_cancelled_by_25_db_and_not_at_all_in_half_duplex() {
    let net = Net::new(Routes::ConnectedOnly);
    let _broker = NsBroker::start(&net);
    let off = echo_level(&net, "off");
    assert!(
        off > -30.0,
        "without cancelling, the tone comes back: {off:.1} dBFS"
    );
    let cancel = echo_level(&net, "cancel");
    assert!(
        off - cancel >= 25.0,
        "cancelled by {:.1} dB ({off:.1} → {cancel:.1} dBFS)",
        off - cancel
    );
    let half = echo_level(&net, "half-duplex");
    assert!(half < -80.0, "half duplex: {half:.1} dBFS");
}
