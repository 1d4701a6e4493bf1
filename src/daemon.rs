//! The camera daemon: one supervisor loop that feeds broker messages, peer
//! events, pipeline news and the time to the room logic, carries out what it
//! decides, answers commands, keeps status and telemetry current, and shuts
//! down in order.
//!
//! Start-up: load state, start the pipeline, generate the DTLS certificate,
//! connect to the broker with an `offline` will, rejoin rooms.
//! Shutdown (SIGTERM/SIGINT): `bye` to every viewer, clear every presence,
//! publish `offline`, flush the broker link, stop the pipeline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{Config, STANDALONE_ROOM, VideoConfig};
use crate::control::{self, Request};
use crate::media::{Capture, KeyframeTarget, MediaEvent, VideoFeed, VideoParams};
use crate::mqtt::{self, Broker, MqttEvent, MqttLink, SessionOptions};
use crate::participant::Participant;
use crate::peer::{PeerEvent, PeerFactory};
use crate::protocol::{Command, DeviceStatus, Reply, Role, Topic, Topics, VideoInfo};
use crate::room::{MAX_ROOMS, Me};
use crate::store::{State, Store};
use crate::telemetry::{self, Sample};
use crate::web::PageConfig;

/// Status is republished at most this often when rooms or viewers change.
const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The supervisor's heartbeat for timers (retries, status, telemetry).
const TICK: Duration = Duration::from_millis(250);
/// How long shutdown waits for the broker link to flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two pipeline restarts.
const MAX_PIPELINE_BACKOFF: Duration = Duration::from_secs(30);

/// A pipeline that played this long has recovered: its backoff starts over.
const STABLE_RUN: Duration = Duration::from_secs(30);

/// A stalled pipeline (playing, yet no frame for this long) is rebuilt.
const PIPELINE_STALL: Duration = Duration::from_secs(10);

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

struct Pipeline {
    capture: Option<Capture>,
    state: &'static str,
    error: Option<String>,
    restarts: u64,
    /// Failures since the pipeline last played for `STABLE_RUN`: the backoff.
    failures_in_row: u32,
    playing_since: Option<Instant>,
    /// A failed pipeline is rebuilt at this time.
    restart_at: Option<Instant>,
}

struct Daemon {
    config: Config,
    source: ConfigSource,
    service: crate::service::Service,
    mqtt_connected: bool,
    /// The frame count last seen to grow, and when.
    progress: (u64, Instant),
    store: Store,
    state: State,
    topics: Topics,
    mqtt: MqttLink,
    mqtt_events: mpsc::Receiver<MqttEvent>,
    participant: Participant,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    feed: VideoFeed,
    target: KeyframeTarget,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    media_events: mpsc::UnboundedReceiver<MediaEvent>,
    pipeline: Pipeline,
    started_at: SystemTime,
    started: Instant,
    command_token: u64,
    commands_received: u64,
    command_errors: u64,
    status_dirty: bool,
    status_sent_at: Option<Instant>,
    last_viewers: usize,
    last_sample: Sample,
    next_stats: Instant,
    keyframe_server: tokio::task::JoinHandle<()>,
    /// Replies of commands that finish in their own task (snapshots).
    done_tx: mpsc::UnboundedSender<(Option<String>, Reply)>,
    done: mpsc::UnboundedReceiver<(Option<String>, Reply)>,
}

