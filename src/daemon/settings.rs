//! Settings that change while the daemon runs: the `set` command (kept in
//! the store, winning over the configuration file) and SIGHUP, which reads
//! the configuration again.
//!
//! It owns the one decision of what a change of settings needs while the
//! daemon runs, [`settings_change`], used by both, and which settings wait
//! for a restart. It must not touch the capture itself: the pipeline
//! supervisor carries the decision out.

use serde_json::{Value, json};

use super::{Daemon, LOG_TARGET};
use crate::config::{Config, LayerConfig, VideoConfig, WebrtcConfig, WhipConfig, WhipMode};
use crate::control::SetRequest;
use crate::media::VideoParams;
use crate::protocol::{ErrorCode, Reply};
use crate::store::Settings;

/// What a change of settings needs while the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SettingsChange {
    /// A new viewer limit for the room logic.
    max_viewers: Option<usize>,
    /// A new mode for the SFU publication.
    whip_mode: Option<WhipMode>,
    pipeline: PipelineChange,
}

/// What the running pipeline needs for a change of video settings.
///
/// A size or frame rate is a change of caps, which the pipeline only takes
/// by being built again: it is a [`PipelineChange::Rebuild`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PipelineChange {
    /// Nothing that the pipeline uses changed.
    Nothing,
    /// The encoder takes this bitrate (kbit/s) while it runs.
    Bitrate(u32),
    /// Size, frame rate, source, encoder…: they shape the whole pipeline.
    /// Viewers stay connected and resume on the new pipeline's key frame.
    Rebuild,
}

/// Where a change of settings comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A `set` command. One that names the bitrate hands it to the encoder
    /// even when it is the current one, so its reply says whether the
    /// encoder takes it; one that names the WHIP mode tries the endpoint
    /// again at once.
    Set {
        names_bitrate: bool,
        names_whip_mode: bool,
    },
    /// SIGHUP: what changed, and only that, is applied.
    Reload,
}

/// What going from the `old` to the `new` settings needs.
fn settings_change(old: &Config, new: &Config, origin: Origin) -> SettingsChange {
    let max_viewers = new.webrtc.max_viewers;
    let whip_mode = new.whip.mode;
    let names_whip_mode = matches!(
        origin,
        Origin::Set {
            names_whip_mode: true,
            ..
        }
    );
    SettingsChange {
        max_viewers: (max_viewers != old.webrtc.max_viewers).then_some(max_viewers),
        whip_mode: (whip_mode != old.whip.mode || names_whip_mode).then_some(whip_mode),
        pipeline: pipeline_change(&old.video, &new.video, origin),
    }
}

fn pipeline_change(old: &VideoConfig, new: &VideoConfig, origin: Origin) -> PipelineChange {
    let names_bitrate = match origin {
        Origin::Set { names_bitrate, .. } => names_bitrate,
        Origin::Reload => false,
    };
    let bitrates = |v: &VideoConfig| -> Vec<u32> {
        VideoParams::from_config(v)
            .layers()
            .iter()
            .map(|l| l.bitrate_kbps)
            .collect()
    };
    if without_bitrates(old) != without_bitrates(new) {
        PipelineChange::Rebuild
    } else if bitrates(new) != bitrates(old) || names_bitrate {
        PipelineChange::Bitrate(new.bitrate_kbps)
    } else {
        PipelineChange::Nothing
    }
}

/// The video settings but their bitrates, which encoders take running.
fn without_bitrates(v: &VideoConfig) -> VideoConfig {
    let layers = v
        .lower_layers()
        .into_iter()
        .map(|l| LayerConfig {
            bitrate_kbps: 0,
            ..l
        })
        .collect();
    VideoConfig {
        bitrate_kbps: 0,
        layers: Some(layers),
        ..v.clone()
    }
}

