//! Identifier rules of PROTOCOL.md: peer ids, room names and session tokens.
//!
//! Every id that reaches a topic or a map key passes through here first, so a
//! hostile payload can never smuggle a `/`, `+` or `#` into a topic.

use rand::Rng;
use rand::distr::Alphanumeric;

/// `[A-Za-z0-9_-]{min,max}`, the one character class the protocol uses for names.
fn is_token(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A peer id (which is also the peer's MQTT client id): `[A-Za-z0-9_-]{1,64}`.
pub fn is_peer_id(s: &str) -> bool {
    is_token(s, 1, 64)
}

/// A room name: `[A-Za-z0-9_-]{1,64}`.
pub fn is_room(s: &str) -> bool {
    is_token(s, 1, 64)
}

/// A session token: `[A-Za-z0-9_-]{8,64}`.
pub fn is_session(s: &str) -> bool {
    is_token(s, 8, 64)
}

/// A fresh session token: 16 alphanumeric characters, about 95 bits of entropy.
pub fn new_session() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_follow_the_character_class() {
        assert!(is_peer_id("cam-kitchen_1"));
        assert!(is_peer_id(&"a".repeat(64)));
        assert!(!is_peer_id(""));
        assert!(!is_peer_id(&"a".repeat(65)));
        assert!(!is_peer_id("a/b"));
        assert!(!is_peer_id("a+"));
        assert!(!is_peer_id("#"));
        assert!(!is_peer_id("ü"));
    }

    #[test]
    fn sessions_need_eight_characters() {
        assert!(!is_session("short"));
        assert!(is_session("q3V8xK2m"));
        assert!(is_session(&new_session()));
        assert_ne!(new_session(), new_session());
    }

    #[test]
    fn rooms_follow_the_character_class() {
        assert!(is_room("home"));
        assert!(!is_room("home/kitchen"));
    }
}
