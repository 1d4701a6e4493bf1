//! A participant in rooms: the sans-I/O [`Mesh`] wired to the broker and to
//! peer connections. The camera daemon and the `view` viewer are both
//! participants; they differ in their role and in what they do with media.
//!
//! Everything here runs on the caller's supervisor loop and never waits:
//! publishes are queued, peers are commanded over channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::media::VideoFeed;
use crate::mqtt::MqttLink;
use crate::peer::{self, PeerCommand, PeerEvent, PeerFactory, PeerHandle, PeerSpec};
use crate::protocol::{
    DeviceStatus, Presence, Role, Signal, SignalBody, Topic, Topics, encode_presence, ids,
};
use crate::room::{Action, LinkId, Me, Mesh};

/// Counters of inbound signaling, for telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SignalCounters {
    pub received: u64,
    pub dropped: u64,
}

/// Drops logged one by one; after them, one in every `DROP_LOG_EVERY`, so
/// a flood fills the counters, not the journal.
const DROP_LOG_FIRST: u64 = 100;
const DROP_LOG_EVERY: u64 = 1000;

impl SignalCounters {
    /// Counts a dropped message; the count so far when this one should be
    /// logged.
    fn drop_one(&mut self) -> Option<u64> {
        self.dropped += 1;
        (self.dropped <= DROP_LOG_FIRST || self.dropped.is_multiple_of(DROP_LOG_EVERY))
            .then_some(self.dropped)
    }
}

pub struct Participant {
    pub mesh: Mesh,
    topics: Topics,
    mqtt: MqttLink,
    factory: Arc<PeerFactory>,
    /// The frames to send, for a camera.
    video: Option<VideoFeed>,
    /// Running peers, with their room and peer id for the logs.
    peers: HashMap<LinkId, (String, String, PeerHandle)>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
    connected: bool,
    /// Subscription tokens of rooms waiting for their SUBACK.
    pending_subscriptions: HashMap<u64, String>,
    next_token: u64,
    pub signals: SignalCounters,
    /// Also watch device statuses (viewers do, to see cameras go offline).
    watch_devices: bool,
}

