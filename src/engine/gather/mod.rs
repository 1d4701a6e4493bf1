//! Candidates beyond the host ones, gathered once for every connection
//! of the engine: the address a NAT maps the engine's socket to (server
//! reflexive, from a STUN server) and an address on a TURN server that
//! relays for it (relay).
//!
//! The sockets are shared by every connection, so one binding per socket
//! and server tells the mapped address for all of them, and one TURN
//! allocation per socket and server relays for all of them: the relay
//! address is a local address like the sockets' own, and the connections'
//! datagrams from it are wrapped for the server here ([`Gatherer::send`]),
//! those that come back unwrapped ([`Gatherer::poll_relayed`]) and routed
//! by the engine like any other.
//!
//! Sans-I/O: datagrams, time and the resolved servers in; datagrams,
//! candidates and deadlines out. A server that does not answer or refuses
//! is tried again with backoff, and said ([`Gathered::Failed`]).

mod client;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::sansio::Protocol;

use super::transmit::{Transmit, Transmits};
use client::ServerClient;

/// A STUN or TURN server, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The URL it was configured as, to name it.
    pub url: String,
    pub address: SocketAddr,
    /// A TURN server's credentials; `None` for a STUN server.
    pub turn: Option<Credentials>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// What gathering found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gathered {
    /// A candidate for every connection.
    Candidate(RTCIceCandidateInit),
    /// Every server has answered or failed once: no candidate comes soon.
    Complete,
}

/// How one socket's server is doing, for telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub url: String,
    pub local: SocketAddr,
    /// The address it maps the socket to, and the relay it gave.
    pub mapped: Option<SocketAddr>,
    pub relay: Option<SocketAddr>,
    /// Why its last answer failed; `None` once it answers.
    pub error: Option<String>,
}

/// The candidates of the engine's sockets from its STUN and TURN servers.
pub struct Gatherer {
    clients: Vec<ServerClient>,
    found: Vec<RTCIceCandidateInit>,
    events: VecDeque<Gathered>,
    transmits: Transmits,
    relayed: VecDeque<(SocketAddr, SocketAddr, BytesMut)>,
    complete: bool,
}

impl Gatherer {
    /// Starts gathering from each of `locals` with each of `servers` of
    /// the same address family.
    pub fn new(
        now: Instant,
        locals: &[SocketAddr],
        servers: &[Server],
        crypto: &Arc<dyn RTCCryptoProvider>,
    ) -> Self {
        let mut gatherer = Self {
            clients: Vec::new(),
            found: Vec::new(),
            events: VecDeque::new(),
            transmits: Transmits::default(),
            relayed: VecDeque::new(),
            complete: false,
        };
        for local in locals {
            for server in &one_per_address(servers) {
                if server.address.is_ipv4() != local.is_ipv4() {
                    continue;
                }
                match ServerClient::new(now, *local, server.clone(), crypto.clone()) {
                    Ok(client) => gatherer.clients.push(client),
                    Err(e) => {
                        tracing::warn!(url = %server.url, error = %e, "a STUN or TURN server left out")
                    }
                }
            }
        }
        gatherer.handle_timeout(now);
        gatherer.check_complete();
        gatherer
    }

    /// Every candidate found so far, for a new connection.
    pub fn candidates(&self) -> &[RTCIceCandidateInit] {
        &self.found
    }

    /// How each socket's server is doing.
    pub fn servers(&self) -> Vec<ServerState> {
        self.clients
            .iter()
            .map(|c| ServerState {
                url: c.server.url.clone(),
                local: c.local,
                mapped: c.mapped,
                relay: c.relay,
                error: c.error.clone(),
            })
            .collect()
    }

    /// Whether every server has answered or failed once.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Whether a datagram from `remote` to the socket at `local` is a
    /// server's.
    pub fn owns(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        self.clients
            .iter()
            .any(|c| c.server.address == remote && same_socket(c.local, local))
    }

    /// Whether `local` is one of the relay addresses, whose datagrams go
    /// through [`Gatherer::send`].
    pub fn is_relay(&self, local: SocketAddr) -> bool {
        self.clients.iter().any(|c| c.relay == Some(local))
    }

    /// A datagram from a server.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(i) = self
            .clients
            .iter()
            .position(|c| c.server.address == remote && same_socket(c.local, local))
        else {
            return;
        };
        let message = super::received(now, self.clients[i].local, remote, datagram);
        if let Err(e) = self.clients[i].client.handle_read(message) {
            tracing::debug!(error = %e, server = %remote, "a datagram from the server refused");
        }
        self.settle(now, i);
    }

    /// A connection's datagram from the relay address `relay` to `peer`.
    pub fn send(&mut self, now: Instant, transmit: &Transmit) {
        let Some(i) = self
            .clients
            .iter()
            .position(|c| c.relay == Some(transmit.local))
        else {
            return;
        };
        for datagram in transmit.iter() {
            self.clients[i].send(now, transmit.remote, datagram);
        }
        self.settle(now, i);
    }

    /// The next datagram to a server, from one of the sockets.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop()
    }

    /// The next datagram a relay brought: `(relay address, peer, datagram)`.
    pub fn poll_relayed(&mut self) -> Option<(SocketAddr, SocketAddr, BytesMut)> {
        self.relayed.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Gathered> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.clients.iter_mut().filter_map(|c| c.deadline()).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            self.clients[i].handle_timeout(now);
            self.settle(now, i);
        }
    }

    /// Takes what client `i` has for the outside.
    fn settle(&mut self, now: Instant, i: usize) {
        let client = &mut self.clients[i];
        while let Some(out) = client.client.poll_write() {
            self.transmits.push(
                out.transport.local_addr,
                out.transport.peer_addr,
                &out.message,
            );
        }
        while let Some(event) = client.client.poll_event() {
            if let Some(init) = client.event(now, event, &mut self.relayed)
                && !self.found.contains(&init)
            {
                self.found.push(init.clone());
                self.events.push_back(Gathered::Candidate(init));
            }
        }
        // What answering sent (a permission flushed, a channel bound).
        while let Some(out) = client.client.poll_write() {
            self.transmits.push(
                out.transport.local_addr,
                out.transport.peer_addr,
                &out.message,
            );
        }
        self.check_complete();
    }

    fn check_complete(&mut self) {
        if !self.complete && self.clients.iter().all(|c| c.settled) {
            self.complete = true;
            self.events.push_back(Gathered::Complete);
        }
    }
}

/// The servers, one per address: a STUN and a TURN URL that name the same
/// server (coturn serves both on one port) are one client, the TURN one,
/// since its answers could not be told apart on the same socket.
fn one_per_address(servers: &[Server]) -> Vec<Server> {
    let mut out: Vec<Server> = Vec::new();
    for server in servers {
        match out.iter_mut().find(|s| s.address == server.address) {
            Some(kept) if kept.turn.is_none() && server.turn.is_some() => *kept = server.clone(),
            Some(_) => {}
            None => out.push(server.clone()),
        }
    }
    out
}

/// Whether a datagram to `local` reached the socket at `socket`: the same
/// address, or the wildcard socket on its port.
fn same_socket(socket: SocketAddr, local: SocketAddr) -> bool {
    socket == local || (socket.ip().is_unspecified() && socket.port() == local.port())
}
