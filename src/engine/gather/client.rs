//! One socket's client of one STUN or TURN server: the binding that
//! tells the socket's mapped address, the allocation that gives it a
//! relay, and the relay's permissions. Failures are said and asked again
//! with backoff.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateRelayConfig, CandidateServerReflexiveConfig, RTCIceCandidate,
    RTCIceCandidateInit,
};
use rtc::sansio::Protocol;
use rtc::shared::TransportProtocol;
use rtc::shared::error::Error;
use rtc::stun::message::TransactionId;
use rtc::turn::client::{Client, ClientConfig, Event};

use super::{Credentials, Server};
use crate::engine::host::bundled;

/// How often a mapped address is asked again: a NAT that forgot the
/// mapping, or gave a new one, shows.
const REBIND: Duration = Duration::from_secs(60);
/// The first wait before a failed server is tried again; it doubles up
/// to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Datagrams held per peer while the relay asks for its permission.
const WAITING_MAX: usize = 16;
/// How long a peer the relay refused is not asked for again.
const PERMISSION_RETRY: Duration = Duration::from_secs(30);

/// One socket's client of one server: a binding, and for a TURN server an
/// allocation.
pub struct ServerClient {
    pub local: SocketAddr,
    pub server: Server,
    pub client: Client,
    binding: Option<TransactionId>,
    /// Both ids of an allocation under way: its first, unauthenticated,
    /// request, and the one the client reports.
    allocating: Option<[TransactionId; 2]>,
    pub relay: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    /// Why the last ask failed, until one succeeds.
    pub error: Option<String>,
    /// When to ask for the mapped address again, or to try again after a
    /// failure.
    next_binding: Option<Instant>,
    next_allocation: Option<Instant>,
    retry: Duration,
    /// Whether it has answered or failed once.
    pub settled: bool,
    waiting: HashMap<SocketAddr, Vec<BytesMut>>,
    /// Permissions asked for, and the peer addresses the relay refused,
    /// until when.
    asking: HashMap<TransactionId, SocketAddr>,
    refused: HashMap<IpAddr, Instant>,
}

/// What a client asks its server.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// The mapped address.
    Binding,
    /// A relay.
    Allocation,
}

impl ServerClient {
    /// A client that asks at once.
    pub fn new(
        now: Instant,
        local: SocketAddr,
        server: Server,
        crypto: Arc<dyn RTCCryptoProvider>,
    ) -> Result<Self, Error> {
        let credentials = server.turn.clone().unwrap_or(Credentials {
            username: String::new(),
            password: String::new(),
        });
        let address = server.address.to_string();
        let server_is_turn = server.turn.is_some();
        let client = Client::new(
            ClientConfig {
                stun_serv_addr: address.clone(),
                turn_serv_addr: if server.turn.is_some() {
                    address
                } else {
                    String::new()
                },
                local_addr: local,
                transport_protocol: TransportProtocol::UDP,
                username: credentials.username,
                password: credentials.password,
                ..Default::default()
            },
            crypto,
        )?;
        Ok(Self {
            local,
            server,
            client,
            binding: None,
            allocating: None,
            relay: None,
            mapped: None,
            error: None,
            next_binding: Some(now),
            next_allocation: server_is_turn.then_some(now),
            retry: RETRY_FIRST,
            settled: false,
            waiting: HashMap::new(),
            asking: HashMap::new(),
            refused: HashMap::new(),
        })
    }