impl Daemon {
    async fn start(mut config: Config, source: ConfigSource) -> anyhow::Result<Self> {
        // The password, CA and client certificate files are read before
        // anything starts: one missing is a configuration error (exit 2).
        let external = (!config.embedded())
            .then(|| Broker::from_config(&config.mqtt))
            .transpose()?;
        let store = Store::new(&config.state_dir);
        let state = store
            .load()
            .with_context(|| format!("reading state from {}", store.path().display()))?;
        apply_settings(&mut config, &state);
        let topics = Topics::new(config.mqtt.prefix.clone());
        let id = config.device.id.clone();

        let feed = VideoFeed::new();
        let target = KeyframeTarget::default();
        let (media_tx, media_events) = mpsc::unbounded_channel();
        // A camera that is unplugged at boot is a state to report and retry,
        // not a reason to exit; a GStreamer element missing from the
        // installation is (exit status 2, naming its package).
        let (capture, capture_error) = match Capture::start(
            &config.video,
            &VideoParams::from_config(&config.video),
            &feed,
            &target,
            media_tx.clone(),
        ) {
            Ok(capture) => {
                tracing::info!(encoder = ?capture.encoder, "capture started");
                (Some(capture), None)
            }
            Err(e) if e.is::<crate::media::MissingElements>() => return Err(e),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let keyframe_server = tokio::spawn({
            let target = target.clone();
            feed.keyframes.clone().serve(
                Duration::from_millis(config.video.keyframe_min_interval_ms),
                move || target.force(),
            )
        });

        let factory = Arc::new(
            tokio::task::spawn_blocking({
                let webrtc = config.webrtc.clone();
                move || PeerFactory::new(&webrtc)
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
                tracing::info!(tcp = %listening.tcp, websocket = %listening.ws, "embedded broker listening");
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
        let mut participant = Participant::new(
            Me {
                id: id.clone(),
                role: Role::Camera,
                name: config.device.name.clone(),
            },
            config.webrtc.max_viewers,
            topics.clone(),
            mqtt.clone(),
            factory,
            Some(feed.clone()),
            peer_tx,
        );
        let mut rooms = config.rooms.clone();
        for room in &state.rooms {
            if !rooms.contains(room) {
                rooms.push(room.clone());
            }
        }
        if rooms.is_empty() && standalone.is_some() {
            rooms.push(STANDALONE_ROOM.to_string());
        }
        for room in &rooms {
            if participant.mesh.can_join(room) {
                participant.join(room);
            } else {
                tracing::warn!(%room, "more than {MAX_ROOMS} rooms: not rejoining this one");
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
            tracing::info!("watch in a browser: {url}");
        }
        let command_token = participant.subscription_token();
        let now = Instant::now();
        let (done_tx, done) = mpsc::unbounded_channel();
        let mut daemon = Self {
            source,
            service: crate::service::Service::from_env(),
            mqtt_connected: false,
            progress: (0, now),
            done_tx,
            done,
            last_sample: Sample::take(now, &feed.counters),
            next_stats: now + Duration::from_secs(config.stats_interval_s),
            config,
            store,
            state,
            topics,
            mqtt,
            mqtt_events,
            participant,
            peer_events,
            feed,
            target,
            media_tx,
            media_events,
            pipeline: Pipeline {
                capture,
                state: "starting",
                error: None,
                restarts: 0,
                failures_in_row: 0,
                playing_since: None,
                restart_at: None,
            },
            started_at: SystemTime::now(),
            started: now,
            command_token,
            commands_received: 0,
            command_errors: 0,
            status_dirty: false,
            status_sent_at: None,
            last_viewers: 0,
            keyframe_server,
        };
        if let Some(error) = capture_error {
            daemon.pipeline_failed(error);
        }
        Ok(daemon)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => self.reload(),
                event = self.mqtt_events.recv() => match event {
                    Some(event) => self.on_mqtt(event),
                    None => anyhow::bail!("the broker session ended unexpectedly"),
                },
                Some(event) = self.peer_events.recv() => {
                    if let Some(PeerEvent::KeyframeRequest(link)) =
                        self.participant.on_peer_event(event, Instant::now())
                    {
                        tracing::debug!(link, "key frame requested by viewer");
                    }
                }
                Some(event) = self.media_events.recv() => self.on_media(event),
                Some((reply_to, reply)) = self.done.recv() => self.reply(reply_to.as_deref(), reply),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
            self.note_viewer_changes();
        }
        self.shutdown().await;
        Ok(())
    }

    fn on_mqtt(&mut self, event: MqttEvent) {
        match event {
            MqttEvent::Connected => {
                tracing::info!(broker = %self.config.mqtt.url, "connected to the broker");
                let id = self.config.device.id.clone();
                self.mqtt
                    .subscribe(&[self.topics.command(&id)], self.command_token);
                self.publish_status(Instant::now());
                self.participant.broker_connected(Instant::now());
                self.mqtt_connected = true;
                self.ready_if_started();
            }
            MqttEvent::Disconnected(reason) => {
                tracing::warn!(%reason, "disconnected from the broker");
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
            tracing::debug!(%topic, "message on an unexpected topic");
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
                    tracing::debug!(%topic, "message ignored");
                }
            }
        }
    }

    fn reply(&mut self, reply_to: Option<&str>, reply: Reply) {
        if !reply.ok {
            self.command_errors += 1;
        }
        let topic = reply_to
            .map(str::to_owned)
            .unwrap_or_else(|| self.topics.reply(&self.config.device.id));
        self.mqtt.publish(topic, reply.encode(), false);
    }

    fn on_command(&mut self, payload: &[u8]) {
        self.commands_received += 1;
        let command = match Command::decode(payload) {
            Ok(command) => command,
            Err(e) => {
                tracing::warn!(error = %e.error, "command refused");
                self.reply(None, Reply::for_decode_error(&e));
                return;
            }
        };
        let (request, reply_to) = match control::interpret(&command, &self.topics) {
            Ok(ok) => ok,
            Err(refusal) => {
                tracing::warn!(cmd = %command.cmd, "command refused");
                self.reply(refusal.reply_to.as_deref(), refusal.reply);
                return;
            }
        };
        tracing::info!(cmd = %command.cmd, id = %command.id, "command");
        if let Request::Snapshot(topic) = request {
            self.snapshot(topic, command.id, reply_to);
            return;
        }
        let reply = self.carry_out(request, &command.id);
        self.reply(reply_to.as_deref(), reply);
    }

    fn carry_out(&mut self, request: Request, id: &str) -> Reply {
        use crate::protocol::ErrorCode;
        match request {
            Request::Join(room) => {
                if !self.participant.mesh.can_join(&room) {
                    return Reply::error(
                        Some(id),
                        ErrorCode::Busy,
                        format!(
                            "already in {MAX_ROOMS} rooms, the most a camera joins; leave one first"
                        ),
                    );
                }
                self.participant.join(&room);
                if !self.state.rooms.contains(&room) {
                    self.state.rooms.push(room);
                }
                if let Err(e) = self.store.save(&self.state) {
                    return Reply::error(
                        Some(id),
                        ErrorCode::Internal,
                        format!("state not saved: {e}"),
                    );
                }
                self.status_dirty = true;
                Reply::ok(id, control::rooms_result(&self.participant.mesh.rooms()))
            }
            Request::Leave(room) => {
                if !self.participant.mesh.is_in(&room) {
                    return Reply::error(
                        Some(id),
                        ErrorCode::NotFound,
                        format!("not in room {room:?}"),
                    );
                }
                self.participant.leave(&room, "leaving");
                self.state.rooms.retain(|r| *r != room);
                if let Err(e) = self.store.save(&self.state) {
                    return Reply::error(
                        Some(id),
                        ErrorCode::Internal,
                        format!("state not saved: {e}"),
                    );
                }
                self.status_dirty = true;
                Reply::ok(id, control::rooms_result(&self.participant.mesh.rooms()))
            }
            Request::Status => Reply::ok(
                id,
                serde_json::to_value(self.status()).expect("status serialises"),
            ),
            Request::Stats => {
                let sample = Sample::take(Instant::now(), &self.feed.counters);
                Reply::ok(id, self.stats(&sample))
            }
            Request::Keyframe => {
                self.feed.keyframes.request();
                Reply::ok(id, json!({}))
            }
            Request::Restart => {
                self.rebuild_pipeline();
                Reply::ok(id, json!({ "restarts": self.pipeline.restarts }))
            }
            Request::Set(set) => self.set(set, id),
            Request::Snapshot(_) => unreachable!("snapshots run in their own task"),
        }
    }

    /// Applies and persists run-time settings.
    fn set(&mut self, set: control::SetRequest, id: &str) -> Reply {
        use crate::protocol::ErrorCode;
        let v = &mut self.config.video;
        let reshape = set.fps.is_some_and(|x| x != v.fps)
            || set.width.is_some_and(|x| x != v.width)
            || set.height.is_some_and(|x| x != v.height);
        let settings = &mut self.state.settings;
        if let Some(kbps) = set.bitrate_kbps {
            v.bitrate_kbps = kbps;
            settings.bitrate_kbps = Some(kbps);
        }
        if let Some(fps) = set.fps {
            v.fps = fps;
            settings.fps = Some(fps);
        }
        if let Some(width) = set.width {
            v.width = width;
            settings.width = Some(width);
        }
        if let Some(height) = set.height {
            v.height = height;
            settings.height = Some(height);
        }
        if let Some(max) = set.max_viewers {
            self.config.webrtc.max_viewers = max;
            settings.max_viewers = Some(max);
            self.participant.mesh.set_max_viewers(max);
        }
        if let Err(e) = self.store.save(&self.state) {
            return Reply::error(
                Some(id),
                ErrorCode::Internal,
                format!("state not saved: {e}"),
            );
        }
        if reshape {
            // Size and rate shape the whole pipeline: rebuild it. Viewers
            // stay connected and resume on the new pipeline's key frame.
            self.rebuild_pipeline();
        } else if let Some(kbps) = set.bitrate_kbps
            && let Some(capture) = &self.pipeline.capture
            && let Err(e) = capture.set_bitrate(kbps)
        {
            return Reply::error(Some(id), ErrorCode::Internal, format!("{e:#}"));
        }
        self.status_dirty = true;
        let v = &self.config.video;
        Reply::ok(
            id,
            json!({
                "bitrate_kbps": v.bitrate_kbps,
                "fps": v.fps,
                "width": v.width,
                "height": v.height,
                "max_viewers": self.config.webrtc.max_viewers,
            }),
        )
    }

    /// Publishes one JPEG in a task of its own; the reply comes back through
    /// `done`.
    fn snapshot(&mut self, topic: Option<String>, id: String, reply_to: Option<String>) {
        let topic = topic.unwrap_or_else(|| self.topics.snapshot(&self.config.device.id));
        let feed = self.feed.clone();
        let mqtt = self.mqtt.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = async {
                let frame =
                    crate::media::snapshot::next_keyframe(&feed, Duration::from_secs(5)).await?;
                let access_unit = frame.access_unit.clone();
                tokio::task::spawn_blocking(move || {
                    crate::media::snapshot::encode_jpeg(&access_unit)
                })
                .await?
            }
            .await;
            let reply = match result {
                Ok(jpeg) => {
                    let size = jpeg.data.len();
                    mqtt.publish(topic.clone(), jpeg.data, false);
                    Reply::ok(
                        &id,
                        json!({ "topic": topic, "bytes": size, "width": jpeg.width, "height": jpeg.height }),
                    )
                }
                Err(e) => Reply::error(
                    Some(&id),
                    crate::protocol::ErrorCode::Internal,
                    format!("{e:#}"),
                ),
            };
            let _ = done.send((reply_to, reply));
        });
    }

    fn status(&self) -> DeviceStatus {
        let v = &self.config.video;
        let mut status = DeviceStatus::offline(&self.config.device.id);
        status.state = if self.pipeline.state == "error" {
            "error"
        } else {
            "online"
        }
        .into();
        status.name = Some(self.config.device.name.clone());
        status.version = Some(env!("CARGO_PKG_VERSION").into());
        status.rooms = Some(self.participant.mesh.rooms());
        status.viewers = Some(self.participant.mesh.viewer_count());
        status.max_viewers = Some(self.participant.mesh.max_viewers());
        status.video = Some(VideoInfo {
            codec: "H264".into(),
            width: v.width,
            height: v.height,
            fps: v.fps,
        });
        status.started_at = Some(humantime::format_rfc3339_seconds(self.started_at).to_string());
        status.error = self.pipeline.error.clone();
        status
    }

    fn publish_status(&mut self, now: Instant) {
        let status = self.status();
        self.mqtt.publish(
            self.topics.status(&self.config.device.id),
            status.encode(),
            true,
        );
        self.status_dirty = false;
        self.status_sent_at = Some(now);
    }

    fn note_viewer_changes(&mut self) {
        let viewers = self.participant.mesh.viewer_count();
        if viewers != self.last_viewers {
            self.last_viewers = viewers;
            self.status_dirty = true;
        }
    }

    fn on_media(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Playing => {
                tracing::info!("pipeline playing");
                self.pipeline.state = "playing";
                self.pipeline.playing_since = Some(Instant::now());
                self.ready_if_started();
                if self.pipeline.error.take().is_some() {
                    self.status_dirty = true;
                }
            }
            MediaEvent::Error(error) => self.pipeline_failed(error),
            MediaEvent::EndOfStream => self.pipeline_failed("end of stream".into()),
        }
    }

