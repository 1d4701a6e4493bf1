//! The camera daemon: one supervisor loop that feeds broker messages, peer
//! events, pipeline news and the time to the parts that own them.
//!
//! This file owns the [`Daemon`] value and its loop, where each event goes
//! to one method, and the routing of broker messages. The concerns live
//! beside it:
//! - [`startup`]: start-up in order, and the orderly shutdown;
//! - [`pipeline`]: the capture pipeline's supervisor (state, backoff, stalls);
//! - [`commands`]: commands from controllers and their replies;
//! - [`settings`]: what a change of settings needs, for `set` and SIGHUP;
//! - [`status`]: the device status, and when to republish it;
//! - [`stats`]: the telemetry, and when to publish it.
//!
//! Nothing here carries out a command, builds a report or touches the
//! capture: those go through the modules above.

mod commands;
mod pipeline;
mod settings;
mod startup;
mod stats;
mod status;
mod talk;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::media::{MediaEvent, VideoLayers};
use crate::mqtt::{MqttEvent, MqttLink};
use crate::participant::{Participant, sleep_until};
use crate::peer::{PeerEvent, PeerFactory};
use crate::protocol::{Reply, SignalBody, Topic, Topics};
use crate::service::Service;
use crate::store::{State, Store};
use crate::turn_rest::IceServers;
use crate::whip::{Demand, Whip};

use commands::Commands;
use pipeline::{AudioSource, Pipeline, SpeakerOutput, StatusEffect, VideoSource};
use stats::StatsSchedule;
use status::StatusSchedule;
use talk::TalkDesk;

/// Every message of the daemon is logged under this target, whichever file
/// it comes from: log filters and scripts match on it
/// (`INFO meshcam::daemon: ready`).
const LOG_TARGET: &str = "meshcam::daemon";

/// The supervisor's heartbeat for its coarse timers (pipeline restarts and
/// stalls, status, telemetry, the watchdog). The room's timers run at their
/// own deadlines.
const TICK: Duration = Duration::from_millis(250);

/// Where the configuration came from, to read it again on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: Option<std::path::PathBuf>,
    pub overrides: crate::config::Overrides,
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the configuration.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(config, source).await?;
    daemon.run().await
}

struct Daemon {
    /// The running configuration, with the settings of `set` applied.
    config: Config,
    source: ConfigSource,
    service: Service,
    store: Store,
    state: State,
    topics: Topics,
    mqtt: MqttLink,
    mqtt_connected: bool,
    participant: Participant,
    layers: VideoLayers,
    pipeline: Pipeline<VideoSource>,
    audio: Pipeline<AudioSource>,
    speaker: Pipeline<SpeakerOutput>,
    /// Who talks through the speaker.
    talk: TalkDesk,
    /// The configured ICE servers: each viewer is given its own in the
    /// camera's offers.
    ice_servers: IceServers,
    status: StatusSchedule,
    stats: StatsSchedule,
    commands: Commands,
    /// The publication to the SFU.
    whip: Whip,
    /// The viewers' connections: telemetry reads the send loop's counts.
    factory: Arc<PeerFactory>,
    events: Events,
    keyframe_servers: Vec<tokio::task::JoinHandle<()>>,
}

/// What the supervisor waits for, besides signals and its tick.
struct Events {
    mqtt: mpsc::Receiver<MqttEvent>,
    peers: mpsc::UnboundedReceiver<PeerEvent>,
    media: mpsc::UnboundedReceiver<MediaEvent>,
    /// News of the microphone's pipeline.
    audio: mpsc::UnboundedReceiver<MediaEvent>,
    /// News of the speaker's pipeline.
    speaker: mpsc::UnboundedReceiver<MediaEvent>,
    /// Replies of commands that finish in their own task (snapshots).
    replies: mpsc::UnboundedReceiver<(Option<String>, Reply)>,
}