/// Settings changed at run time (`set`) win over the configuration file.
pub(super) fn apply_stored(config: &mut Config, settings: &Settings) {
    let v = &mut config.video;
    v.bitrate_kbps = settings.bitrate_kbps.unwrap_or(v.bitrate_kbps);
    v.fps = settings.fps.unwrap_or(v.fps);
    v.width = settings.width.unwrap_or(v.width);
    v.height = settings.height.unwrap_or(v.height);
    if let Some(bitrates) = &settings.layer_bitrates_kbps {
        let mut layers = v.lower_layers();
        // Stored for another number of layers (the file changed since): left.
        if layers.len() == bitrates.len() {
            for (layer, kbps) in layers.iter_mut().zip(bitrates) {
                layer.bitrate_kbps = *kbps;
            }
            v.layers = Some(layers);
        }
    }
    config.webrtc.max_viewers = settings.max_viewers.unwrap_or(config.webrtc.max_viewers);
    config.whip.mode = settings.whip_mode.unwrap_or(config.whip.mode);
    config.audio.muted = settings.muted.unwrap_or(config.audio.muted);
    config.talk.enabled = settings.talk.unwrap_or(config.talk.enabled);
    config.speaker.volume = settings.speaker_volume.unwrap_or(config.speaker.volume);
}

/// Keeps what a `set` names among the stored settings.
fn record(settings: &mut Settings, set: &SetRequest) {
    settings.bitrate_kbps = set.bitrate_kbps.or(settings.bitrate_kbps);
    settings.fps = set.fps.or(settings.fps);
    settings.width = set.width.or(settings.width);
    settings.height = set.height.or(settings.height);
    settings.max_viewers = set.max_viewers.or(settings.max_viewers);
    settings.whip_mode = set.whip_mode.or(settings.whip_mode);
    settings.talk = set.talk.or(settings.talk);
    settings.speaker_volume = set.speaker_volume.or(settings.speaker_volume);
    settings.layer_bitrates_kbps = set
        .layer_bitrates_kbps
        .clone()
        .or(settings.layer_bitrates_kbps.take());
}

/// What a `set` cannot take that the command's own checks could not see:
/// bitrates for another number of layers, or not below the top layer's.
fn check_layer_bitrates(config: &Config, set: &SetRequest) -> Result<(), String> {
    let Some(bitrates) = &set.layer_bitrates_kbps else {
        return Ok(());
    };
    let count = config.video.lower_layers().len();
    if bitrates.len() != count {
        return Err(format!(
            "layer_bitrates_kbps names {} layers; this camera has {count} below the top one",
            bitrates.len()
        ));
    }
    let top = set.bitrate_kbps.unwrap_or(config.video.bitrate_kbps);
    if bitrates.first().is_some_and(|first| *first >= top) {
        return Err(format!(
            "layer_bitrates_kbps must stay below the top layer's bitrate ({top})"
        ));
    }
    Ok(())
}

/// The result of `set`: every run-time setting as it now is.
fn settings_result(config: &Config) -> Value {
    let v = &config.video;
    json!({
        "bitrate_kbps": v.bitrate_kbps,
        "fps": v.fps,
        "width": v.width,
        "height": v.height,
        "max_viewers": config.webrtc.max_viewers,
        "whip_mode": config.whip.mode.as_str(),
        "talk": config.talk.enabled,
        "speaker_volume": config.speaker.volume,
        "layer_bitrates_kbps": v.lower_layers().iter().map(|l| l.bitrate_kbps).collect::<Vec<_>>(),
    })
}

/// Whether a reload names settings that are only read at start-up: those
/// [`reloaded`] keeps as they started.
fn waits_for_restart(old: &Config, new: &Config) -> bool {
    reloaded(old, new.clone()) != *new
}

/// The configuration that runs after a reload: `new`, except for who the
/// device is, its broker link, its state directory and its WebRTC network,
/// which stay as they started (of `webrtc`, only `max_viewers` changes),
/// and the WHIP endpoint and its credentials (only `whip.mode` changes).
fn reloaded(old: &Config, new: Config) -> Config {
    Config {
        device: old.device.clone(),
        mqtt: old.mqtt.clone(),
        state_dir: old.state_dir.clone(),
        webrtc: WebrtcConfig {
            max_viewers: new.webrtc.max_viewers,
            ..old.webrtc.clone()
        },
        whip: WhipConfig {
            mode: new.whip.mode,
            ..old.whip.clone()
        },
        ..new
    }
}

