//! Real parts for the integration tests: a Mosquitto broker on a free port,
//! the `meshcam` binary as camera and as viewers, and an MQTT observer.
//! Every wait has a deadline and fails with what was seen instead.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshcam::tools::testbed::{CameraProcess, ViewerProcess};
use serde_json::Value;
pub mod nat;
pub mod netns;
pub mod sfu;
pub mod webrtcbin;

pub const BIN: &str = env!("CARGO_BIN_EXE_meshcam");

/// Generous bounds for events that normally take a second or two; they only
/// turn a hang into a failure with a message.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub use meshcam::tools::testbed::{Mosquitto, TempDir};

/// A fresh directory, removed when dropped unless by a panic.
pub fn temp_dir(name: &str) -> TempDir {
    TempDir::new(name).expect("temp dir")
}

fn rand_suffix() -> String {
    meshcam::protocol::ids::new_session()[..8].to_string()
}

/// Sends a signal to a child process.
pub fn kill(child: &Child, signal: i32) {
    meshcam::tools::testbed::signal(child, signal);
}

/// Waits for a child to exit, up to `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Starts a broker for one test.
pub fn broker() -> Mosquitto {
    Mosquitto::start("").expect("mosquitto starts (apt-get install mosquitto)")
}

/// The camera daemon, on the test picture, bound to loopback.
pub struct Camera {
    process: CameraProcess,
    pub id: String,
    pub dir: PathBuf,
    /// `dir` when the camera made it; a directory a restart will reuse
    /// belongs to the test.
    _own_dir: Option<TempDir>,
}

/// A small, cheap picture so several cameras and viewers fit on two cores.
/// A camera in room `home` that encodes `pattern` of videotestsrc at 720p30
/// in two layers with x264: 1280x720 at 2 Mbit/s, above what a 500 kbit/s
/// link carries, and 640x360 at 300 kbit/s, well within it with RTP, SRTP
/// and UDP on top.
pub fn two_layer_camera(pattern: &str) -> String {
    format!(
        r#"rooms = ["home"]
[video]
source = "pipeline"
pipeline = "videotestsrc is-live=true {pattern} ! video/x-raw,width=1280,height=720,framerate=30/1"
width = 1280
height = 720
fps = 30
bitrate_kbps = 2000
encoder = "x264enc"
[[video.layers]]
width = 640
height = 360
bitrate_kbps = 300
"#
    )
}

pub const SMALL_VIDEO: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 500\n";

impl Camera {
    pub fn start(broker: &Mosquitto, id: &str, toml: &str) -> Self {
        let dir = temp_dir(id);
        let mut camera = Self::start_in(broker, id, toml, dir.to_path_buf());
        camera._own_dir = Some(dir);
        camera
    }

    /// Starts a camera on an existing state directory (for restarts).
    pub fn start_in(broker: &Mosquitto, id: &str, toml: &str, dir: PathBuf) -> Self {
        Self::start_with(Path::new(BIN), broker, id, toml, dir, &[])
    }

    /// Starts a camera through `bin` (the binary or a wrapper script) with
    /// extra environment variables.
    pub fn start_with(
        bin: &Path,
        broker: &Mosquitto,
        id: &str,
        toml: &str,
        dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        let toml = format!("stats_interval_s = 1\n{toml}");
        let process = CameraProcess::spawn(bin, &broker.url(), id, &toml, &dir, env)
            .expect("the meshcam binary runs");
        Self {
            process,
            id: id.to_owned(),
            dir,
            _own_dir: None,
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until one line of the camera's log contains every needle. Only
    /// for messages that are themselves the product's output to a person
    /// (a warning naming a configuration key); state is asserted on the
    /// status, telemetry and replies instead.
    pub fn wait_log(&self, needles: &[&str]) {
        let end = Instant::now() + DEADLINE;
        while !self
            .log()
            .lines()
            .any(|line| needles.iter().all(|n| line.contains(n)))
        {
            assert!(
                Instant::now() < end,
                "camera log never showed {needles:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The camera's exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process
            .child
            .try_wait()
            .expect("the camera process is ours")
    }

    /// Sends a signal to the camera process.
    pub fn signal(&self, signal: i32) {
        kill(&self.process.child, signal);
    }

    /// The configuration file the camera was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("meshcam.toml")
    }

    /// SIGTERM, then the exit status within `deadline`.
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        kill(&self.process.child, libc::SIGTERM);
        wait_exit(&mut self.process.child, deadline)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("camera {} log:\n{}", self.id, self.log());
        }
    }
}

/// `meshcam view` as a separate process; its JSON lines are collected.
pub struct Viewer {
    process: ViewerProcess,
    pub seen: Vec<Value>,
}

impl Viewer {
    pub fn start(broker: &Mosquitto, room: &str, args: &[&str]) -> Self {
        let mut all = vec!["--report-interval", "0.25"];
        all.extend_from_slice(args);
        let process = ViewerProcess::spawn(Path::new(BIN), &broker.url(), room, &all)
            .expect("the meshcam binary runs");
        Self {
            process,
            seen: Vec::new(),
        }
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.process.child
    }