    fn pipeline_failed(&mut self, error: String) {
        tracing::error!(%error, restarts = self.pipeline.restarts, "pipeline failed");
        if let Some(capture) = self.pipeline.capture.take() {
            capture.stop(&self.target);
        }
        let now = Instant::now();
        let p = &mut self.pipeline;
        if p.playing_since
            .take()
            .is_some_and(|since| now - since >= STABLE_RUN)
        {
            p.failures_in_row = 0;
        }
        let backoff =
            Duration::from_secs(1u64 << p.failures_in_row.min(5)).min(MAX_PIPELINE_BACKOFF);
        p.failures_in_row += 1;
        self.pipeline.state = "error";
        self.pipeline.error = Some(error);
        self.pipeline.restart_at = Some(now + backoff);
        self.status_dirty = true;
        self.ready_if_started();
    }

    /// Stops the pipeline if it runs and builds it again from the current
    /// settings; viewers keep their connections.
    fn rebuild_pipeline(&mut self) {
        if let Some(capture) = self.pipeline.capture.take() {
            capture.stop(&self.target);
        }
        self.restart_pipeline();
    }

    fn restart_pipeline(&mut self) {
        self.pipeline.restart_at = None;
        self.pipeline.restarts += 1;
        match Capture::start(
            &self.config.video,
            &VideoParams::from_config(&self.config.video),
            &self.feed,
            &self.target,
            self.media_tx.clone(),
        ) {
            Ok(capture) => {
                self.pipeline.capture = Some(capture);
                self.pipeline.state = "starting";
                self.feed.keyframes.request();
            }
            Err(e) => self.pipeline_failed(format!("{e:#}")),
        }
    }

