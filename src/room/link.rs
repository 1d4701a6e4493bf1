//! One pair's connection as the room logic sees it: which peer connection
//! stands for it, who offered, and the candidates waiting for a description.

use std::time::Instant;

use crate::protocol::{Candidate, Role};

/// Identifies one peer connection. A new connection to the same peer gets a
/// new id, so events from a connection already replaced are recognised and
/// ignored.
pub type LinkId = u64;

/// Candidates queued for one link at most; more are dropped and counted.
pub const MAX_QUEUED_CANDIDATES: usize = 64;

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
    pub restart_tried: bool,
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
            restart_tried: false,
            attempt,
            deadline: None,
        }
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
