//! What telemetry shows of the send loop: its sockets, how they send, and
//! what they and the engine counted. Datagrams that belong to no viewer,
//! DTLS held until ICE connects and datagrams a connection refused are
//! the first things to look at when a viewer on an odd network never
//! connects; a send buffer found full is a link or a kernel too slow for
//! the camera.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::engine::EngineCounters;
use crate::engine::gather::ServerState;
use crate::engine::udp::{EngineSocket, SendMode};

/// The loop's sockets, and the engine's counters as of its last check.
pub struct LoopStatus {
    sockets: Vec<Arc<EngineSocket>>,
    engine: Mutex<EngineCounters>,
    servers: Mutex<Vec<ServerState>>,
}

impl LoopStatus {
    pub fn new(sockets: Vec<Arc<EngineSocket>>) -> Self {
        Self {
            sockets,
            engine: Mutex::default(),
            servers: Mutex::default(),
        }
    }

    /// How the STUN and TURN servers are doing, now.
    pub fn servers_seen(&self, servers: Vec<ServerState>) {
        *self.servers.lock().expect("status lock is never poisoned") = servers;
    }

    /// The engine's counters, now.
    pub fn engine_counted(&self, counters: EngineCounters) {
        *self.engine.lock().expect("status lock is never poisoned") = counters;
    }

    /// The telemetry object `send_loop` (PROTOCOL.md).
    pub fn to_json(&self) -> Value {
        let engine = *self.engine.lock().expect("status lock is never poisoned");
        let udp: Vec<_> = self.sockets.iter().map(|s| s.counters()).collect();
        let sum = |f: fn(&crate::engine::udp::UdpCounters) -> u64| udp.iter().map(f).sum::<u64>();
        let gso = self
            .sockets
            .iter()
            .all(|s| matches!(s.send_mode(), SendMode::Gso { .. }));
        json!({
            "sockets": self.sockets.iter().map(|s| s.local_addr().to_string()).collect::<Vec<_>>(),
            "send": if gso { "gso" } else { "sendmsg" },
            "send_calls": sum(|c| c.send_calls),
            "datagrams_sent": sum(|c| c.sent),
            "send_buffer_full": sum(|c| c.full),
            "send_refused": sum(|c| c.refused),
            "datagrams_received": sum(|c| c.received),
            "unrouted": engine.unrouted,
            "early_held": engine.early_held,
            "early_dropped": engine.early_dropped,
            "refused": engine.refused,
            "ice_servers": self.servers.lock().expect("status lock is never poisoned").iter().map(|s| json!({
                "url": s.url,
                "local": s.local.to_string(),
                "mapped": s.mapped.map(|a| a.to_string()),
                "relay": s.relay.map(|a| a.to_string()),
                "error": s.error,
            })).collect::<Vec<_>>(),
        })
    }
}