    /// READY=1 once the broker is connected and the pipeline plays.
    /// A pipeline in error counts as started: the daemon reports it and keeps
    /// retrying, which beats systemd restarting a daemon whose camera is out.
    fn ready_if_started(&mut self) {
        let reported = matches!(self.pipeline.state, "playing" | "error");
        if self.mqtt_connected && reported && !self.service.is_ready() {
            tracing::info!("ready");
            self.service.ready();
        }
    }

    /// A playing pipeline whose frame count stopped growing is stuck.
    fn pipeline_stalled(&mut self, now: Instant) -> bool {
        let frames = self.feed.counters.frames.load(Ordering::Relaxed);
        if frames != self.progress.0 || self.pipeline.state != "playing" {
            self.progress = (frames, now);
            return false;
        }
        now >= self.progress.1 + PIPELINE_STALL
    }

    /// SIGHUP: reads the configuration again and applies what can change
    /// while running, keeping every viewer connected.
    fn reload(&mut self) {
        self.service.reloading();
        match Config::load(self.source.path.as_deref(), &self.source.overrides) {
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays")
            }
            Ok(mut new) => {
                apply_settings(&mut new, &self.state);
                self.apply_reload(new);
            }
        }
        self.service.reloaded();
    }

    fn apply_reload(&mut self, new: Config) {
        let old = &self.config;
        if new.device != old.device
            || new.mqtt != old.mqtt
            || new.webrtc.ice_servers != old.webrtc.ice_servers
            || new.webrtc.bind_address != old.webrtc.bind_address
            || new.webrtc.udp_port_min != old.webrtc.udp_port_min
            || new.webrtc.udp_port_max != old.webrtc.udp_port_max
            || new.state_dir != old.state_dir
        {
            tracing::warn!(
                "device, mqtt, state_dir and webrtc network settings change on the next restart"
            );
        }
        for room in &new.rooms {
            if !self.participant.mesh.is_in(room) {
                self.participant.join(room);
            }
        }
        for room in &old.rooms {
            if !new.rooms.contains(room) && !self.state.rooms.contains(room) {
                self.participant.leave(room, "leaving");
            }
        }
        let bitrate_only = VideoConfig {
            bitrate_kbps: old.video.bitrate_kbps,
            ..new.video.clone()
        } == old.video;
        let video_changed = new.video != old.video;
        self.participant
            .mesh
            .set_max_viewers(new.webrtc.max_viewers);
        let mut next = new;
        next.device = old.device.clone();
        next.mqtt = old.mqtt.clone();
        next.state_dir = old.state_dir.clone();
        next.webrtc = crate::config::WebrtcConfig {
            max_viewers: next.webrtc.max_viewers,
            ..old.webrtc.clone()
        };
        self.config = next;
        if video_changed && bitrate_only {
            if let Some(capture) = &self.pipeline.capture
                && let Err(e) = capture.set_bitrate(self.config.video.bitrate_kbps)
            {
                tracing::warn!(error = %e, "bitrate not changed");
            }
        } else if video_changed {
            self.rebuild_pipeline();
        }
        self.status_dirty = true;
        tracing::info!("configuration reloaded");
    }

    fn on_tick(&mut self, now: Instant) {
        self.participant.tick(now);
        if self.pipeline_stalled(now) {
            self.pipeline_failed(format!("no frame for {PIPELINE_STALL:?}"));
        }
        // The loop runs, so the daemon is alive; systemd restarts it when
        // these pings stop.
        self.service.keep_alive(now);
        if self.pipeline.restart_at.is_some_and(|at| now >= at) {
            self.restart_pipeline();
        }
        let rate_ok = self
            .status_sent_at
            .is_none_or(|at| now >= at + STATUS_MIN_INTERVAL);
        if self.status_dirty && rate_ok {
            self.publish_status(now);
        }
        if now >= self.next_stats {
            self.next_stats = now + Duration::from_secs(self.config.stats_interval_s);
            let sample = Sample::take(now, &self.feed.counters);
            let stats = self.stats(&sample);
            self.last_sample = sample;
            self.mqtt.publish(
                self.topics.stats(&self.config.device.id),
                serde_json::to_vec(&stats).expect("stats serialise"),
                false,
            );
        }
    }

    /// Telemetry, with rates since the last periodic sample.
    fn stats(&self, sample: &Sample) -> serde_json::Value {
        let now = sample.at;
        let rates = telemetry::rates(&self.last_sample, sample);
        let connections: Vec<serde_json::Value> = self
            .participant
            .mesh
            .links()
            .into_iter()
            .map(|(room, peer, link, connected)| {
                let c = self.participant.peer(link).map(|p| p.counters.clone());
                let load =
                    |f: fn(&crate::peer::SenderCounters) -> &std::sync::atomic::AtomicU64| {
                        c.as_ref()
                            .map(|c| f(c).load(Ordering::Relaxed))
                            .unwrap_or(0)
                    };
                json!({
                    "room": room,
                    "peer": peer,
                    "state": if connected { "connected" } else { "connecting" },
                    "rtt_ms": match load(|c| &c.rtt_us) {
                        0 => serde_json::Value::Null,
                        us => json!(telemetry::round1(us as f64 / 1000.0)),
                    },
                    "packets_sent": load(|c| &c.packets_sent),
                    "bytes_sent": load(|c| &c.bytes_sent),
                    "nacks": load(|c| &c.nacks),
                    "plis": load(|c| &c.keyframe_requests),
                    "frames_dropped": load(|c| &c.frames_dropped),
                })
            })
            .collect();
        let counters = &self.feed.counters;
        json!({
            "v": 1,
            "id": self.config.device.id,
            "uptime_s": now.duration_since(self.started).as_secs(),
            "cpu_percent": telemetry::round1(rates.cpu_percent),
            "rss_bytes": sample.usage.rss_bytes,
            "threads": sample.usage.threads,
            "open_fds": sample.usage.open_fds,
            "tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            "pipeline": {
                "state": self.pipeline.state,
                "fps": telemetry::round1(rates.fps),
                "bitrate_kbps": rates.bitrate_kbps.round(),
                "keyframes": counters.keyframes.load(Ordering::Relaxed),
                "restarts": self.pipeline.restarts,
            },
            "connections": connections,
            "signal": {
                "received": self.participant.signals.received,
                "dropped": self.participant.signals.dropped,
            },
            "commands": {
                "received": self.commands_received,
                "errors": self.command_errors,
            },
        })
    }

    async fn shutdown(&mut self) {
        tracing::info!("shutting down");
        self.service.stopping();
        self.participant.leave_all("shutdown");
        let id = self.config.device.id.clone();
        self.mqtt.publish(
            self.topics.status(&id),
            DeviceStatus::offline(&id).encode(),
            true,
        );
        self.mqtt.disconnect().await;
        let flushed = tokio::time::timeout(FLUSH_TIMEOUT, async {
            while self.mqtt_events.recv().await.is_some() {}
        })
        .await;
        if flushed.is_err() {
            tracing::warn!("the broker link did not flush in time");
        }
        self.keyframe_server.abort();
        if let Some(capture) = self.pipeline.capture.take() {
            capture.stop(&self.target);
        }
    }
}

/// Settings changed at run time (`set`) win over the configuration file.
fn apply_settings(config: &mut Config, state: &State) {
    let s = &state.settings;
    let v = &mut config.video;
    v.bitrate_kbps = s.bitrate_kbps.unwrap_or(v.bitrate_kbps);
    v.fps = s.fps.unwrap_or(v.fps);
    v.width = s.width.unwrap_or(v.width);
    v.height = s.height.unwrap_or(v.height);
    config.webrtc.max_viewers = s.max_viewers.unwrap_or(config.webrtc.max_viewers);
}
