//! The negotiation logic of PROTOCOL.md, sans I/O.
//!
//! [`Mesh`] knows who is in each room, which pairs need a connection, who
//! offers, which messages are stale, and when a failed pair is offered again.
//! Events go in (presences, signals, connection states, the time); [`Action`]s
//! come out for the caller to carry out. It never touches a socket, a clock or
//! a random number generator, so every rule is tested fast and exhaustively,
//! and the camera daemon and the `view` viewer share it.
//!
//! Owns: the rooms, their peers and sessions, the pair links and their
//! timers. Must not touch: topics and payload encoding (the caller's
//! [`crate::participant`]), the broker, peer connections, the clock (every
//! time is a `now` argument; [`Mesh::next_deadline`] says when to call
//! [`Mesh::on_tick`]), randomness (sessions are made by the caller).
//!
//! Every map is ordered (`BTreeMap`), so the actions for one input come out
//! in the same order on every run, ordered by room name and peer id, never
//! by hash.

mod budget;
mod link;
mod presence;
mod signals;
#[cfg(test)]
pub(crate) mod tests;
mod timers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use budget::SignalBudget;
pub use budget::{SIGNAL_BURST, SIGNALS_PER_SECOND};
use link::{Link, Restart};
pub use link::{LinkId, MAX_QUEUED_CANDIDATES};

use crate::protocol::{
    ByeReason, Presence, Role, Signal, SignalBody, TalkAction, TalkState, Watch,
};

/// After our own broker reconnect, a peer whose presence does not come back
/// within this time is treated as gone.
pub const PRESENCE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// A presence cleared while our connection with that peer is up is believed
/// this long after, unless our own broker link drops meanwhile: a broker
/// that shuts down cleanly publishes every client's will first.
pub const PRESENCE_CLEAR_GRACE: Duration = Duration::from_secs(2);
/// The longest wait between two offers to the same failed pair.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that is not up this long after it was started has failed.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(15);
/// A connection that lost ICE and is not back this long after has failed,
/// even if an ICE restart is still waiting for an answer.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Rooms one participant is in at most: each costs subscriptions, retained
/// presences and a session, and a camera in more rooms than this is a
/// mistake or an attack.
pub const MAX_ROOMS: usize = 16;

/// Who we are in every room.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: String,
    pub role: Role,
    pub name: String,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Subscribe to the room's presences and our signal inbox in ONE request,
    /// then call [`Mesh::subscribed`] once the broker acknowledges it.
    Subscribe {
        room: String,
    },
    Unsubscribe {
        room: String,
    },
    /// Publish our presence, retained.
    PublishPresence {
        room: String,
        presence: Presence,
    },
    /// Publish an empty retained payload on our presence topic.
    ClearPresence {
        room: String,
    },
    /// A viewer connected to us asks for the floor, or gives it back
    /// ([`crate::talk`] decides).
    Talk {
        link: LinkId,
        room: String,
        peer: String,
        action: TalkAction,
    },
    /// Create a peer connection; if `offerer`, create and send an offer.
    Connect {
        link: LinkId,
        room: String,
        peer: String,
        offerer: bool,
    },
    ApplyOffer {
        link: LinkId,
        sdp: String,
    },
    ApplyAnswer {
        link: LinkId,
        sdp: String,
    },
    /// `None` is end-of-candidates.
    AddCandidate {
        link: LinkId,
        candidate: Option<crate::protocol::Candidate>,
    },
    /// Offer again in the same session with new ICE credentials.
    RestartIce {
        link: LinkId,
    },
    /// Close the peer connection and free what it holds.
    Close {
        link: LinkId,
    },
    /// Publish a signal to `to` in `room`.
    Send {
        room: String,
        to: String,
        signal: Signal,
    },
}

/// Connection states the room logic acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connected,
    Disconnected,
    Failed,
    Closed,
    /// The peer answered from a new connection of its own (a new DTLS
    /// identity), which ours cannot take: offer afresh from a new one, now.
    Replaced,
}