impl Daemon {
    /// `set`: applies and persists run-time settings.
    pub(super) fn set(&mut self, set: SetRequest, id: &str) -> Reply {
        if let Err(message) = check_layer_bitrates(&self.config, &set) {
            return Reply::error(Some(id), ErrorCode::BadRequest, message);
        }
        let old = self.config.clone();
        record(&mut self.state.settings, &set);
        apply_stored(&mut self.config, &self.state.settings);
        let origin = Origin::Set {
            names_bitrate: set.bitrate_kbps.is_some() || set.layer_bitrates_kbps.is_some(),
            names_whip_mode: set.whip_mode.is_some(),
        };
        if set.whip_mode.is_some_and(|m| m != WhipMode::Off) && self.config.whip.endpoint.is_empty()
        {
            return Reply::error(
                Some(id),
                ErrorCode::BadRequest,
                "whip_mode needs whip.endpoint in the configuration",
            );
        }
        let change = settings_change(&old, &self.config, origin);
        self.apply_viewer_limit(change.max_viewers);
        self.apply_whip_mode(change.whip_mode);
        self.apply_talk(&old);
        if let Err(reply) = self.save_state(id) {
            return reply;
        }
        if let Err(e) = self.apply_pipeline_change(change.pipeline) {
            return Reply::error(Some(id), ErrorCode::Internal, format!("{e:#}"));
        }
        self.status.changed();
        Reply::ok(id, settings_result(&self.config))
    }

    /// SIGHUP: reads the configuration again and applies what can change
    /// while running, keeping every viewer connected.
    pub(super) fn reload(&mut self) {
        self.service.reloading();
        match Config::load(self.source.path.as_deref(), &self.source.overrides) {
            Err(e) => tracing::error!(
                target: LOG_TARGET,
                error = %e,
                "reload refused; the running configuration stays"
            ),
            Ok(mut new) => {
                apply_stored(&mut new, &self.state.settings);
                self.apply_reload(new);
            }
        }
        self.service.reloaded();
    }

    fn apply_reload(&mut self, new: Config) {
        if waits_for_restart(&self.config, &new) {
            tracing::warn!(
                target: LOG_TARGET,
                "device, mqtt, state_dir, webrtc network and whip endpoint settings change on the next restart"
            );
        }
        for room in &new.rooms {
            if !self.participant.mesh.is_in(room) && !self.state.left.contains(room) {
                self.participant.join(room);
            }
        }
        for room in &self.config.rooms {
            if !new.rooms.contains(room) && !self.state.rooms.contains(room) {
                self.participant.leave(room, "leaving");
            }
        }
        let change = settings_change(&self.config, &new, Origin::Reload);
        self.apply_viewer_limit(change.max_viewers);
        self.apply_whip_mode(change.whip_mode);
        if new.video.pin_layer != self.config.video.pin_layer {
            self.participant.pin_all(new.video.pin_layer);
        }
        let running = reloaded(&self.config, new);
        let old = std::mem::replace(&mut self.config, running);
        self.apply_talk(&old);
        if let Err(e) = self.apply_pipeline_change(change.pipeline) {
            tracing::warn!(target: LOG_TARGET, error = %e, "bitrate not changed");
        }
        self.status.changed();
        tracing::info!(target: LOG_TARGET, "configuration reloaded");
    }

    /// Talking back turned on or off, the speaker's volume: taken at once.
    fn apply_talk(&mut self, old: &Config) {
        if self.config.talk.enabled != old.talk.enabled {
            self.set_talk_enabled(self.config.talk.enabled);
        }
        if self.config.speaker.volume != old.speaker.volume {
            self.speaker.set_volume(self.config.speaker.volume);
        }
    }

    fn apply_whip_mode(&mut self, mode: Option<WhipMode>) {
        if let Some(mode) = mode {
            self.whip.set_mode(mode);
        }
    }

    fn apply_viewer_limit(&mut self, max_viewers: Option<usize>) {
        if let Some(max) = max_viewers {
            self.participant.mesh.set_max_viewers(max);
        }
    }