    pub fn deadline(&mut self) -> Option<Instant> {
        [
            self.client.poll_timeout(),
            self.next_binding,
            self.next_allocation,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.client.handle_timeout(now) {
            tracing::debug!(error = %e, server = %self.server.url, "the server's timers");
        }
        if self.next_binding.is_some_and(|at| at <= now) {
            self.next_binding = None;
            match self.client.send_binding_request(now) {
                Ok(id) => self.binding = Some(id),
                Err(e) => tracing::debug!(error = %e, "a binding request not sent"),
            }
        }
        if self.next_allocation.is_some_and(|at| at <= now) {
            self.next_allocation = None;
            match self.client.allocate(now) {
                Ok(id) => self.allocating = Some([first_attempt(id), id]),
                Err(e) => tracing::debug!(error = %e, "an allocation not asked"),
            }
        }
    }

    /// A relayed datagram to `peer`: sent at once where the relay permits
    /// that peer, held while it asks.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        let Some(relay) = self.relay else {
            return;
        };
        if self
            .refused
            .get(&peer.ip())
            .is_some_and(|until| now < *until)
        {
            return;
        }
        let result = self
            .client
            .relay(relay)
            .and_then(|mut r| r.send_to(now, datagram, peer));
        match result {
            Ok(()) => {}
            Err(Error::ErrNoPermission) => {
                let waiting = self.waiting.entry(peer).or_default();
                if waiting.len() < WAITING_MAX {
                    waiting.push(BytesMut::from(datagram));
                }
                match self
                    .client
                    .relay(relay)
                    .and_then(|mut r| r.create_permission(now, peer))
                {
                    Ok(Some(id)) => {
                        self.asking.insert(id, peer);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, %peer, "a permission not asked"),
                }
            }
            Err(e) => tracing::debug!(error = %e, %peer, "a datagram not relayed"),
        }
    }

    /// The server would not relay to the peer asked for by `id` (a TURN
    /// server rightly refuses private addresses): its datagrams are
    /// dropped, and it is not asked for again for [`PERMISSION_RETRY`],
    /// rather than at every connectivity check.
    fn permission_refused(
        &mut self,
        now: Instant,
        id: TransactionId,
        reason: impl std::fmt::Display,
    ) {
        let Some(peer) = self.asking.remove(&id) else {
            return;
        };
        tracing::debug!(%reason, %peer, server = %self.server.url, "the relay refused a peer");
        self.refused.insert(peer.ip(), now + PERMISSION_RETRY);
        self.waiting.retain(|p, _| p.ip() != peer.ip());
    }

    /// `ask` failed: said, and asked again after the backoff.
    fn failed(&mut self, now: Instant, ask: Ask, reason: impl std::fmt::Display) {
        self.settled = true;
        let reason = match ask {
            Ask::Binding => format!("binding: {reason}"),
            Ask::Allocation => format!("allocation: {reason}"),
        };
        tracing::warn!(server = %self.server.url, local = %self.local, %reason, retry_s = self.retry.as_secs(), "a STUN or TURN server failed");
        let again = Some(now + self.retry);
        self.retry = (self.retry * 2).min(RETRY_MAX);
        match ask {
            Ask::Binding => self.next_binding = again,
            Ask::Allocation => self.next_allocation = again,
        }
        self.error = Some(reason);
    }

    pub fn event(
        &mut self,
        now: Instant,
        event: Event,
        relayed: &mut VecDeque<(SocketAddr, SocketAddr, BytesMut)>,
    ) -> Option<RTCIceCandidateInit> {
        match event {
            Event::BindingResponse(id, mapped) if Some(id) == self.binding => {
                self.binding = None;
                self.next_binding = Some(now + REBIND);
                self.retry = RETRY_FIRST;
                self.settled |= self.server.turn.is_none() || self.relay.is_some();
                self.mapped = Some(mapped);
                self.error = None;
                // Without a NAT the mapped address is the host candidate.
                (mapped != self.local)
                    .then(|| written(reflexive_candidate(mapped, self.local, &self.server.url)))
                    .flatten()
            }
            Event::BindingError(id, e) if Some(id) == self.binding => {
                self.binding = None;
                self.failed(now, Ask::Binding, e);
                None
            }
            Event::AllocateResponse(_, relay) if self.allocating.is_some() => {
                self.allocating = None;
                self.relay = Some(relay);
                self.error = None;
                self.retry = RETRY_FIRST;
                self.settled = true;
                written(relay_candidate(relay, self.local, &self.server.url))
            }
            Event::AllocateError(_, e) if self.allocating.is_some() => {
                self.allocating = None;
                self.failed(now, Ask::Allocation, e);
                None
            }
            Event::CreatePermissionResponse(id, peer) => {
                self.asking.remove(&id);
                for datagram in self.waiting.remove(&peer).unwrap_or_default() {
                    self.send(now, peer, &datagram);
                }
                None
            }
            Event::CreatePermissionError(id, e) => {
                self.permission_refused(now, id, e);
                None
            }
            Event::DataIndicationOrChannelData(_, peer, data) => {
                if let Some(relay) = self.relay {
                    relayed.push_back((relay, peer, data));
                }
                None
            }
            Event::TransactionTimeout(id) if self.asking.contains_key(&id) => {
                self.permission_refused(now, id, "no answer");
                None
            }
            Event::TransactionTimeout(id) if Some(id) == self.binding => {
                self.binding = None;
                self.failed(now, Ask::Binding, "no answer");
                None
            }
            Event::TransactionTimeout(id) if self.allocating.is_some_and(|a| a.contains(&id)) => {
                self.allocating = None;
                self.failed(now, Ask::Allocation, "no answer");
                None
            }
            _ => None,
        }
    }
}

fn written(candidate: Result<RTCIceCandidateInit, Error>) -> Option<RTCIceCandidateInit> {
    match candidate {
        Ok(init) => Some(init),
        Err(e) => {
            tracing::warn!(error = %e, "a gathered candidate cannot be written");
            None
        }
    }
}

/// The id of an allocation's first request, from the id the client
/// reports for it (the first's, its last byte plus one).
fn first_attempt(reported: TransactionId) -> TransactionId {
    let mut id = reported;
    let last = id.0.len() - 1;
    id.0[last] = id.0[last].wrapping_sub(1);
    id
}

fn reflexive_candidate(
    mapped: SocketAddr,
    base: SocketAddr,
    url: &str,
) -> Result<RTCIceCandidateInit, Error> {
    let candidate = CandidateServerReflexiveConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: mapped.ip().to_string(),
            port: mapped.port(),
            component: 1,
            ..Default::default()
        },
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        url: Some(url.to_owned()),
    }
    .new_candidate_server_reflexive()?;
    bundled(&RTCIceCandidate::from(&candidate))
}

fn relay_candidate(
    relay: SocketAddr,
    base: SocketAddr,
    url: &str,
) -> Result<RTCIceCandidateInit, Error> {
    let candidate = CandidateRelayConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: relay.ip().to_string(),
            port: relay.port(),
            component: 1,
            ..Default::default()
        },
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        url: Some(url.to_owned()),
    }
    .new_candidate_relay()?;
    bundled(&RTCIceCandidate::from(&candidate))
}