/// Why an inbound signal was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("we are not in that room")]
    UnknownRoom,
    #[error("addressed to another peer")]
    NotForMe,
    #[error("sender is not a current peer of the room")]
    UnknownSender,
    #[error("to_session is not our current session")]
    StaleToSession,
    #[error("session is not the sender's current presence session")]
    StaleSession,
    #[error("no connection with that peer")]
    NoConnection,
    #[error("the sender may not offer to us")]
    UnexpectedOffer,
    #[error("we did not offer to the sender")]
    UnexpectedAnswer,
    #[error("too many queued candidates")]
    CandidateQueueFull,
    #[error("the sender is over its signal rate")]
    RateLimited,
    #[error("a talk step this side does not take")]
    UnexpectedTalk,
}

/// A peer present in a room.
#[derive(Debug, Clone)]
struct Peer {
    presence: Presence,
    /// The session sent or received a `bye`: never offer to it again.
    ended: bool,
    /// Set after our own reconnect until the presence comes back.
    unconfirmed_since: Option<Instant>,
    /// When its presence was cleared while our connection with it was up
    /// (see [`PRESENCE_CLEAR_GRACE`]).
    cleared_at: Option<Instant>,
    /// A failed pair waiting to be offered again, and the attempt it will be.
    retry: Option<(Instant, u32)>,
    /// The session ended with `bye "full"` (sent or received), and the
    /// pointer to an SFU it carried.
    full: Option<Option<Watch>>,
    budget: SignalBudget,
}

#[derive(Debug, Clone)]
struct Room {
    session: String,
    /// Our presence is published (after the subscription was acknowledged).
    announced: bool,
    peers: BTreeMap<String, Peer>,
    links: BTreeMap<String, Link>,
}

/// Every room we are in, and every pair connection in them.
#[derive(Debug)]
pub struct Mesh {
    me: Me,
    max_viewers: usize,
    rooms: BTreeMap<String, Room>,
    next_link: LinkId,
    /// Link id → (room, peer).
    index: BTreeMap<LinkId, (String, String)>,
    sfu: Sfu,
    /// Talking back, as our presences tell it (a camera with a speaker).
    talk: Option<TalkState>,
}

/// Where the viewers the mesh turns away watch (a camera's).
#[derive(Debug, Clone, Default)]
struct Sfu {
    /// Given with every `bye "full"`.
    pointer: Option<Watch>,
    /// The camera publishes there now: its presences carry the pointer.
    publishing: bool,
}

/// Which side offers between us and a peer; `None` when no connection is made.
pub fn offerer_is_me(me: &Me, peer: &Presence) -> Option<bool> {
    match (me.role, peer.role) {
        (Role::Camera, Role::Camera) => None,
        (Role::Camera, Role::Viewer) => Some(true),
        (Role::Viewer, Role::Camera) => Some(false),
        (Role::Viewer, Role::Viewer) => Some(me.id.as_bytes() < peer.id.as_bytes()),
    }
}

/// The wait before offering again after `attempt` failures in a row:
/// 1 s, 2 s, 4 s, … capped at 30 s.
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(MAX_RETRY_BACKOFF)
}

impl Mesh {
    pub fn new(me: Me, max_viewers: usize) -> Self {
        Self {
            me,
            max_viewers,
            rooms: BTreeMap::new(),
            next_link: 1,
            index: BTreeMap::new(),
            sfu: Sfu::default(),
            talk: None,
        }
    }

    pub fn me(&self) -> &Me {
        &self.me
    }

