//! The device status of PROTOCOL.md: retained on the status topic,
//! republished when it changes, at most once a second.
//!
//! It owns when the status is due and what it says ([`device_status`], a
//! pure builder); the daemon gathers its facts. It must not change what it
//! reports on: other parts say when the status changed.

use std::time::{Duration, Instant, SystemTime};

use super::Daemon;
use super::pipeline::PipelineState;
use crate::config::Config;
use crate::protocol::{DeviceStatus, VideoInfo};

/// Status is republished at most this often when rooms or viewers change.
const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the published status is out of date, and since when it may be
/// published again.
pub(super) struct StatusSchedule {
    started_at: SystemTime,
    dirty: bool,
    sent_at: Option<Instant>,
    last_viewers: usize,
}

impl StatusSchedule {
    pub(super) fn new() -> Self {
        Self {
            started_at: SystemTime::now(),
            dirty: false,
            sent_at: None,
            last_viewers: 0,
        }
    }

    /// The status says something new: publish it when the rate allows.
    pub(super) fn changed(&mut self) {
        self.dirty = true;
    }

    pub(super) fn note_viewers(&mut self, viewers: usize) {
        if viewers != self.last_viewers {
            self.last_viewers = viewers;
            self.dirty = true;
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.dirty
            && self
                .sent_at
                .is_none_or(|at| now >= at + STATUS_MIN_INTERVAL)
    }

    fn sent(&mut self, now: Instant) {
        self.dirty = false;
        self.sent_at = Some(now);
    }
}

/// Who is connected, as the status says.
struct Occupancy {
    rooms: Vec<String>,
    viewers: usize,
    max_viewers: usize,
}

/// The device status object, `online` or `error`.
fn device_status(
    config: &Config,
    occupancy: Occupancy,
    pipeline: PipelineState,
    error: Option<&str>,
    started_at: SystemTime,
) -> DeviceStatus {
    let v = &config.video;
    let mut status = DeviceStatus::offline(&config.device.id);
    status.state = match pipeline {
        PipelineState::Failed { .. } => "error",
        PipelineState::Starting | PipelineState::Playing | PipelineState::Off => "online",
    }
    .into();
    status.name = Some(config.device.name.clone());
    status.version = Some(env!("CARGO_PKG_VERSION").into());
    status.rooms = Some(occupancy.rooms);
    status.viewers = Some(occupancy.viewers);
    status.max_viewers = Some(occupancy.max_viewers);
    status.video = Some(VideoInfo {
        codec: "H264".into(),
        width: v.width,
        height: v.height,
        fps: v.fps,
    });
    status.started_at = Some(humantime::format_rfc3339_seconds(started_at).to_string());
    status.error = error.map(str::to_owned);
    status
}

impl Daemon {
    pub(super) fn current_status(&self) -> DeviceStatus {
        let mesh = &self.participant.mesh;
        let occupancy = Occupancy {
            rooms: mesh.rooms(),
            viewers: mesh.viewer_count(),
            max_viewers: mesh.max_viewers(),
        };
        device_status(
            &self.config,
            occupancy,
            self.pipeline.state(),
            self.pipeline.error(),
            self.status.started_at,
        )
    }

    pub(super) fn publish_status(&mut self, now: Instant) {
        let status = self.current_status();
        self.mqtt.publish(
            self.topics.status(&self.config.device.id),
            status.encode(),
            true,
        );
        self.status.sent(now);
    }

    pub(super) fn publish_status_if_due(&mut self, now: Instant) {
        if self.status.due(now) {
            self.publish_status(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(pipeline: PipelineState, error: Option<&str>) -> DeviceStatus {
        let config = Config::from_toml(
            "[device]\nid = \"cam-kitchen\"\nname = \"Kitchen\"\n\
             [video]\nwidth = 1280\nheight = 720\nfps = 30\n",
        )
        .unwrap();
        let occupancy = Occupancy {
            rooms: vec!["home".into()],
            viewers: 2,
            max_viewers: 8,
        };
        let started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        device_status(&config, occupancy, pipeline, error, started_at)
    }

    #[test]
    fn the_status_has_the_fields_of_the_protocol() {
        assert_eq!(
            serde_json::to_value(status(PipelineState::Playing, None)).unwrap(),
            json!({"v":1,"state":"online","id":"cam-kitchen","name":"Kitchen",
                   "version":env!("CARGO_PKG_VERSION"),"rooms":["home"],"viewers":2,
                   "max_viewers":8,"video":{"codec":"H264","width":1280,"height":720,"fps":30},
                   "started_at":"2023-11-14T22:13:20Z"})
        );
    }

    #[test]
    fn the_status_is_online_unless_the_pipeline_failed() {
        let starting = status(PipelineState::Starting, Some("was down"));
        assert_eq!(starting.state, "online");
        assert_eq!(starting.error.as_deref(), Some("was down"));
        let restart_at = Instant::now();
        let failed = status(PipelineState::Failed { restart_at }, Some("no camera"));
        assert_eq!(failed.state, "error");
        assert_eq!(failed.error.as_deref(), Some("no camera"));
    }

    #[test]
    fn the_status_is_republished_when_it_changed_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut schedule = StatusSchedule::new();
        assert!(!schedule.due(t0), "nothing changed");
        schedule.note_viewers(0);
        assert!(!schedule.due(t0), "same viewer count");
        schedule.note_viewers(1);
        assert!(schedule.due(t0));
        schedule.sent(t0);
        assert!(!schedule.due(t0), "just sent");
        schedule.changed();
        assert!(!schedule.due(t0 + Duration::from_millis(999)));
        assert!(schedule.due(t0 + STATUS_MIN_INTERVAL));
    }
}
