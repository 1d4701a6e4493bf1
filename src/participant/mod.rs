//! A participant in rooms: the sans-I/O [`Mesh`] wired to topics, payloads
//! and peer connections. The camera daemon and the `view` viewer are both
//! participants; they differ in their role and in what they do with media.
//!
//! Inputs go in as calls — broker (dis)connections, acknowledged
//! subscriptions, room messages, peer events, the time — and every one that
//! depends on time takes it as a `now` argument. What must happen outside
//! comes out as [`Effect`]s, handed to the participant's [`Effects`]: in the
//! daemon and the viewer that is [`Live`], which publishes on the broker
//! session and runs the peer connections; in tests it is a `Vec<Effect>`.
//! [`Participant::next_deadline`] says when [`Participant::tick`] has
//! something to do.
//!
//! Owns: the mapping from the room logic's actions to topics, payloads and
//! peer commands; the subscription tokens of rooms; the links with a running
//! peer connection; the counters of inbound signaling. Must not touch: the
//! negotiation rules (they are [`crate::room`]'s), the clock, the broker
//! session or a peer connection directly (only through [`Effects`]), media,
//! commands, status and telemetry (the daemon's).
//!
//! Nothing here waits: effects are carried out without blocking (publishes
//! are queued, peers are commanded over channels).

mod live;
pub use live::sleep_until;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use live::Live;

use crate::mqtt::MqttLink;
use crate::peer::{Outgoing, PeerCommand, PeerEvent, PeerFactory, PeerHandle};
use crate::protocol::{
    DeviceStatus, Presence, Role, Signal, SignalBody, Topic, Topics, encode_presence, ids,
};
use crate::room::{Action, LinkId, LinkState, Me, Mesh};

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

/// What a participant needs done outside itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish at QoS 1.
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Subscribe to every filter in ONE request; call
    /// [`Participant::subscribed`] with `token` once the broker acknowledges
    /// it.
    Subscribe {
        filters: Vec<String>,
        token: u64,
    },
    Unsubscribe {
        filter: String,
    },
    /// Start a peer connection for `link` and report its events as
    /// [`PeerEvent`]s; an offerer creates and reports its offer.
    OpenPeer {
        link: LinkId,
        offerer: bool,
    },
    /// Hand a command to the link's peer connection.
    Command {
        link: LinkId,
        command: PeerCommand,
    },
    /// Close the link's peer connection and free what it holds.
    ClosePeer {
        link: LinkId,
    },
}

/// Carries out [`Effect`]s, in the order given, without waiting.
pub trait Effects {
    fn apply(&mut self, effect: Effect);
}

/// Effects collected in memory, to look at (tests) or carry out later.
impl Effects for Vec<Effect> {
    fn apply(&mut self, effect: Effect) {
        self.push(effect);
    }
}

pub struct Participant<E = Live> {
    pub mesh: Mesh,
    topics: Topics,
    effects: E,
    /// Links with a running peer connection: their room and peer id.
    open: BTreeMap<LinkId, (String, String)>,
    connected: bool,
    /// Subscription tokens of rooms waiting for their SUBACK.
    pending_subscriptions: BTreeMap<u64, String>,
    next_token: u64,
    pub signals: SignalCounters,
    /// Also watch device statuses (viewers do, to see cameras go offline).
    watch_devices: bool,
    /// `talk` requests and releases from viewers, for the floor.
    talk: Vec<TalkStep>,
}

/// A viewer's `talk` request or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TalkStep {
    pub link: LinkId,
    pub room: String,
    pub peer: String,
    pub action: crate::protocol::TalkAction,
}

impl Participant<Live> {
    /// A participant that publishes on `mqtt` and runs its peer connections
    /// from `factory`, sending `video` when it has some; peers report on
    /// `peer_events`.
    pub fn new(
        me: Me,
        max_viewers: usize,
        topics: Topics,
        mqtt: MqttLink,
        factory: Arc<PeerFactory>,
        media: Option<Outgoing>,
        peer_events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Self {
        let live = Live::new(mqtt, factory, media, peer_events);
        Self::with_effects(me, max_viewers, topics, live)
    }

    pub fn peer(&self, link: LinkId) -> Option<&PeerHandle> {
        self.effects.peer(link)
    }

    /// See [`Live::pin_all`].
    pub fn pin_all(&mut self, layer: Option<usize>) {
        self.effects.pin_all(layer);
    }
}

impl<E: Effects> Participant<E> {
    pub fn with_effects(me: Me, max_viewers: usize, topics: Topics, effects: E) -> Self {
        let watch_devices = me.role == Role::Viewer;
        Self {
            mesh: Mesh::new(me, max_viewers),
            topics,
            effects,
            open: BTreeMap::new(),
            connected: false,
            pending_subscriptions: BTreeMap::new(),
            next_token: 1,
            signals: SignalCounters::default(),
            watch_devices,
            talk: Vec::new(),
        }
    }

    /// The `talk` steps viewers took since the last call.
    pub fn take_talk(&mut self) -> Vec<TalkStep> {
        std::mem::take(&mut self.talk)
    }

