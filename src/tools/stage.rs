//! What the benchmark and the soak with receivers both stand on: a broker
//! (with a WebSockets listener, for Chromium tabs), the camera daemon (this
//! binary) on the test picture, and a watch on its status and telemetry.
//! Telemetry comes every second, the camera's drops per receiver being
//! read from it.

use std::path::Path;
use std::time::Duration;

use crate::protocol::Topics;
use crate::tools::testbed::{CameraProcess, Mosquitto, TempDir, TopicWatch};

/// The camera under measure.
#[derive(Debug, Clone)]
pub struct CameraSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// One layer (`layers = []`), not the default two.
    pub single_layer: bool,
    /// The test tone (the default beside the test picture); without it, no
    /// sound.
    pub audio: bool,
}

impl CameraSettings {
    /// Its configuration in `room`, with room for 64 viewers.
    fn toml(&self, room: &str) -> String {
        format!(
            "rooms = [\"{room}\"]\nstats_interval_s = 1\n[video]\nwidth = {}\nheight = {}\nfps = {}\nbitrate_kbps = {}\n{}[webrtc]\nmax_viewers = 64\n{}",
            self.width,
            self.height,
            self.fps,
            self.bitrate_kbps,
            if self.single_layer {
                "layers = []\n"
            } else {
                ""
            },
            if self.audio {
                ""
            } else {
                "[audio]\nsource = \"none\"\n"
            },
        )
    }
}

pub struct Stage {
    pub broker: Mosquitto,
    pub camera: CameraProcess,
    /// Follows `status_topic`, `stats_topic` and the extra topics asked for.
    pub watch: TopicWatch,
    pub status_topic: String,
    pub stats_topic: String,
    _dir: TempDir,
}

impl Stage {
    /// Starts the broker and camera `id` in `room`, and waits until the
    /// camera says it is online (within `deadline`).
    pub fn start(
        bin: &Path,
        settings: &CameraSettings,
        room: &str,
        id: &str,
        watch_also: &[String],
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        let broker = Mosquitto::start_with_websockets()?;
        let dir = TempDir::new(room)?;
        let camera = CameraProcess::spawn(bin, &broker.url(), id, &settings.toml(room), &dir, &[])?;
        let topics = Topics::new("meshcam");
        let (status_topic, stats_topic) = (topics.status(id), topics.stats(id));
        let mut topics = vec![status_topic.clone(), stats_topic.clone()];
        topics.extend_from_slice(watch_also);
        let watch = TopicWatch::connect(&broker, &topics)?;
        watch.wait(&status_topic, "online", deadline, |v| {
            v["state"] == "online"
        })?;
        Ok(Self {
            broker,
            camera,
            watch,
            status_topic,
            stats_topic,
            _dir: dir,
        })
    }
}
