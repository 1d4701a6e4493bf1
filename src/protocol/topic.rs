//! The topic tree of PROTOCOL.md: building topics and parsing the ones we receive.
//!
//! Parsing validates every id-carrying level, so the rest of the program can
//! trust the room, peer and device names it gets from a [`Topic`].

use super::ids::{is_peer_id, is_room};

/// Builds and parses topics under one prefix (`meshcam` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// A topic this program subscribes to, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `P/devices/{dev}/status`
    DeviceStatus { device: String },
    /// `P/devices/{dev}/cmd`
    DeviceCommand { device: String },
    /// `P/rooms/{room}/peers/{id}`
    Presence { room: String, peer: String },
    /// `P/rooms/{room}/signal/{to}/{from}`
    Signal {
        room: String,
        to: String,
        from: String,
    },
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn status(&self, device: &str) -> String {
        format!("{}/devices/{device}/status", self.prefix)
    }

    pub fn command(&self, device: &str) -> String {
        format!("{}/devices/{device}/cmd", self.prefix)
    }

    pub fn reply(&self, device: &str) -> String {
        format!("{}/devices/{device}/reply", self.prefix)
    }

    pub fn snapshot(&self, device: &str) -> String {
        format!("{}/devices/{device}/snapshot", self.prefix)
    }

    pub fn stats(&self, device: &str) -> String {
        format!("{}/devices/{device}/stats", self.prefix)
    }

    /// The filter matching every device's status (for controllers and viewers).
    pub fn all_statuses(&self) -> String {
        format!("{}/devices/+/status", self.prefix)
    }

    pub fn presence(&self, room: &str, peer: &str) -> String {
        format!("{}/rooms/{room}/peers/{peer}", self.prefix)
    }

    /// The filter for every presence in a room.
    pub fn room_presences(&self, room: &str) -> String {
        format!("{}/rooms/{room}/peers/+", self.prefix)
    }

    pub fn signal(&self, room: &str, to: &str, from: &str) -> String {
        format!("{}/rooms/{room}/signal/{to}/{from}", self.prefix)
    }

    /// The filter for every signal addressed to `me` in a room.
    pub fn signals_to(&self, room: &str, me: &str) -> String {
        format!("{}/rooms/{room}/signal/{me}/+", self.prefix)
    }

    /// Whether `topic` is a valid reply destination: under `P/clients/{client}/`,
    /// at least one level below the client, no wildcard, no empty level.
    pub fn is_client_topic(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix("/clients/"))
        else {
            return false;
        };
        let mut levels = rest.split('/');
        let client_ok = levels.next().is_some_and(is_peer_id);
        let below: Vec<&str> = levels.collect();
        client_ok
            && !below.is_empty()
            && below
                .iter()
                .all(|l| !l.is_empty() && !l.contains(['+', '#']))
    }

    /// Parses a topic we subscribed to; `None` for anything else or any invalid id.
    pub fn parse(&self, topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let levels: Vec<&str> = rest.split('/').collect();
        match levels.as_slice() {
            ["devices", dev, "status"] if is_peer_id(dev) => Some(Topic::DeviceStatus {
                device: dev.to_string(),
            }),
            ["devices", dev, "cmd"] if is_peer_id(dev) => Some(Topic::DeviceCommand {
                device: dev.to_string(),
            }),
            ["rooms", room, "peers", peer] if is_room(room) && is_peer_id(peer) => {
                Some(Topic::Presence {
                    room: room.to_string(),
                    peer: peer.to_string(),
                })
            }
            ["rooms", room, "signal", to, from]
                if is_room(room) && is_peer_id(to) && is_peer_id(from) =>
            {
                Some(Topic::Signal {
                    room: room.to_string(),
                    to: to.to_string(),
                    from: from.to_string(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_topics_parse_back() {
        let t = Topics::new("meshcam");
        assert_eq!(
            t.parse(&t.presence("home", "v-1")),
            Some(Topic::Presence {
                room: "home".into(),
                peer: "v-1".into()
            })
        );
        assert_eq!(
            t.parse(&t.signal("home", "cam", "v-1")),
            Some(Topic::Signal {
                room: "home".into(),
                to: "cam".into(),
                from: "v-1".into()
            })
        );
        assert_eq!(
            t.parse(&t.command("cam")),
            Some(Topic::DeviceCommand {
                device: "cam".into()
            })
        );
        assert_eq!(
            t.parse(&t.status("cam")),
            Some(Topic::DeviceStatus {
                device: "cam".into()
            })
        );
    }

    #[test]
    fn foreign_and_malformed_topics_do_not_parse() {
        let t = Topics::new("meshcam");
        assert_eq!(t.parse("other/rooms/home/peers/v"), None);
        assert_eq!(t.parse("meshcam/rooms/home/peers/"), None);
        assert_eq!(t.parse("meshcam/rooms/ho me/peers/v"), None);
        assert_eq!(t.parse("meshcam/rooms/home/signal/a"), None);
        assert_eq!(t.parse("meshcamx/rooms/home/peers/v"), None);
    }

    #[test]
    fn reply_topics_must_sit_below_a_client() {
        let t = Topics::new("meshcam");
        assert!(t.is_client_topic("meshcam/clients/ctl-1/replies"));
        assert!(t.is_client_topic("meshcam/clients/ctl-1/a/b"));
        assert!(!t.is_client_topic("meshcam/clients/ctl-1"));
        assert!(!t.is_client_topic("meshcam/clients/ctl-1/"));
        assert!(!t.is_client_topic("meshcam/clients/ctl-1/#"));
        assert!(!t.is_client_topic("meshcam/clients/+/x"));
        assert!(!t.is_client_topic("meshcam/devices/cam/reply"));
        assert!(!t.is_client_topic("other/clients/c/x"));
    }
}