    /// Sends `body` to `peer` of `room`, on the pair's current sessions;
    /// nothing without a connection to it.
    pub fn signal(&mut self, room: &str, peer: &str, body: SignalBody) {
        if let Some(action) = self.mesh.signal_to(room, peer, body) {
            self.execute(vec![action]);
        }
    }

    /// Hands `command` to the connection of `link`, if it runs.
    pub fn command_link(&mut self, link: LinkId, command: PeerCommand) {
        self.command(link, command);
    }

    /// A token for a subscription that is not a room's (the caller's own).
    pub fn subscription_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Joins `room` with a new random session.
    pub fn join(&mut self, room: &str) {
        let actions = self.mesh.join(room, &ids::new_session());
        self.execute(actions);
    }

    pub fn leave(&mut self, room: &str, reason: &str) {
        let actions = self.mesh.leave(room, reason);
        self.execute(actions);
    }

    /// See [`Mesh::set_sfu`].
    pub fn set_sfu(&mut self, pointer: Option<crate::protocol::Watch>, publishing: bool) {
        let actions = self.mesh.set_sfu(pointer, publishing);
        self.execute(actions);
    }

    /// See [`Mesh::set_talk`].
    pub fn set_talk(&mut self, talk: Option<crate::protocol::TalkState>) {
        let actions = self.mesh.set_talk(talk);
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
    pub fn subscribed(&mut self, token: u64, now: Instant) -> bool {
        let Some(room) = self.pending_subscriptions.remove(&token) else {
            return false;
        };
        let actions = self.mesh.subscribed(&room, now);
        self.execute(actions);
        true
    }

    /// The earliest time [`Participant::tick`] has something to do; `None`
    /// while nothing is timed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.mesh.next_deadline()
    }

    /// Time passed: whatever was due by `now` is done. Calling it early or
    /// often is harmless.
    pub fn tick(&mut self, now: Instant) {
        let actions = self.mesh.on_tick(now);
        self.execute(actions);
    }

    /// A room or device-status message, received at `now`. Returns `false`
    /// if the topic is not one of ours.
    pub fn on_message(&mut self, topic: &Topic, payload: &Bytes, now: Instant) -> bool {
        match topic {
            Topic::Presence { room, peer } => {
                match Presence::decode(payload, peer) {
                    Ok(presence) => {
                        let actions = self.mesh.on_presence(room, peer, presence, now);
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
                match self.mesh.on_signal(room, to, from, signal, now) {
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

    /// Handles a peer's event, seen at `now`; returns the events the caller
    /// must see itself (remote tracks and key-frame requests).
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
                let actions = self.mesh.on_link_state(link, LinkState::Failed, now);
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
    fn execute(&mut self, actions: Vec<Action>) {
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
                self.effects.apply(Effect::Subscribe { filters, token });
            }
            Action::Unsubscribe { room } => {
                for filter in [
                    self.topics.room_presences(&room),
                    self.topics.signals_to(&room, &me),
                ] {
                    self.effects.apply(Effect::Unsubscribe { filter });
                }
            }
            Action::PublishPresence { room, presence } => {
                self.publish(
                    self.topics.presence(&room, &me),
                    encode_presence(&presence),
                    true,
                );
            }
            Action::ClearPresence { room } => {
                self.publish(self.topics.presence(&room, &me), Vec::new(), true);
            }
            Action::Connect {
                link,
                room,
                peer,
                offerer,
            } => {
                tracing::info!(link, %room, %peer, offerer, "connecting");
                self.open.insert(link, (room, peer));
                self.effects.apply(Effect::OpenPeer { link, offerer });
            }
            Action::Talk {
                link,
                room,
                peer,
                action,
            } => self.talk.push(TalkStep {
                link,
                room,
                peer,
                action,
            }),
            Action::ApplyOffer { link, sdp } => self.command(link, PeerCommand::ApplyOffer(sdp)),
            Action::ApplyAnswer { link, sdp } => self.command(link, PeerCommand::ApplyAnswer(sdp)),
            Action::AddCandidate { link, candidate } => {
                self.command(link, PeerCommand::AddCandidate(candidate))
            }
            Action::RestartIce { link } => self.command(link, PeerCommand::RestartIce),
            Action::Close { link } => {
                if let Some((room, peer)) = self.open.remove(&link) {
                    tracing::info!(link, %room, %peer, "closing connection");
                    self.effects.apply(Effect::ClosePeer { link });
                }
            }
            Action::Send { room, to, signal } => {
                if let SignalBody::Bye { reason, .. } = &signal.body {
                    tracing::info!(%room, %to, %reason, "bye");
                }
                self.publish(self.topics.signal(&room, &to, &me), signal.encode(), false);
            }
        }
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.effects.apply(Effect::Publish {
            topic,
            payload,
            retain,
        });
    }

    /// A command for a running peer connection; none for a link without one.
    fn command(&mut self, link: LinkId, command: PeerCommand) {
        if self.open.contains_key(&link) {
            self.effects.apply(Effect::Command { link, command });
        }
    }
}
