//! Which connection a datagram that came in belongs to.
//!
//! All connections share the engine's sockets, so a datagram is routed by
//! what it is (RFC 7983: the first byte tells STUN from DTLS from RTP) and
//! where it came from:
//!
//! - a STUN request from the viewer names the connection in its USERNAME
//!   (`our-ufrag:their-ufrag`), and from then on its address is the
//!   connection's;
//! - the address a connection sends to (its checks, then its media) is its
//!   own, so the answers to its checks and everything after them come back
//!   to it.
//!
//! Anything else (a viewer that left, a stray scan) belongs to nobody and
//! is counted, not fed anywhere.

use std::collections::HashMap;
use std::net::SocketAddr;

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{CLASS_REQUEST, Message, is_stun_message};

/// What a datagram is, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Other,
}

pub fn kind(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) if is_stun_message(datagram) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => Kind::Rtp,
        _ => Kind::Other,
    }
}

/// The local ufrag a STUN binding request is addressed to, when it is one.
pub fn requested_ufrag(datagram: &[u8]) -> Option<String> {
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    if message.typ.class != CLASS_REQUEST {
        return None;
    }
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    Some(username.split(':').next()?.to_owned())
}

/// The routing table, for connections named by `Id`.
#[derive(Debug)]
pub struct Routes<Id> {
    by_ufrag: HashMap<String, Id>,
    by_path: HashMap<(SocketAddr, SocketAddr), Id>,
}

impl<Id> Default for Routes<Id> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_path: HashMap::new(),
        }
    }
}

impl<Id: Copy + PartialEq> Routes<Id> {
    /// The connection whose local ICE ufrag is `ufrag` (it changes with an
    /// ICE restart: the old one is forgotten).
    pub fn set_ufrag(&mut self, id: Id, ufrag: &str) {
        self.by_ufrag.retain(|_, owner| *owner != id);
        self.by_ufrag.insert(ufrag.to_owned(), id);
    }

    /// The connection sends from `local` to `remote`.
    pub fn sent(&mut self, id: Id, local: SocketAddr, remote: SocketAddr) {
        self.by_path.insert((local, remote), id);
    }

    /// The connection a datagram from `remote` to `local` belongs to.
    pub fn route(&mut self, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) -> Option<Id> {
        if kind(datagram) == Kind::Stun
            && let Some(ufrag) = requested_ufrag(datagram)
        {
            let id = *self.by_ufrag.get(&ufrag)?;
            self.by_path.insert((local, remote), id);
            return Some(id);
        }
        self.by_path.get(&(local, remote)).copied()
    }

    pub fn remove(&mut self, id: Id) {
        self.by_ufrag.retain(|_, owner| *owner != id);
        self.by_path.retain(|_, owner| *owner != id);
    }
}

#[cfg(test)]
mod tests {
    use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS};

    use super::*;

    fn stun(typ: rtc::stun::message::MessageType, username: Option<&str>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(typ);
        m.new_transaction_id().unwrap();
        if let Some(name) = username {
            m.add(ATTR_USERNAME, name.as_bytes());
        }
        m.write_header();
        m.raw.clone()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 1, 2], port))
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_byte() {
        let request = stun(BINDING_REQUEST, Some("cam:viewer"));
        assert_eq!(kind(&request), Kind::Stun);
        assert_eq!(kind(&[22, 254, 253, 0]), Kind::Dtls);
        assert_eq!(kind(&[0x80, 96, 0, 1]), Kind::Rtp);
        assert_eq!(kind(&[1, 2, 3]), Kind::Other, "too short for STUN");
        assert_eq!(kind(&[]), Kind::Other);
        assert_eq!(requested_ufrag(&request).as_deref(), Some("cam"));
        assert_eq!(requested_ufrag(&stun(BINDING_SUCCESS, None)), None);
    }

    #[test]
    fn a_viewer_is_found_by_its_request_then_by_its_address() {
        let mut routes = Routes::default();
        routes.set_ufrag(1, "one");
        routes.set_ufrag(2, "two");
        let local = addr(5000);
        assert_eq!(
            routes.route(local, addr(7000), &[22, 0]),
            None,
            "unknown yet"
        );
        let request = stun(BINDING_REQUEST, Some("two:x"));
        assert_eq!(routes.route(local, addr(7000), &request), Some(2));
        assert_eq!(routes.route(local, addr(7000), &[22, 0]), Some(2));
        assert_eq!(routes.route(addr(5001), addr(7000), &[22, 0]), None);
    }

    #[test]
    fn answers_come_back_to_the_connection_that_asked() {
        let mut routes = Routes::default();
        routes.sent(3, addr(5000), addr(7001));
        let answer = stun(BINDING_SUCCESS, None);
        assert_eq!(routes.route(addr(5000), addr(7001), &answer), Some(3));
    }

    #[test]
    fn an_ice_restart_or_a_removal_forgets_the_old_names() {
        let mut routes = Routes::default();
        routes.set_ufrag(1, "old");
        routes.set_ufrag(1, "new");
        let old = stun(BINDING_REQUEST, Some("old:x"));
        let new = stun(BINDING_REQUEST, Some("new:x"));
        assert_eq!(routes.route(addr(1), addr(2), &old), None);
        assert_eq!(routes.route(addr(1), addr(2), &new), Some(1));
        routes.remove(1);
        assert_eq!(routes.route(addr(1), addr(2), &new), None);
        assert_eq!(routes.route(addr(1), addr(2), &[22, 0]), None);
    }
}