impl Participant {
    pub fn new(
        me: Me,
        max_viewers: usize,
        topics: Topics,
        mqtt: MqttLink,
        factory: Arc<PeerFactory>,
        video: Option<VideoFeed>,
        peer_events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Self {
        let watch_devices = me.role == Role::Viewer;
        Self {
            mesh: Mesh::new(me, max_viewers),
            topics,
            mqtt,
            factory,
            video,
            peers: HashMap::new(),
            peer_events,
            connected: false,
            pending_subscriptions: HashMap::new(),
            next_token: 1,
            signals: SignalCounters::default(),
            watch_devices,
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn peer(&self, link: LinkId) -> Option<&PeerHandle> {
        self.peers.get(&link).map(|(_, _, handle)| handle)
    }

    /// A token for a subscription that is not a room's (the caller's own).
    pub fn subscription_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    pub fn join(&mut self, room: &str) {
        let actions = self.mesh.join(room, &ids::new_session());
        self.execute(actions);
    }

    pub fn leave(&mut self, room: &str, reason: &str) {
        let actions = self.mesh.leave(room, reason);
        self.execute(actions);
    }

    /// Leaves every room, saying `reason` to every peer.
    pub fn leave_all(&mut self, reason: &str) {
        let actions = self.mesh.leave_all(reason);
        self.execute(actions);
    }

    pub fn broker_connected(&mut self, now: Instant) {
        self.connected = true;
        self.pending_subscriptions.clear();
        let actions = self.mesh.broker_connected(now);
        self.execute(actions);
    }

    pub fn broker_disconnected(&mut self) {
        self.connected = false;
        self.mesh.broker_disconnected();
    }

    /// A SUBACK arrived; returns whether the token was a room's.
    pub fn subscribed(&mut self, token: u64) -> bool {
        let Some(room) = self.pending_subscriptions.remove(&token) else {
            return false;
        };
        let actions = self.mesh.subscribed(&room, Instant::now());
        self.execute(actions);
        true
    }

    pub fn tick(&mut self, now: Instant) {
        let actions = self.mesh.on_tick(now);
        self.execute(actions);
    }

    /// A room or device-status message. Returns `false` if the topic is not
    /// one of ours.
    pub fn on_message(&mut self, topic: &Topic, payload: &Bytes) -> bool {
        match topic {
            Topic::Presence { room, peer } => {
                match Presence::decode(payload, peer) {
                    Ok(presence) => {
                        let actions = self.mesh.on_presence(room, peer, presence, Instant::now());
                        self.execute(actions);
                    }
                    Err(e) => {
                        if let Some(dropped) = self.signals.drop_one() {
                            tracing::warn!(%room, %peer, error = %e, dropped, "presence dropped");
                        }
                    }
                }
                true
            }
            Topic::Signal { room, to, from } => {
                self.signals.received += 1;
                let signal = match Signal::decode(payload) {
                    Ok(signal) => signal,
                    Err(e) => {
                        if let Some(dropped) = self.signals.drop_one() {
                            tracing::warn!(%room, %from, error = %e, dropped, "signal dropped");
                        }
                        return true;
                    }
                };
                let kind = signal.body.kind();
                match self.mesh.on_signal(room, to, from, signal, Instant::now()) {
                    Ok(actions) => self.execute(actions),
                    Err(reason) => {
                        if let Some(dropped) = self.signals.drop_one() {
                            tracing::info!(%room, %from, kind, %reason, dropped, "signal dropped");
                        }
                    }
                }
                true
            }
            Topic::DeviceStatus { device } if self.watch_devices => {
                if let Ok(status) = DeviceStatus::decode(payload, device)
                    && status.state == "offline"
                {
                    let actions = self.mesh.on_device_offline(device);
                    self.execute(actions);
                }
                true
            }
            _ => false,
        }
    }

    /// Handles a peer's event; returns the events the caller must see itself
    /// (remote tracks and key-frame requests).
    pub fn on_peer_event(&mut self, event: PeerEvent, now: Instant) -> Option<PeerEvent> {
        match event {
            PeerEvent::Signal(link, body) => {
                if let Some(action) = self.mesh.outgoing(link, body) {
                    self.execute(vec![action]);
                }
                None
            }
            PeerEvent::State(link, state) => {
                tracing::info!(link, ?state, peer = ?self.mesh.link_peer(link), "connection state");
                let actions = self.mesh.on_link_state(link, state, now);
                self.execute(actions);
                None
            }
            PeerEvent::Error(link, error) => {
                tracing::warn!(link, %error, "peer connection failed");
                let actions = self
                    .mesh
                    .on_link_state(link, crate::room::LinkState::Failed, now);
                self.execute(actions);
                None
            }
            PeerEvent::Incompatible(link, reason) => {
                if let Some((room, peer)) = self.mesh.link_peer(link) {
                    tracing::warn!(link, %room, %peer, %reason, "the viewer cannot receive this camera's video");
                }
                let actions = self.mesh.refuse(link, &reason);
                self.execute(actions);
                None
            }
            other => Some(other),
        }
    }

    /// Carries out the room logic's decisions.
    pub fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.execute_one(action);
        }
    }

    fn execute_one(&mut self, action: Action) {
        let me = self.mesh.me().id.clone();
        match action {
            Action::Subscribe { room } => {
                if !self.connected {
                    return; // Done on connect, for every room.
                }
                let mut filters = vec![
                    self.topics.room_presences(&room),
                    self.topics.signals_to(&room, &me),
                ];
                if self.watch_devices {
                    filters.push(self.topics.all_statuses());
                }
                let token = self.subscription_token();
                self.pending_subscriptions.insert(token, room);
                self.mqtt.subscribe(&filters, token);
            }
            Action::Unsubscribe { room } => {
                self.mqtt.unsubscribe(&self.topics.room_presences(&room));
                self.mqtt.unsubscribe(&self.topics.signals_to(&room, &me));
            }
            Action::PublishPresence { room, presence } => {
                self.mqtt.publish(
                    self.topics.presence(&room, &me),
                    encode_presence(&presence),
                    true,
                );
            }
            Action::ClearPresence { room } => {
                self.mqtt
                    .publish(self.topics.presence(&room, &me), Vec::new(), true);
            }
            Action::Connect {
                link,
                room,
                peer,
                offerer,
                ..
            } => {
                tracing::info!(link, %room, %peer, offerer, "connecting");
                let spec = PeerSpec {
                    link,
                    offerer,
                    video: self.video.clone(),
                };
                let handle = peer::spawn(self.factory.clone(), spec, self.peer_events.clone());
                self.peers.insert(link, (room, peer, handle));
            }
            Action::ApplyOffer { link, sdp } => self.command(link, PeerCommand::ApplyOffer(sdp)),
            Action::ApplyAnswer { link, sdp } => self.command(link, PeerCommand::ApplyAnswer(sdp)),
            Action::AddCandidate { link, candidate } => {
                self.command(link, PeerCommand::AddCandidate(candidate))
            }
            Action::RestartIce { link } => self.command(link, PeerCommand::RestartIce),
            Action::Close { link } => {
                if let Some((room, peer, handle)) = self.peers.remove(&link) {
                    tracing::info!(link, %room, %peer, "closing connection");
                    handle.close();
                }
            }
            Action::Send { room, to, signal } => {
                if let SignalBody::Bye { reason } = &signal.body {
                    tracing::info!(%room, %to, %reason, "bye");
                }
                self.mqtt
                    .publish(self.topics.signal(&room, &to, &me), signal.encode(), false);
            }
        }
    }

    fn command(&self, link: LinkId, command: PeerCommand) {
        if let Some((_, _, handle)) = self.peers.get(&link) {
            handle.send(command);
        }
    }
}