    /// Waits for a line matching `pred`; panics with the last lines seen.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.process.next_line(left) {
                Some(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                None => panic!(
                    "viewer: no {what} within {DEADLINE:?}; last lines: {:?}",
                    self.seen.iter().rev().take(3).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits until report lines of `viewer` (any when `None`) show `frames`.
    pub fn wait_frames(&mut self, viewer: Option<&str>, frames: u64) -> Value {
        self.wait_for(&format!("{frames} frames"), |v| {
            v["event"] == "report"
                && viewer.is_none_or(|id| v["viewer"] == id)
                && v["frames"].as_u64().unwrap_or(0) >= frames
        })
    }

    /// The latest frame count reported for `viewer`.
    pub fn frames_of(&self, viewer: &str) -> u64 {
        self.seen
            .iter()
            .rev()
            .find(|v| v["event"] == "report" && v["viewer"] == viewer)
            .and_then(|v| v["frames"].as_u64())
            .unwrap_or(0)
    }
}

/// An MQTT client that records every message on the topics it watches.
pub struct Observer {
    client: rumqttc::Client,
    messages: mpsc::Receiver<(String, Vec<u8>)>,
    pub id: String,
    pub seen: Vec<(String, Vec<u8>)>,
}

impl Observer {
    pub fn connect(broker: &Mosquitto, id: &str, filters: &[&str]) -> Self {
        Self::connect_with(
            rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port),
            filters,
        )
    }

    /// Connects with `options` (TLS, a login); its client id is the id.
    pub fn connect_with(options: rumqttc::MqttOptions, filters: &[&str]) -> Self {
        let id = options.client_id();
        let (tx, messages) = mpsc::channel();
        let client = meshcam::tools::testbed::subscribe(options, filters, move |p| {
            tx.send((p.topic, p.payload.to_vec())).is_ok()
        })
        .expect("subscribes");
        Self {
            client,
            messages,
            id,
            seen: Vec::new(),
        }
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.into())
            .unwrap();
    }

