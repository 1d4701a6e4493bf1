//! Start-up and shutdown, each in its order.
//!
//! Start-up: read the broker's credentials and the durable state, start the
//! pipeline, generate the DTLS certificate, connect to the broker with an
//! `offline` will, rejoin rooms, serve the viewer page.
//! Shutdown (SIGTERM/SIGINT): `bye` to every viewer, clear every presence,
//! publish `offline`, flush the broker link, stop the pipeline.
//!
//! It owns what runs for the daemon's whole life. It must not handle events:
//! once started, the supervisor loop does.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;

use super::commands::Commands;
use super::pipeline::{AudioSource, Pipeline, PipelineState, SpeakerOutput, VideoSource};
use super::settings::apply_stored;
use super::stats::StatsSchedule;
use super::status::StatusSchedule;
use super::talk::TalkDesk;
use super::{ConfigSource, Daemon, Events, LOG_TARGET};
use crate::config::{Config, EchoMode, STANDALONE_ROOM, SpeakerSink};
use crate::media::speaker::SpeakerFeed;
use crate::media::{AudioFeed, KeyframeTarget, VideoLayers, VideoParams, echo, has_element};
use crate::mqtt::{self, Broker, SessionOptions};
use crate::participant::Participant;
use crate::peer::{Outgoing, PeerFactory};
use crate::protocol::{DeviceStatus, Role, Topics};
use crate::room::{MAX_ROOMS, Me};
use crate::service::Service;
use crate::store::Store;
use crate::telemetry::Sample;
use crate::turn_rest::IceServers;
use crate::web::PageConfig;
use crate::whip::Whip;

/// How long shutdown waits for the broker link to flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The rooms to be in at start: the configured ones, then those joined by
/// command, each once; the standalone room when there is none and the broker
/// is embedded.
fn rooms_at_start(
    configured: &[String],
    joined: &[String],
    left: &[String],
    standalone: bool,
) -> Vec<String> {
    let mut rooms: Vec<String> = configured
        .iter()
        .filter(|room| !left.contains(room))
        .cloned()
        .collect();
    for room in joined {
        if !rooms.contains(room) {
            rooms.push(room.clone());
        }
    }
    let standalone_room = STANDALONE_ROOM.to_string();
    if configured.is_empty() && joined.is_empty() && standalone && !left.contains(&standalone_room)
    {
        rooms.push(standalone_room);
    }
    rooms
}

