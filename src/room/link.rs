//! One pair's connection as the room logic sees it: which peer connection
//! stands for it, who offered, and the candidates waiting for a description.
//!
//! Owns one link's state and its small invariants; the rules that change it
//! are [`super::Mesh`]'s. Must not touch the peer connection itself: it only
//! records what the caller was told to do with it.

use std::time::Instant;

use crate::protocol::{Candidate, Role};

/// Identifies one peer connection. A new connection to the same peer gets a
/// new id, so events from a connection already replaced are recognised and
/// ignored.
pub type LinkId = u64;

/// Candidates queued for one link at most; more are dropped and counted.
pub const MAX_QUEUED_CANDIDATES: usize = 64;

/// Where an ICE restart stands since the connection was last up. One is
/// tried at most. Until the peer answers it, a `Connected` from the peer
/// connection is not proof of life: the ICE agent may report it from the
/// old pair while the peer is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    NotTried,
    /// Offered; whether the connection said `Connected` meanwhile.
    Pending {
        connected_seen: bool,
    },
    /// Answered, and the connection not up again yet.
    Answered,
}

#[derive(Debug, Clone)]
pub(super) struct Link {
    pub id: LinkId,
    pub remote_session: String,
    /// The remote peer's role.
    pub role: Role,
    pub offerer: bool,
    /// The daemon has been told to create the peer connection.
    pub created: bool,
    /// The remote description has been handed to the peer connection, so
    /// candidates can be applied directly.
    pub remote_description: bool,
    pub queued: Vec<Option<Candidate>>,
    pub connected: bool,
    pub restart: Restart,
    /// Failures of this pair in a row, for the retry backoff.
    pub attempt: u32,
    /// A connection not established by then has failed (a peer that never
    /// answers, or a handshake that never completes).
    pub deadline: Option<Instant>,
}

impl Link {
    pub fn new(id: LinkId, remote_session: &str, role: Role, offerer: bool, attempt: u32) -> Self {
        Self {
            id,
            remote_session: remote_session.to_owned(),
            role,
            offerer,
            created: false,
            remote_description: false,
            queued: Vec::new(),
            connected: false,
            restart: Restart::NotTried,
            attempt,
            deadline: None,
        }
    }

    /// The connection is up: no deadline, and a later failure starts the
    /// backoff afresh.
    pub fn mark_connected(&mut self) {
        self.connected = true;
        self.deadline = None;
        self.restart = Restart::NotTried;
        self.attempt = 0;
    }

    /// Queues a candidate; `false` when the queue is full.
    pub fn queue(&mut self, candidate: Option<Candidate>) -> bool {
        if self.queued.len() >= MAX_QUEUED_CANDIDATES {
            return false;
        }
        self.queued.push(candidate);
        true
    }
}