impl Daemon {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.participant.next_deadline();
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => self.reload(),
                event = self.events.mqtt.recv() => {
                    self.on_mqtt(event.context("the broker session ended unexpectedly")?)
                }
                Some(event) = self.events.peers.recv() => self.on_peer(event),
                Some(event) = self.events.media.recv() => self.on_media(event),
                Some(event) = self.events.audio.recv() => self.on_audio(event),
                Some(event) = self.events.speaker.recv() => self.on_speaker(event),
                Some((reply_to, reply)) = self.events.replies.recv() => {
                    self.reply(reply_to.as_deref(), reply)
                }
                _ = sleep_until(deadline) => self.participant.tick(Instant::now()),
                _ = tick.tick() => self.on_tick(Instant::now()),
                _ = self.whip.changed() => self.on_whip(),
            }
            self.status
                .note_viewers(self.participant.mesh.viewer_count());
            self.whip.set_demand(Demand {
                rooms: self.participant.mesh.room_count(),
                overflow: self.participant.mesh.overflow_count(),
            });
        }
        self.shutdown().await;
        Ok(())
    }

    fn on_mqtt(&mut self, event: MqttEvent) {
        match event {
            MqttEvent::Connected => {
                let broker = &self.config.mqtt.url;
                tracing::info!(target: LOG_TARGET, %broker, "connected to the broker");
                self.subscribe_commands();
                self.publish_status(Instant::now());
                self.participant.broker_connected(Instant::now());
                self.mqtt_connected = true;
                self.ready_if_started();
            }
            MqttEvent::Disconnected(reason) => {
                tracing::warn!(target: LOG_TARGET, %reason, "disconnected from the broker");
                self.mqtt_connected = false;
                self.participant.broker_disconnected();
            }
            MqttEvent::Subscribed(token) => {
                self.participant.subscribed(token, Instant::now());
            }
            MqttEvent::Message { topic, payload } => self.on_message(&topic, payload),
        }
    }

    fn on_message(&mut self, topic: &str, payload: Bytes) {
        let Some(parsed) = self.topics.parse(topic) else {
            tracing::debug!(target: LOG_TARGET, %topic, "message on an unexpected topic");
            return;
        };
        match &parsed {
            Topic::DeviceCommand { device } if *device == self.config.device.id => {
                self.on_command(&payload);
            }
            _ => {
                if !self
                    .participant
                    .on_message(&parsed, &payload, Instant::now())
                {
                    tracing::debug!(target: LOG_TARGET, %topic, "message ignored");
                }
                self.on_talk_steps(Instant::now());
            }
        }
    }

    fn on_peer(&mut self, mut event: PeerEvent) {
        // An offer to a viewer carries the ICE servers it may use.
        if let PeerEvent::Signal(link, SignalBody::Offer { ice_servers, .. }) = &mut event
            && let Some((_, peer)) = self.participant.mesh.link_peer(*link)
        {
            *ice_servers = self.ice_servers.for_viewer(peer, SystemTime::now());
        }
        if let Some(PeerEvent::KeyframeRequest(link)) =
            self.participant.on_peer_event(event, Instant::now())
        {
            tracing::debug!(target: LOG_TARGET, link, "key frame requested by viewer");
        }
    }

    /// The publication to the SFU changed: presences carry the pointer to
    /// it while the stream is there.
    fn on_whip(&mut self) {
        let publishing = self.whip.status().state == crate::whip::rules::PublishState::Publishing;
        self.participant
            .set_sfu(self.config.whip.pointer(), publishing);
    }

    fn on_media(&mut self, event: MediaEvent) {
        let effect = self.pipeline.on_event(event, Instant::now());
        self.after_pipeline(effect);
    }

    fn on_audio(&mut self, event: MediaEvent) {
        let effect = self.audio.on_event(event, Instant::now());
        self.after_pipeline(effect);
    }

    fn on_speaker(&mut self, event: MediaEvent) {
        let effect = self.speaker.on_event(event, Instant::now());
        self.after_pipeline(effect);
    }

    fn on_tick(&mut self, now: Instant) {
        let effect = self.pipeline.supervise(&self.config, now);
        self.after_pipeline(effect);
        let effect = self.audio.supervise(&self.config, now);
        self.after_pipeline(effect);
        let effect = self.speaker.supervise(&self.config, now);
        self.after_pipeline(effect);
        self.talk_tick(now);
        // The loop runs, so the daemon is alive; systemd restarts it when
        // these pings stop.
        self.service.keep_alive(now);
        self.publish_status_if_due(now);
        self.publish_stats_if_due(now);
    }

    /// Stops the pipeline if it runs and builds it again from the current
    /// settings; viewers keep their connections.
    fn rebuild_pipeline(&mut self) {
        let effect = self.pipeline.rebuild(&self.config, Instant::now());
        self.after_pipeline(effect);
    }

    fn after_pipeline(&mut self, effect: StatusEffect) {
        if effect == StatusEffect::Changed {
            self.status.changed();
        }
        self.ready_if_started();
    }

    /// READY=1 once the broker is connected and the pipeline plays.
    /// A pipeline in error counts as started: the daemon reports it and keeps
    /// retrying, which beats systemd restarting a daemon whose camera is out.
    fn ready_if_started(&mut self) {
        if self.mqtt_connected
            && self.pipeline.state().counts_as_started()
            && !self.service.is_ready()
        {
            tracing::info!(target: LOG_TARGET, "ready");
            self.service.ready();
        }
    }
}