impl Daemon {
    pub(super) async fn start(mut config: Config, source: ConfigSource) -> anyhow::Result<Self> {
        // The password, CA and client certificate files are read before
        // anything starts: one missing is a configuration error (exit 2).
        let external = (!config.embedded())
            .then(|| Broker::from_config(&config.mqtt))
            .transpose()?;
        let store = Store::new(&config.state_dir);
        let state = store
            .load()
            .with_context(|| format!("reading state from {}", store.path().display()))?;
        apply_stored(&mut config, &state.settings);
        let topics = Topics::new(config.mqtt.prefix.clone());
        let id = config.device.id.clone();

        // How many layers there are is read here, once; a pipeline that
        // encodes fewer marks the others unavailable.
        let layers = VideoLayers::new(&VideoParams::from_config(&config.video).layers());
        let targets: Vec<KeyframeTarget> =
            layers.iter().map(|_| KeyframeTarget::default()).collect();
        let (media_tx, media_events) = mpsc::unbounded_channel();
        let (pipeline, start_error) = Pipeline::start(
            &config,
            VideoSource {
                layers: layers.clone(),
                targets: targets.clone(),
                events: media_tx,
            },
        )?;
        let echo = echo::mode(&config, has_element);
        if let Some(reason) = echo::fallback_reason(&config, echo) {
            tracing::warn!(target: LOG_TARGET, "{reason}");
        }
        let cancel_echo = echo == EchoMode::Cancel;
        // The microphone has a pipeline of its own: its failures are its own.
        let audio_feed = AudioFeed::default();
        let (audio_tx, audio_events) = mpsc::unbounded_channel();
        let (audio, audio_error) = Pipeline::start(
            &config,
            AudioSource {
                feed: audio_feed.clone(),
                events: audio_tx,
                cancel_echo,
                ducked: false,
            },
        )?;
        // The speaker too: a busy or missing one is retried on its own.
        let speaker_feed = SpeakerFeed::default();
        let (speaker_tx, speaker_events) = mpsc::unbounded_channel();
        let (speaker, speaker_error) = Pipeline::start(
            &config,
            SpeakerOutput {
                feed: speaker_feed.clone(),
                events: speaker_tx,
                cancel_echo,
            },
        )?;
        let keyframe_servers: Vec<_> = layers
            .iter()
            .zip(targets)
            .map(|(feed, target)| {
                tokio::spawn(feed.keyframes.clone().serve(
                    Duration::from_millis(config.video.keyframe_min_interval_ms),
                    move || target.force(),
                ))
            })
            .collect();

        let ice_servers = IceServers::from_config(&config.webrtc.ice_servers)?;
        let factory = Arc::new(
            tokio::task::spawn_blocking({
                let webrtc = config.webrtc.clone();
                let own = ice_servers.for_camera(&config.device.id, SystemTime::now());
                move || PeerFactory::new(&webrtc, own)
            })
            .await
            .context("certificate task")??,
        );

        let standalone = config
            .embedded()
            .then(|| crate::broker::start(&config.broker))
            .transpose()?;
        let broker = match &standalone {
            Some(listening) => {
                tracing::info!(
                    target: LOG_TARGET,
                    tcp = %listening.tcp,
                    websocket = %listening.ws,
                    "embedded broker listening"
                );
                Broker::from_config(&config.embedded_client(listening.tcp))?
            }
            None => external.expect("read above for a broker that is not embedded"),
        };
        let (mqtt, mqtt_events) = mqtt::start(SessionOptions {
            client_id: id.clone(),
            broker,
            keepalive: Duration::from_secs(config.mqtt.keepalive_s),
            will: Some((topics.status(&id), DeviceStatus::offline(&id).encode())),
        });
        let (peer_tx, peer_events) = mpsc::unbounded_channel();
        let outgoing = Outgoing {
            video: layers.clone(),
            // Off: no sound is configured, and none is offered.
            audio: (audio.state() != PipelineState::Off).then_some(audio_feed),
            // With a speaker, viewers may talk back.
            speaker: (config.speaker.sink != SpeakerSink::None).then_some(speaker_feed),
        };
        // The SFU gets the stream; it does not talk back.
        let publication = Outgoing {
            speaker: None,
            ..outgoing.clone()
        };
        let whip = Whip::start(&config.whip, factory.clone(), publication)?;
        let mut participant = Participant::new(
            Me {
                id: id.clone(),
                role: Role::Camera,
                name: config.device.name.clone(),
            },
            config.webrtc.max_viewers,
            topics.clone(),
            mqtt.clone(),
            factory.clone(),
            Some(outgoing),
            peer_tx,
        );
        participant.pin_all(config.video.pin_layer);
        let rooms = rooms_at_start(
            &config.rooms,
            &state.rooms,
            &state.left,
            standalone.is_some(),
        );
        for room in &rooms {
            if participant.mesh.can_join(room) {
                participant.join(room);
            } else {
                tracing::warn!(
                    target: LOG_TARGET,
                    %room,
                    "more than {MAX_ROOMS} rooms: not rejoining this one"
                );
            }
        }
        if let Some(listen) = config.web_listen() {
            let page = PageConfig::new(
                &config,
                rooms.first().cloned(),
                standalone.map(|l| l.ws.port()),
            );
            let listen = listen.parse().context("web.listen")?;
            let url = crate::web::start(listen, page)
                .await
                .with_context(|| format!("serving the viewer page on web.listen {listen}"))?;
            tracing::info!(target: LOG_TARGET, "watch in a browser: {url}");
        }
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let commands = Commands::new(participant.subscription_token(), replies_tx);
        let stats = StatsSchedule::new(
            Sample::take(Instant::now(), &layers.top().counters, 0),
            Duration::from_secs(config.stats_interval_s),
        );
        let talk = TalkDesk::new(&config, echo);
        let mut daemon = Self {
            talk,
            ice_servers,
            config,
            source,
            service: Service::from_env(),
            store,
            state,
            topics,
            mqtt,
            mqtt_connected: false,
            participant,
            layers,
            pipeline,
            audio,
            speaker,
            status: StatusSchedule::new(),
            stats,
            commands,
            whip,
            factory,
            events: Events {
                mqtt: mqtt_events,
                peers: peer_events,
                media: media_events,
                audio: audio_events,
                speaker: speaker_events,
                replies,
            },
            keyframe_servers,
        };
        daemon.on_whip();
        if let Some(error) = start_error {
            let effect = daemon.pipeline.failed(error, Instant::now());
            daemon.after_pipeline(effect);
        }
        if let Some(error) = audio_error {
            let effect = daemon.audio.failed(error, Instant::now());
            daemon.after_pipeline(effect);
        }
        if let Some(error) = speaker_error {
            let effect = daemon.speaker.failed(error, Instant::now());
            daemon.after_pipeline(effect);
        }
        daemon.publish_talk();
        Ok(daemon)
    }

    pub(super) async fn shutdown(&mut self) {
        tracing::info!(target: LOG_TARGET, "shutting down");
        self.service.stopping();
        self.participant.leave_all("shutdown");
        self.whip.stop().await;
        let id = self.config.device.id.clone();
        self.mqtt.publish(
            self.topics.status(&id),
            DeviceStatus::offline(&id).encode(),
            true,
        );
        self.mqtt.disconnect().await;
        let flushed = tokio::time::timeout(FLUSH_TIMEOUT, async {
            while self.events.mqtt.recv().await.is_some() {}
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(target: LOG_TARGET, "the broker link did not flush in time");
        }
        for server in &self.keyframe_servers {
            server.abort();
        }
        self.pipeline.stop();
        self.audio.stop();
        self.speaker.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> Vec<String> {
        names.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn configured_rooms_come_first_then_those_joined_by_command() {
        assert_eq!(
            rooms_at_start(
                &rooms(&["home", "door"]),
                &rooms(&["garage", "home"]),
                &[],
                false
            ),
            rooms(&["home", "door", "garage"])
        );
        assert_eq!(
            rooms_at_start(&rooms(&["home"]), &rooms(&[]), &[], true),
            rooms(&["home"])
        );
    }

    #[test]
    fn configured_rooms_left_by_command_stay_left() {
        assert_eq!(
            rooms_at_start(&rooms(&["home", "door"]), &[], &rooms(&["door"]), false),
            rooms(&["home"])
        );
        assert!(rooms_at_start(&[], &[], &rooms(&[STANDALONE_ROOM]), true).is_empty());
    }

    #[test]
    fn a_standalone_camera_without_rooms_joins_the_standalone_room() {
        assert_eq!(
            rooms_at_start(&[], &[], &[], true),
            rooms(&[STANDALONE_ROOM])
        );
        assert!(rooms_at_start(&[], &[], &[], false).is_empty());
        assert_eq!(
            rooms_at_start(&[], &rooms(&["garage"]), &[], true),
            rooms(&["garage"])
        );
    }
}
