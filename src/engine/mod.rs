//! The camera's connections, driven by meshcam itself.
//!
//! The `webrtc` crate wraps each connection of its sans-I/O core (`rtc`) in
//! tasks, channels and timers: per packet and viewer two tasks, six locks
//! and a system call. The engine drives the same core directly, as str0m
//! is driven: time and datagrams in, datagrams, events and one deadline
//! out, no locks and no task per packet. What the core cannot decide for
//! itself is decided here:
//!
//! - which connection a datagram belongs to ([`route`]), since all of them
//!   share the engine's sockets;
//! - what comes before ICE has selected a pair, which the core would drop
//!   ([`early`]);
//! - how what leaves is gathered for the kernel: one run per connection and
//!   destination, one GSO send each ([`transmit`]).
//!
//! The I/O around it (sockets, `recvmmsg`, the wake per encoded frame)
//! only moves bytes and time in and out.

pub mod early;
pub mod gather;
pub mod host;
pub mod route;
pub mod transmit;
pub mod udp;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::TaggedRTCMessage;
use rtc::peer_connection::state::RTCIceConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use early::EarlyDatagrams;
use route::{Kind, Routes};
pub use transmit::Transmit;
use transmit::Transmits;

/// A connection of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(u64);

/// What the engine has counted, for telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounters {
    /// Datagrams that belonged to no connection.
    pub unrouted: u64,
    /// Datagrams held because they came before ICE connected, and of
    /// those, the ones let go because more came.
    pub early_held: u64,
    pub early_dropped: u64,
    /// Datagrams a connection's core refused.
    pub refused: u64,
}

struct Connection {
    core: RTCPeerConnection,
    /// Until ICE first connects: what came early.
    early: Option<EarlyDatagrams>,
}

/// The connections, and what they have for the I/O loop.
#[derive(Default)]
pub struct Engine {
    connections: BTreeMap<ConnectionId, Connection>,
    routes: Routes<ConnectionId>,
    transmits: Transmits,
    events: VecDeque<(ConnectionId, RTCPeerConnectionEvent)>,
    reads: VecDeque<(ConnectionId, TaggedRTCMessage)>,
    next: u64,
    counters: EngineCounters,
}

impl Engine {
    /// Takes a connection's core: from now on its datagrams come and go
    /// through the engine.
    pub fn insert(&mut self, now: Instant, core: RTCPeerConnection) -> ConnectionId {
        let id = ConnectionId(self.next);
        self.next += 1;
        self.connections.insert(
            id,
            Connection {
                core,
                early: Some(EarlyDatagrams::default()),
            },
        );
        self.settle(id, now);
        self.refresh_ufrag(id);
        id
    }

    /// Runs `f` on a connection's core (signaling: descriptions,
    /// candidates, an ICE restart), then takes what it has to send.
    pub fn with<R>(
        &mut self,
        id: ConnectionId,
        now: Instant,
        f: impl FnOnce(&mut RTCPeerConnection) -> R,
    ) -> Option<R> {
        let result = self.media(id, now, f)?;
        self.refresh_ufrag(id);
        Some(result)
    }

    /// After signaling: the local ufrag may be new (an ICE restart).
    fn refresh_ufrag(&mut self, id: ConnectionId) {
        if let Some(ufrag) = self.connections.get(&id).and_then(|c| local_ufrag(&c.core)) {
            self.routes.set_ufrag(id, &ufrag);
        }
    }

    /// Runs `f` on a connection's core to send media (its RTP senders),
    /// then takes what it has to send. Unlike [`Engine::with`] this looks
    /// at no signaling: it is the path of every packet.
    pub fn media<R>(
        &mut self,
        id: ConnectionId,
        now: Instant,
        f: impl FnOnce(&mut RTCPeerConnection) -> R,
    ) -> Option<R> {
        let result = f(&mut self.connections.get_mut(&id)?.core);
        self.settle(id, now);
        Some(result)
    }