    /// Carries a [`PipelineChange`] out; only a bitrate can be refused.
    fn apply_pipeline_change(&mut self, change: PipelineChange) -> anyhow::Result<()> {
        match change {
            PipelineChange::Nothing => Ok(()),
            PipelineChange::Bitrate(_) => self.pipeline.set_bitrates(&self.config),
            PipelineChange::Rebuild => {
                self.rebuild_pipeline();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SourceKind, WebrtcConfig};

    fn video() -> VideoConfig {
        VideoConfig {
            width: 640,
            height: 360,
            fps: 15,
            bitrate_kbps: 1500,
            ..VideoConfig::default()
        }
    }

    fn config() -> Config {
        let mut config = Config::from_toml("[webrtc]\nmax_viewers = 4\n").unwrap();
        config.video = video();
        config
    }

    #[test]
    fn what_a_change_of_settings_needs() {
        use PipelineChange::{Bitrate, Nothing, Rebuild};
        let set = |names_bitrate| Origin::Set {
            names_bitrate,
            names_whip_mode: false,
        };
        let reload = Origin::Reload;
        let with = |change: fn(&mut Config)| {
            let mut c = config();
            change(&mut c);
            c
        };
        let needs = |max_viewers, pipeline| SettingsChange {
            max_viewers,
            whip_mode: None,
            pipeline,
        };
        #[rustfmt::skip]
        let table: [(&str, Config, Origin, SettingsChange); 19] = [
            ("nothing", config(), reload, needs(None, Nothing)),
            ("nothing, by set", config(), set(false), needs(None, Nothing)),
            ("the same bitrate, named by set", config(), set(true), needs(None, Bitrate(1500))),
            ("bitrate", with(|c| c.video.bitrate_kbps = 300), reload, needs(None, Bitrate(300))),
            ("bitrate, by set", with(|c| c.video.bitrate_kbps = 300), set(true), needs(None, Bitrate(300))),
            ("width", with(|c| c.video.width = 320), set(false), needs(None, Rebuild)),
            ("height", with(|c| c.video.height = 180), reload, needs(None, Rebuild)),
            ("fps", with(|c| c.video.fps = 30), set(false), needs(None, Rebuild)),
            ("size, bitrate", with(|c| { c.video.width = 320; c.video.bitrate_kbps = 9 }), set(true), needs(None, Rebuild)),
            ("fps, bitrate", with(|c| { c.video.fps = 5; c.video.bitrate_kbps = 9 }), reload, needs(None, Rebuild)),
            ("source", with(|c| c.video.source = SourceKind::V4l2), reload, needs(None, Rebuild)),
            ("device", with(|c| c.video.device = "/dev/video9".into()), reload, needs(None, Rebuild)),
            ("encoder", with(|c| c.video.encoder = "x264enc".into()), reload, needs(None, Rebuild)),
            ("key-frame interval", with(|c| c.video.keyframe_interval_s += 1), reload, needs(None, Rebuild)),
            ("max_viewers", with(|c| c.webrtc.max_viewers = 2), reload, needs(Some(2), Nothing)),
            ("max_viewers, by set", with(|c| c.webrtc.max_viewers = 9), set(false), needs(Some(9), Nothing)),
            ("max_viewers, bitrate", with(|c| { c.webrtc.max_viewers = 1; c.video.bitrate_kbps = 9 }), set(true), needs(Some(1), Bitrate(9))),
            ("max_viewers, fps", with(|c| { c.webrtc.max_viewers = 1; c.video.fps = 5 }), reload, needs(Some(1), Rebuild)),
            ("rooms and telemetry", with(|c| { c.rooms = vec!["garage".into()]; c.stats_interval_s = 3 }), reload, needs(None, Nothing)),
        ];
        for (what, new, origin, expected) in table {
            assert_eq!(settings_change(&config(), &new, origin), expected, "{what}");
        }
    }

    #[test]
    fn stored_settings_win_over_the_file() {
        let mut config = Config::from_toml("").unwrap();
        let file = config.clone();
        apply_stored(&mut config, &Settings::default());
        assert_eq!(config.video, file.video, "nothing stored");
        let stored = Settings {
            bitrate_kbps: Some(800),
            fps: Some(10),
            width: None,
            height: Some(240),
            max_viewers: Some(3),
            layer_bitrates_kbps: Some(vec![120]),
            whip_mode: Some(WhipMode::Overflow),
            muted: Some(true),
            talk: Some(false),
            speaker_volume: Some(40),
        };
        apply_stored(&mut config, &stored);
        assert_eq!(config.video.lower_layers()[0].bitrate_kbps, 120);
        assert_eq!(config.video.bitrate_kbps, 800);
        assert_eq!(config.video.fps, 10);
        assert_eq!(config.video.width, file.video.width);
        assert_eq!(config.video.height, 240);
        assert_eq!(config.webrtc.max_viewers, 3);
        assert_eq!(config.whip.mode, WhipMode::Overflow);
        assert!(config.audio.muted);
        assert!(!config.talk.enabled);
        assert_eq!(config.speaker.volume, 40);
    }

    #[test]
    fn set_keeps_what_it_names_and_leaves_the_rest() {
        let mut settings = Settings {
            fps: Some(10),
            width: Some(320),
            ..Settings::default()
        };
        record(
            &mut settings,
            &SetRequest {
                bitrate_kbps: Some(900),
                fps: Some(20),
                talk: Some(false),
                ..SetRequest::default()
            },
        );
        assert_eq!(
            settings,
            Settings {
                bitrate_kbps: Some(900),
                fps: Some(20),
                width: Some(320),
                height: None,
                max_viewers: None,
                layer_bitrates_kbps: None,
                whip_mode: None,
                muted: None,
                talk: Some(false),
                speaker_volume: None,
            }
        );
    }

    #[test]
    fn layer_bitrates_are_taken_running_and_must_name_every_layer() {
        let with_low = |kbps| {
            let mut c = config();
            c.video.layers = Some(vec![LayerConfig {
                width: 320,
                height: 180,
                bitrate_kbps: kbps,
            }]);
            c
        };
        let set = Origin::Set {
            names_bitrate: true,
            names_whip_mode: false,
        };
        assert_eq!(
            settings_change(&with_low(300), &with_low(200), Origin::Reload).pipeline,
            PipelineChange::Bitrate(1500)
        );
        assert_eq!(
            settings_change(&with_low(300), &with_low(300), set).pipeline,
            PipelineChange::Bitrate(1500)
        );
        let two = SetRequest {
            layer_bitrates_kbps: Some(vec![300, 100]),
            ..SetRequest::default()
        };
        assert!(check_layer_bitrates(&with_low(300), &two).is_err());
        let above_top = SetRequest {
            layer_bitrates_kbps: Some(vec![1600]),
            ..SetRequest::default()
        };
        assert!(check_layer_bitrates(&with_low(300), &above_top).is_err());
        let fine = SetRequest {
            layer_bitrates_kbps: Some(vec![250]),
            ..SetRequest::default()
        };
        assert!(check_layer_bitrates(&with_low(300), &fine).is_ok());
    }

    #[test]
    fn the_set_result_names_every_run_time_setting() {
        assert_eq!(
            settings_result(&config()),
            json!({"bitrate_kbps":1500,"fps":15,"width":640,"height":360,"max_viewers":4,
                   "whip_mode":"off","talk":true,"speaker_volume":100,"layer_bitrates_kbps":[300]})
        );
    }

    #[test]
    fn a_reload_keeps_identity_broker_state_dir_and_network_until_restart() {
        let old = Config::from_toml("[device]\nid = \"cam1\"\n").unwrap();
        let mut new = Config::from_toml(
            "rooms = [\"garage\"]\nstats_interval_s = 3\n\
             [device]\nid = \"cam2\"\n[mqtt]\nurl = \"mqtt://elsewhere:1883\"\n\
             [webrtc]\nmax_viewers = 2\nbind_address = \"127.0.0.1\"\n",
        )
        .unwrap();
        new.state_dir = "/elsewhere".into();
        assert!(waits_for_restart(&old, &new));
        let next = reloaded(&old, new.clone());
        assert_eq!(next.device, old.device);
        assert_eq!(next.mqtt, old.mqtt);
        assert_eq!(next.state_dir, old.state_dir);
        assert_eq!(
            next.webrtc,
            WebrtcConfig {
                max_viewers: 2,
                ..old.webrtc.clone()
            }
        );
        assert_eq!(next.rooms, ["garage"]);
        assert_eq!(next.stats_interval_s, 3);
        assert!(!waits_for_restart(&old, &next), "what runs is what started");
    }

    #[test]
    fn live_settings_do_not_wait_for_a_restart() {
        let old = Config::from_toml("").unwrap();
        let new = Config::from_toml(
            "rooms = [\"garage\"]\n[video]\nbitrate_kbps = 300\n[webrtc]\nmax_viewers = 2\n",
        )
        .unwrap();
        assert!(!waits_for_restart(&old, &new));
    }
}
