//! Datagrams that come before the connection can take them.
//!
//! The WebRTC core drops anything but STUN until ICE has selected a pair.
//! A viewer may start DTLS as soon as one of its own checks succeeds,
//! before the camera (controlling) has nominated that pair: Chromium's
//! first ClientHello often arrives ~10 ms early, and without an answer it
//! is sent again only ~50 ms later, or a second later on a lossy start.
//! RFC 5763 treats every pair of a component as one DTLS association, and
//! str0m, Pion and libwebrtc all take it. So a connection holds what comes
//! early from its viewer's addresses, a few datagrams at most (a
//! ClientHello is one or two), and feeds them again the moment ICE
//! connects.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// The most datagrams held; beyond it the oldest go.
pub const HELD_MAX: usize = 8;

/// One datagram held, with where it came from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub datagram: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct EarlyDatagrams {
    held: VecDeque<Held>,
    /// Datagrams let go because more came.
    pub dropped: u64,
}

impl EarlyDatagrams {
    pub fn hold(&mut self, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        if self.held.len() == HELD_MAX {
            self.held.pop_front();
            self.dropped += 1;
        }
        self.held.push_back(Held {
            local,
            remote,
            datagram: datagram.to_vec(),
        });
    }

    /// Everything held, oldest first.
    pub fn release(self) -> impl Iterator<Item = Held> {
        self.held.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_are_kept_in_order() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut early = EarlyDatagrams::default();
        for i in 0..HELD_MAX as u8 + 2 {
            early.hold(addr, addr, &[22, i]);
        }
        assert_eq!(early.dropped, 2);
        let firsts: Vec<u8> = early.release().map(|h| h.datagram[1]).collect();
        assert_eq!(firsts, (2..HELD_MAX as u8 + 2).collect::<Vec<_>>());
    }
}
