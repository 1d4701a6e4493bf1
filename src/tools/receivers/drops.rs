//! The frames the camera dropped for each receiver, from its telemetry.
//!
//! A receiver that falls behind the encoder loses frames at the camera
//! (its sender skips to the next key frame): the camera counts them per
//! connection (`frames_dropped` in `P/devices/{dev}/stats`). A connection
//! that is cut and made again starts at zero, so the account per receiver
//! adds up what each of its connections had dropped when it was last seen.
//! Pure: telemetry messages in, counts out.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Debug, Default)]
pub struct Drops {
    /// Per peer id: what earlier connections dropped, and the latest count
    /// of the current one.
    peers: HashMap<String, (u64, u64)>,
}

impl Drops {
    /// Reads one telemetry message of the camera.
    pub fn observe(&mut self, stats: &Value) {
        let Some(connections) = stats["connections"].as_array() else {
            return;
        };
        for c in connections {
            let (Some(peer), Some(dropped)) = (c["peer"].as_str(), c["frames_dropped"].as_u64())
            else {
                continue;
            };
            let (earlier, current) = self.peers.entry(peer.to_owned()).or_default();
            if dropped < *current {
                // A new connection to the same receiver.
                *earlier += *current;
            }
            *current = dropped;
        }
    }

    /// Frames dropped for `peer` so far.
    pub fn of(&self, peer: &str) -> u64 {
        self.peers
            .get(peer)
            .map_or(0, |(earlier, current)| earlier + current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(entries: &[(&str, u64)]) -> Value {
        let connections: Vec<Value> = entries
            .iter()
            .map(|(peer, dropped)| json!({"peer": peer, "frames_dropped": dropped}))
            .collect();
        json!({ "connections": connections })
    }

    #[test]
    fn counts_are_kept_per_peer_and_across_new_connections() {
        let mut drops = Drops::default();
        drops.observe(&stats(&[("a", 0), ("b", 2)]));
        drops.observe(&stats(&[("a", 3), ("b", 2)]));
        // a's connection was made again and has dropped one so far.
        drops.observe(&stats(&[("a", 1), ("b", 5)]));
        assert_eq!(drops.of("a"), 4);
        assert_eq!(drops.of("b"), 5);
        assert_eq!(drops.of("c"), 0);
    }

    #[test]
    fn a_connection_missing_from_one_message_keeps_its_count() {
        let mut drops = Drops::default();
        drops.observe(&stats(&[("a", 2)]));
        drops.observe(&stats(&[]));
        drops.observe(&json!({"uptime_s": 3}));
        assert_eq!(drops.of("a"), 2);
    }
}
