//! What the engine hands its I/O loop to send: runs of datagrams, ready for
//! one UDP GSO send each.
//!
//! A video frame leaves a connection as a run of full-size packets and a
//! shorter last one, all to the same address. The kernel can take such a
//! run in one `sendmsg` with `UDP_SEGMENT` and cut it itself; sent one by
//! one, each packet costs a system call and the socket's whole path. So
//! datagrams are gathered as they come out of a connection: the next one
//! joins the run before it when it goes between the same two addresses, is
//! no longer than the run's segments, and the run is not closed yet (a
//! shorter datagram is always the last of its run, as GSO requires).

use std::collections::VecDeque;
use std::net::SocketAddr;

/// The most segments the kernel takes in one GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// The most bytes one send may carry (a UDP datagram's length field).
pub const MAX_BYTES: usize = 65_000;

/// One send: a datagram, or a run of `segment`-sized datagrams (the last
/// may be shorter) from `local` to `remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The size of every datagram but the last.
    pub segment: usize,
    pub contents: Vec<u8>,
}

impl Transmit {
    /// How many datagrams it carries.
    pub fn datagrams(&self) -> usize {
        self.contents.len().div_ceil(self.segment.max(1))
    }

    /// The datagrams, one by one: for a socket without GSO.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.contents.chunks(self.segment.max(1))
    }

    fn takes(&self, local: SocketAddr, remote: SocketAddr, len: usize) -> bool {
        self.local == local
            && self.remote == remote
            && len <= self.segment
            && self.contents.len().is_multiple_of(self.segment)
            && self.datagrams() < MAX_SEGMENTS
            && self.contents.len() + len <= MAX_BYTES
    }
}

/// Datagrams waiting to be sent, gathered into runs.
#[derive(Debug, Default)]
pub struct Transmits {
    queue: VecDeque<Transmit>,
}

impl Transmits {
    pub fn push(&mut self, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        if datagram.is_empty() {
            return;
        }
        match self.queue.back_mut() {
            Some(run) if run.takes(local, remote, datagram.len()) => {
                run.contents.extend_from_slice(datagram);
            }
            _ => self.queue.push_back(Transmit {
                local,
                remote,
                segment: datagram.len(),
                contents: datagram.to_vec(),
            }),
        }
    }

    pub fn pop(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn drain(transmits: &mut Transmits) -> Vec<Transmit> {
        std::iter::from_fn(|| transmits.pop()).collect()
    }

    #[test]
    fn a_frame_of_full_packets_and_a_short_last_one_is_one_send() {
        let mut t = Transmits::default();
        for len in [1200, 1200, 1200, 700] {
            t.push(addr(1), addr(2), &vec![7; len]);
        }
        let runs = drain(&mut t);
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].segment, runs[0].datagrams()), (1200, 4));
        let sizes: Vec<usize> = runs[0].iter().map(<[u8]>::len).collect();
        assert_eq!(sizes, [1200, 1200, 1200, 700]);
    }

    #[test]
    fn a_run_ends_after_a_short_datagram_a_longer_one_or_another_address() {
        let mut t = Transmits::default();
        t.push(addr(1), addr(2), &[1; 1000]);
        t.push(addr(1), addr(2), &[1; 500]);
        // After a short one: a new run.
        t.push(addr(1), addr(2), &[1; 500]);
        // Longer than the run's segment: a new run.
        t.push(addr(1), addr(2), &[1; 600]);
        // Another viewer: a new run.
        t.push(addr(1), addr(3), &[1; 600]);
        let shapes: Vec<(u16, usize, usize)> = drain(&mut t)
            .iter()
            .map(|r| (r.remote.port(), r.segment, r.datagrams()))
            .collect();
        assert_eq!(
            shapes,
            [(2, 1000, 2), (2, 500, 1), (2, 600, 1), (3, 600, 1)]
        );
    }

    #[test]
    fn a_run_never_passes_what_the_kernel_takes_in_one_send() {
        let mut t = Transmits::default();
        for _ in 0..100 {
            t.push(addr(1), addr(2), &[0; 1200]);
        }
        let runs = drain(&mut t);
        assert!(runs.iter().all(|r| r.contents.len() <= MAX_BYTES));
        assert!(runs.iter().all(|r| r.datagrams() <= MAX_SEGMENTS));
        assert_eq!(runs.iter().map(Transmit::datagrams).sum::<usize>(), 100);

        for _ in 0..100 {
            t.push(addr(1), addr(2), &[0; 100]);
        }
        let runs = drain(&mut t);
        assert_eq!(runs.len(), 2, "64 segments, then the rest");
        assert_eq!(runs[0].datagrams(), MAX_SEGMENTS);
    }
}
