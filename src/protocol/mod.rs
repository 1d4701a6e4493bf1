//! PROTOCOL.md as types: topics, ids and payloads.
//!
//! Nothing here does I/O; everything inbound is validated on decode so the
//! room logic and the daemon only ever see well-formed values.
//!
//! Owns: the wire format and its limits. Must not touch: I/O, time, the rules
//! of who does what (`room`).

pub mod ids;
pub mod message;
pub mod topic;

pub use message::*;
pub use topic::{Topic, Topics};