    pub fn rooms(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_in(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Whether joining `room` stays within [`MAX_ROOMS`] (a room we are in
    /// already is no new one).
    pub fn can_join(&self, room: &str) -> bool {
        self.is_in(room) || self.rooms.len() < MAX_ROOMS
    }

    pub fn session(&self, room: &str) -> Option<&str> {
        self.rooms.get(room).map(|r| r.session.as_str())
    }

    pub fn set_max_viewers(&mut self, max: usize) {
        self.max_viewers = max;
    }

    pub fn max_viewers(&self) -> usize {
        self.max_viewers
    }

    /// Connections held with viewers, all rooms together.
    pub fn viewer_count(&self) -> usize {
        self.rooms
            .values()
            .flat_map(|r| r.links.values())
            .filter(|l| l.created && l.role == Role::Viewer)
            .count()
    }

    /// `(room, peer, connected)` of every link, for telemetry and tests.
    pub fn links(&self) -> Vec<(String, String, LinkId, bool)> {
        self.rooms
            .iter()
            .flat_map(|(room, r)| {
                r.links
                    .iter()
                    .map(move |(peer, l)| (room.clone(), peer.clone(), l.id, l.connected))
            })
            .collect()
    }

    /// Where a link stands: `(room, peer)`.
    pub fn link_peer(&self, link: LinkId) -> Option<(&str, &str)> {
        self.index
            .get(&link)
            .map(|(room, peer)| (room.as_str(), peer.as_str()))
    }

    fn presence_of(&self, room: &str) -> Option<Presence> {
        self.rooms.get(room).map(|r| Presence {
            watch: self.presence_watch(),
            talk: self.talk.clone(),
            ..Presence::new(&self.me.id, &r.session, self.me.role, &self.me.name)
        })
    }

    /// Where viewers turned away watch (`pointer`, given with every
    /// `bye "full"`), and whether the stream is there now (then our
    /// presences carry the pointer too, published again when it changes).
    pub fn set_sfu(&mut self, pointer: Option<Watch>, publishing: bool) -> Vec<Action> {
        let before = self.presence_watch();
        self.sfu = Sfu {
            pointer,
            publishing,
        };
        if self.presence_watch() == before {
            return Vec::new();
        }
        self.publish_presences()
    }

    /// Whether viewers may talk through us, and who does: our presences
    /// tell every viewer of every room, published again when it changes.
    pub fn set_talk(&mut self, talk: Option<TalkState>) -> Vec<Action> {
        if self.talk == talk {
            return Vec::new();
        }
        self.talk = talk;
        self.publish_presences()
    }

    /// The name `peer` of `room` gave in its presence.
    pub fn peer_name(&self, room: &str, peer: &str) -> Option<&str> {
        Some(&self.rooms.get(room)?.peers.get(peer)?.presence.name)
    }

    /// Our presence again in every room we are announced in.
    fn publish_presences(&self) -> Vec<Action> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.announced)
            .filter_map(|(room, _)| {
                let presence = self.presence_of(room)?;
                Some(Action::PublishPresence {
                    room: room.clone(),
                    presence,
                })
            })
            .collect()
    }

    fn presence_watch(&self) -> Option<Watch> {
        self.sfu.pointer.clone().filter(|_| self.sfu.publishing)
    }

    /// Viewers present whose session we ended with `bye "full"`, all rooms
    /// together: the demand for the SFU.
    pub fn overflow_count(&self) -> usize {
        self.rooms
            .values()
            .flat_map(|r| r.peers.values())
            .filter(|p| p.presence.role == Role::Viewer && p.full.is_some())
            .count()
    }

    /// A viewer's: where the camera that turned us away (`bye "full"`)
    /// says to watch instead, from its `bye` or its presence since.
    pub fn sfu_pointer(&self) -> Option<(&str, &Watch)> {
        self.rooms
            .values()
            .flat_map(|r| r.peers.iter())
            .find_map(|(id, p)| {
                let full = p.full.as_ref()?;
                let watch = p.presence.watch.as_ref().or(full.as_ref())?;
                Some((id.as_str(), watch))
            })
    }

    /// Joins a room with a fresh `session` (made by the caller).
    pub fn join(&mut self, room: &str, session: &str) -> Vec<Action> {
        if self.rooms.contains_key(room) {
            return Vec::new();
        }
        self.rooms.insert(
            room.to_owned(),
            Room {
                session: session.to_owned(),
                announced: false,
                peers: BTreeMap::new(),
                links: BTreeMap::new(),
            },
        );
        vec![Action::Subscribe {
            room: room.to_owned(),
        }]
    }

    /// Leaves a room: `bye` to every connected peer, close, clear presence.
    pub fn leave(&mut self, room: &str, reason: &str) -> Vec<Action> {
        let Some(r) = self.rooms.remove(room) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for (peer, link) in r.links {
            self.index.remove(&link.id);
            actions.push(Action::Send {
                room: room.to_owned(),
                to: peer.clone(),
                signal: Signal::new(
                    &r.session,
                    &link.remote_session,
                    SignalBody::Bye {
                        reason: ByeReason::Said(reason.to_owned()),
                        watch: None,
                    },
                ),
            });
            if link.created {
                actions.push(Action::Close { link: link.id });
            }
        }
        actions.push(Action::ClearPresence {
            room: room.to_owned(),
        });
        actions.push(Action::Unsubscribe {
            room: room.to_owned(),
        });
        actions
    }

    /// Leaves every room (on shutdown); the caller keeps the list for restart.
    pub fn leave_all(&mut self, reason: &str) -> Vec<Action> {
        self.rooms()
            .iter()
            .flat_map(|room| self.leave(room, reason))
            .collect()
    }

    /// Forgets a peer that left, closing the connection we held with it.
    fn forget_peer(&mut self, room: &str, peer: &str) -> Vec<Action> {
        if let Some(r) = self.rooms.get_mut(room) {
            r.peers.remove(peer);
        }
        self.drop_link(room, peer)
    }

    /// Removes a pair's link, closing its connection.
    fn drop_link(&mut self, room: &str, peer: &str) -> Vec<Action> {
        let Some(link) = self.rooms.get_mut(room).and_then(|r| r.links.remove(peer)) else {
            return Vec::new();
        };
        self.index.remove(&link.id);
        if link.created {
            vec![Action::Close { link: link.id }]
        } else {
            Vec::new()
        }
    }

    fn new_link(&mut self, room: &str, peer: &str, offerer: bool, attempt: u32) -> &mut Link {
        let id = self.next_link;
        self.next_link += 1;
        self.index.insert(id, (room.to_owned(), peer.to_owned()));
        let r = self.rooms.get_mut(room).expect("caller checked the room");
        let presence = &r.peers[peer].presence;
        let link = Link::new(id, &presence.session, presence.role, offerer, attempt);
        r.links.insert(peer.to_owned(), link);
        r.links.get_mut(peer).expect("just inserted")
    }

    /// Offers to `peer` if we are the offerer, are announced, hold nothing
    /// with it, and its session has not ended; `bye "full"` when at capacity.
    fn offer_if_needed(&mut self, room: &str, peer: &str, now: Instant) -> Vec<Action> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let Some(p) = r.peers.get(peer) else {
            return Vec::new();
        };
        if !r.announced || p.ended || p.retry.is_some() || r.links.contains_key(peer) {
            return Vec::new();
        }
        if offerer_is_me(&self.me, &p.presence) != Some(true) {
            return Vec::new();
        }
        let role = p.presence.role;
        if role == Role::Viewer && self.viewer_count() >= self.max_viewers {
            return self
                .end_session(room, peer, ByeReason::Full)
                .into_iter()
                .collect();
        }
        self.connect(room, peer, true, 0, now)
    }

    /// Ends our part in `peer`'s session: `bye` with `reason`, and no offer
    /// to that session again. The peer may come back with a new session.
    fn end_session(&mut self, room: &str, peer: &str, reason: ByeReason) -> Option<Action> {
        let r = self.rooms.get_mut(room)?;
        let p = r.peers.get_mut(peer)?;
        p.ended = true;
        p.retry = None;
        let watch = if reason == ByeReason::Full {
            p.full = Some(self.sfu.pointer.clone());
            self.sfu.pointer.clone()
        } else {
            None
        };
        let signal = Signal::new(
            &r.session,
            &p.presence.session,
            SignalBody::Bye { reason, watch },
        );
        Some(Action::Send {
            room: room.to_owned(),
            to: peer.to_owned(),
            signal,
        })
    }

    fn connect(
        &mut self,
        room: &str,
        peer: &str,
        offerer: bool,
        attempt: u32,
        now: Instant,
    ) -> Vec<Action> {
        let link = self.new_link(room, peer, offerer, attempt);
        link.created = true;
        link.deadline = Some(now + NEGOTIATION_TIMEOUT);
        vec![Action::Connect {
            link: link.id,
            room: room.to_owned(),
            peer: peer.to_owned(),
            offerer,
        }]
    }
}