    /// Closes a connection: what the close sends (DTLS `close_notify`) is
    /// queued, and its datagrams belong to nobody from now on.
    pub fn close(&mut self, id: ConnectionId, now: Instant) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        if let Err(e) = connection.core.close() {
            tracing::debug!(error = %e, "closing a connection");
        }
        self.settle(id, now);
        self.connections.remove(&id);
        self.routes.remove(id);
    }

    /// A datagram that came from `remote` to the engine's socket at `local`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(id) = self.routes.route(local, remote, datagram) else {
            self.counters.unrouted += 1;
            return;
        };
        let Some(connection) = self.connections.get_mut(&id) else {
            self.counters.unrouted += 1;
            return;
        };
        if route::kind(datagram) != Kind::Stun
            && let Some(early) = &mut connection.early
        {
            early.hold(local, remote, datagram);
            self.counters.early_held += 1;
            return;
        }
        feed(
            &mut connection.core,
            now,
            local,
            remote,
            datagram,
            &mut self.counters,
        );
        self.settle(id, now);
    }

    /// Time has come to `now`: every connection whose deadline passed acts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnectionId> = self
            .connections
            .iter_mut()
            .filter_map(|(id, c)| {
                c.core
                    .poll_timeout()
                    .is_some_and(|at| at <= now)
                    .then_some(*id)
            })
            .collect();
        for id in due {
            if let Some(connection) = self.connections.get_mut(&id)
                && let Err(e) = connection.core.handle_timeout(now)
            {
                tracing::debug!(error = %e, "a connection's timer");
            }
            self.settle(id, now);
        }
    }

    /// The earliest deadline of all connections, asked of each core every
    /// time. A deadline kept from the connection's last settle looked
    /// equivalent and saved about 1 % of the loop, yet with it Chromium's
    /// climb back after a narrowing (tests/narrowing.rs) failed twice in a
    /// clean Debian root and passed once it was asked again.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.connections
            .values_mut()
            .filter_map(|c| c.core.poll_timeout())
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop()
    }

    pub fn poll_event(&mut self) -> Option<(ConnectionId, RTCPeerConnectionEvent)> {
        self.events.pop_front()
    }

    /// What a connection received: RTCP (PLIs, NACKs, reports) and media.
    pub fn poll_read(&mut self) -> Option<(ConnectionId, TaggedRTCMessage)> {
        self.reads.pop_front()
    }

    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// Takes everything a connection has for the outside, and feeds it
    /// what it held back once its ICE connects.
    fn settle(&mut self, id: ConnectionId, now: Instant) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        loop {
            while let Some(out) = connection.core.poll_write() {
                let (local, remote) = (out.transport.local_addr, out.transport.peer_addr);
                self.routes.sent(id, local, remote);
                self.transmits.push(local, remote, &out.message);
            }
            let mut connected = false;
            while let Some(event) = connection.core.poll_event() {
                connected |= matches!(
                    event,
                    RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                        RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                    )
                );
                self.events.push_back((id, event));
            }
            while let Some(read) = connection.core.poll_read() {
                self.reads.push_back((id, read));
            }
            let Some(early) = connected.then(|| connection.early.take()).flatten() else {
                break;
            };
            self.counters.early_dropped += early.dropped;
            for held in early.release() {
                feed(
                    &mut connection.core,
                    now,
                    held.local,
                    held.remote,
                    &held.datagram,
                    &mut self.counters,
                );
            }
        }
    }
}

fn feed(
    core: &mut RTCPeerConnection,
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    datagram: &[u8],
    counters: &mut EngineCounters,
) {
    if let Err(e) = core.handle_read(received(now, local, remote, datagram)) {
        counters.refused += 1;
        tracing::debug!(error = %e, %remote, "a datagram refused");
    }
}

/// A UDP datagram that came from `remote` to `local`, as the core takes it.
pub(crate) fn received(
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    datagram: &[u8],
) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: remote,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(datagram),
    }
}

/// The ICE ufrag of a connection's local description, once it has one.
fn local_ufrag(core: &RTCPeerConnection) -> Option<String> {
    let description = core.local_description()?;
    description
        .sdp
        .lines()
        .find_map(|line| line.strip_prefix("a=ice-ufrag:"))
        .map(|ufrag| ufrag.trim().to_owned())
}