    /// Waits for a message whose topic and payload match.
    pub fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&str, &[u8]) -> bool,
    ) -> (String, Vec<u8>) {
        match self.try_wait_for(DEADLINE, pred) {
            Some(message) => message,
            None => panic!(
                "observer: no {what} within {DEADLINE:?}; seen, newest first: {:?}",
                self.seen
                    .iter()
                    .rev()
                    .map(|(t, p)| (t.clone(), String::from_utf8_lossy(p).into_owned()))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// The first message within `deadline` whose topic and payload match,
    /// or `None`.
    pub fn try_wait_for(
        &mut self,
        deadline: Duration,
        pred: impl Fn(&str, &[u8]) -> bool,
    ) -> Option<(String, Vec<u8>)> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let (topic, payload) = self.messages.recv_timeout(left).ok()?;
            self.seen.push((topic.clone(), payload.clone()));
            if pred(&topic, &payload) {
                return Some((topic, payload));
            }
        }
    }

    /// How many of the messages seen so far match.
    pub fn count_seen(&self, pred: impl Fn(&str, &[u8]) -> bool) -> usize {
        self.seen.iter().filter(|(t, p)| pred(t, p)).count()
    }

    /// Like [`Observer::wait_for`], but a message already seen counts too.
    pub fn seen_or_wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&str, &[u8]) -> bool,
    ) -> (String, Vec<u8>) {
        let seen = self.seen.iter().find(|(t, p)| pred(t, p)).cloned();
        seen.unwrap_or_else(|| self.wait_for(what, pred))
    }

    /// Like [`Observer::wait_json`], but a message already seen counts too.
    pub fn seen_or_wait_json(
        &mut self,
        topic: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let seen = self.seen.iter().find_map(|(t, p)| {
            serde_json::from_slice::<Value>(p)
                .ok()
                .filter(|v| t == topic && pred(v))
        });
        seen.unwrap_or_else(|| self.wait_json(topic, what, pred))
    }

    /// Waits for a JSON message on exactly `topic` satisfying `pred`.
    pub fn wait_json(&mut self, topic: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let (_, payload) = self.wait_for(what, |t, p| {
            t == topic && serde_json::from_slice::<Value>(p).is_ok_and(|v| pred(&v))
        });
        serde_json::from_slice(&payload).unwrap()
    }

    /// Asks `device` for its telemetry (the `stats` command) until `pred`
    /// holds, and returns that telemetry.
    pub fn stats_until(
        &mut self,
        device: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.stats_within(device, what, DEADLINE, pred)
    }

    /// Like [`Observer::stats_until`], for a deadline the test is about.
    pub fn stats_within(
        &mut self,
        device: &str,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + deadline;
        loop {
            let stats = self.stats(device);
            if pred(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < end,
                "no {what} within {deadline:?}: {stats}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `device`'s telemetry now (the `stats` command).
    pub fn stats(&mut self, device: &str) -> Value {
        self.command(device, serde_json::json!({"cmd": "stats"}))["result"].clone()
    }

    /// Sends a command to `device` and waits for its reply on our inbox.
    pub fn command(&mut self, device: &str, mut command: Value) -> Value {
        let inbox = format!("meshcam/clients/{}/replies", self.id);
        let id = format!("c-{}", rand_suffix());
        command["v"] = 1.into();
        command["id"] = id.clone().into();
        command["reply_to"] = inbox.clone().into();
        self.publish(
            &format!("meshcam/devices/{device}/cmd"),
            command.to_string(),
            false,
        );
        self.wait_json(&inbox, "command reply", |v| v["id"] == id.as_str())
    }
}

/// The topic filter of an observer's inbox, where replies to its commands
/// come.
pub fn inbox(id: &str) -> String {
    format!("meshcam/clients/{id}/#")
}

pub fn status_topic(device: &str) -> String {
    format!("meshcam/devices/{device}/status")
}

pub fn stats_topic(device: &str) -> String {
    format!("meshcam/devices/{device}/stats")
}

/// Signals from `from` to `to` in `room`: what an observer subscribes to
/// in order to count a camera's offers.
pub fn signal_topic(room: &str, to: &str, from: &str) -> String {
    format!("meshcam/rooms/{room}/signal/{to}/{from}")
}

/// Whether a message is an offer on `topic`. Every connection the camera
/// opens to a viewer starts with one (an ICE restart is one too).
pub fn is_offer(topic: &str) -> impl Fn(&str, &[u8]) -> bool + '_ {
    move |t, p| t == topic && serde_json::from_slice::<Value>(p).is_ok_and(|v| v["type"] == "offer")
}

/// The connection to `peer` in a telemetry message, if there is one.
pub fn connection_to<'a>(stats: &'a Value, peer: &str) -> Option<&'a Value> {
    stats["connections"]
        .as_array()?
        .iter()
        .find(|c| c["peer"] == peer)
}

/// The peers of the connections in a telemetry message, in its order.
pub fn connection_peers(stats: &Value) -> Vec<String> {
    stats["connections"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["peer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a JPEG with GStreamer and returns its size.
pub fn jpeg_size(data: &[u8]) -> (i32, i32) {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().unwrap();
    let pipeline = gst::parse::launch(
        "appsrc name=src caps=image/jpeg ! jpegdec ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gstreamer_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    src.push_buffer(gst::Buffer::from_slice(data.to_vec()))
        .unwrap();
    src.end_of_stream().unwrap();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(10))
        .expect("the JPEG decodes");
    let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
    pipeline.set_state(gst::State::Null).unwrap();
    (
        s.get::<i32>("width").unwrap(),
        s.get::<i32>("height").unwrap(),
    )
}
