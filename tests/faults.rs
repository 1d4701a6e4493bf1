//! Camera faults produced for real: a source that errors after N buffers,
//! one that ends, a V4L2 device that does not exist, and a device that
//! disappears and comes back (a `shmsink` producer process, killed and
//! restarted). The pipeline is rebuilt with backoff, counted, and viewers
//! keep their connections.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const RAW_320: &str = "video/x-raw,format=I420,width=320,height=240,framerate=15/1";

fn source_toml(pipeline: &str) -> String {
    format!(
        "rooms = [\"home\"]\n[video]\nsource = \"pipeline\"\n\
         pipeline = \"{pipeline}\"\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 500\n\
         keyframe_interval_s = 60\n"
    )
}

/// The one connection's packet count in a stats message.
fn packets_sent(stats: &Value) -> u64 {
    stats["connections"][0]["packets_sent"]
        .as_u64()
        .unwrap_or(0)
}

/// Watches a viewer through a pipeline restart: the same connection carries
/// on (its packet count keeps growing) and a new key frame arrives.
fn survives_restarts(broker: &Mosquitto, cam: &str, obs: &mut Observer) {
    let mut viewer = Viewer::start(broker, "home", &["--id", "steady"]);
    let first = viewer.wait_frames(Some("steady"), 10);
    let keyframes = first["keyframes"].as_u64().unwrap();
    let before = obs.wait_json(&stats_topic(cam), "stats with the viewer", |v| {
        v["connections"][0]["state"] == "connected"
    });
    let restarted = obs.wait_json(&stats_topic(cam), "a pipeline restart", |v| {
        v["pipeline"]["restarts"].as_u64() > before["pipeline"]["restarts"].as_u64()
            && v["pipeline"]["state"] == "playing"
    });
    assert_eq!(
        restarted["connections"].as_array().unwrap().len(),
        1,
        "{restarted}"
    );
    assert!(
        packets_sent(&restarted) > packets_sent(&before),
        "the connection was kept: {before} → {restarted}"
    );
    viewer.wait_for("a key frame after the restart", |v| {
        v["event"] == "report"
            && v["viewer"] == "steady"
            && v["keyframes"].as_u64() > Some(keyframes)
    });
    let frames = viewer.frames_of("steady");
    viewer.wait_frames(Some("steady"), frames + 15);
}

/// A camera on `pipeline`, which fails on its own; the failure is in the
/// status, with one of `texts` (GStreamer's), and survived.
fn source_fault(id: &str, pipeline: &str, texts: &[&str]) {
    let broker = broker();
    let cam = Camera::start(&broker, id, &source_toml(pipeline));
    let mut obs = Observer::connect(
        &broker,
        &format!("obs-{id}"),
        &[&stats_topic(&cam.id), &status_topic(&cam.id)],
    );
    survives_restarts(&broker, &cam.id, &mut obs);
    let status = obs.seen_or_wait_json(&status_topic(&cam.id), "the failure in the status", |v| {
        v["error"].is_string()
    });
    let error = status["error"].as_str().unwrap();
    assert!(texts.iter().any(|t| error.contains(t)), "{status}");
}

#[test]
fn a_source_that_errors_is_rebuilt_and_viewers_stay() {
    source_fault(
        "cam-err",
        &format!("videotestsrc is-live=true ! {RAW_320} ! identity error-after=45"),
        // The element's error, the first of those the dying pipeline posts.
        &["Failed after iterations"],
    );
}

#[test]
fn a_source_that_ends_is_rebuilt_and_viewers_stay() {
    source_fault(
        "cam-eos",
        &format!("videotestsrc is-live=true num-buffers=45 ! {RAW_320}"),
        &["end of stream"],
    );
}

#[test]
fn a_missing_v4l2_device_is_an_error_in_status_and_retried() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-nodev",
        "[video]\nsource = \"v4l2\"\ndevice = \"/dev/video-meshcam-absent\"\n",
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-nodev",
        &[&status_topic(&cam.id), &stats_topic(&cam.id)],
    );
    let status = obs.seen_or_wait_json(&status_topic(&cam.id), "error status", |v| {
        v["state"] == "error"
    });
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/dev/video-meshcam-absent"),
        "GStreamer's error text: {status}"
    );
    // The daemon keeps running, answering, and retrying with backoff.
    obs.wait_json(&stats_topic(&cam.id), "two restarts", |v| {
        v["pipeline"]["restarts"].as_u64() >= Some(2) && v["pipeline"]["state"] == "error"
    });
}

/// A video device as a separate process: `shmsink` on a socket. Unplugged
/// (killed) when dropped.
struct Device(Child);

impl Device {
    fn unplug(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.unplug();
    }
}

fn start_device(socket: &Path) -> Device {
    let _ = std::fs::remove_file(socket);
    let child = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "is-live=true",
            "!",
            RAW_320,
            "!",
            "shmsink",
        ])
        .arg(format!("socket-path={}", socket.display()))
        .args(["wait-for-connection=false", "shm-size=4000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) runs");
    let end = std::time::Instant::now() + DEADLINE;
    while !socket.exists() {
        assert!(std::time::Instant::now() < end, "the device never appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Device(child)
}

#[test]
fn a_device_that_disappears_shows_an_error_then_recovers() {
    let broker = broker();
    let dir = temp_dir("shm-device");
    let socket = dir.join("camera.sock");
    let mut device = start_device(&socket);
    let cam = Camera::start(
        &broker,
        "cam-unplug",
        &source_toml(&format!(
            "shmsrc socket-path={} is-live=true do-timestamp=true ! {RAW_320}",
            socket.display()
        )),
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-unplug",
        &[&status_topic(&cam.id), &stats_topic(&cam.id)],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "patient"]);
    viewer.wait_frames(Some("patient"), 10);
    let before = obs.wait_json(&stats_topic(&cam.id), "stats with the viewer", |v| {
        v["connections"][0]["state"] == "connected"
    });

    // Unplugged.
    device.unplug();
    obs.wait_json(&status_topic(&cam.id), "the error in status", |v| {
        v["state"] == "error" && v["error"].as_str().is_some_and(|e| !e.is_empty())
    });

    // Plugged in again: video resumes on the same connection.
    let _device = start_device(&socket);
    obs.wait_json(&status_topic(&cam.id), "online again", |v| {
        v["state"] == "online"
    });
    let after = obs.wait_json(&stats_topic(&cam.id), "playing again", |v| {
        v["pipeline"]["state"] == "playing" && packets_sent(v) > packets_sent(&before)
    });
    assert!(after["pipeline"]["restarts"].as_u64() >= Some(1), "{after}");
    let frames = viewer.frames_of("patient");
    viewer.wait_frames(Some("patient"), frames + 15);
}
