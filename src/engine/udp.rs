//! The engine's socket: runs of datagrams out in one system call, batches of
//! datagrams in.
//!
//! A video frame leaves for a viewer as a run of datagrams ([`Transmit`]).
//! With UDP GSO (`UDP_SEGMENT`, Linux 4.18) the kernel takes the whole run
//! in one `sendmsg` and cuts it itself: one system call per frame and
//! viewer instead of one per packet. Without it (another kernel, or turned
//! off by hand) each datagram is its own `sendmsg`. What comes in is read
//! with `recvmmsg`, up to [`BATCH_SIZE`] messages a call, and where the
//! kernel merges same-sized datagrams of one sender (UDP GRO) a message is
//! cut back into its datagrams by its stride.
//!
//! `quinn-udp` does the system calls: it is the crate Quinn's QUIC is built
//! on, kept up with the kernels' offloads and their failures (a NIC that
//! refuses GSO turns it off for the socket), and made for exactly this.
//!
//! Sending never waits. A full send buffer drops what it would have taken
//! and the rest of that transmit, and says so in [`Sent`]: the loop goes on
//! with the next viewer, as a full queue on the wire would have done
//! anyway, and the viewer's NACKs or PLIs ask again.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::transmit::{MAX_BYTES, Transmit};

/// The room for one message received: the largest UDP datagram, and the
/// most the kernel merges into one message with GRO (64 KiB).
const SLOT: usize = 1 << 16;

/// How transmits leave the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// A run in one `sendmsg`, cut by the kernel into up to `max_segments`
    /// datagrams.
    Gso { max_segments: usize },
    /// One `sendmsg` per datagram.
    PerDatagram,
}

/// What became of one transmit's datagrams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// System calls made.
    pub calls: usize,
    /// Datagrams the kernel took.
    pub datagrams: usize,
    /// Datagrams dropped because the send buffer was full.
    pub full: usize,
    /// Datagrams the kernel refused (no route, too large, ...).
    pub refused: usize,
}

/// What a socket has counted since it was bound, for telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpCounters {
    pub send_calls: u64,
    pub sent: u64,
    pub full: u64,
    pub refused: u64,
    /// `recvmmsg` calls that returned something, and the datagrams they
    /// brought.
    pub recv_calls: u64,
    pub received: u64,
}

#[derive(Debug, Default)]
struct Counters {
    send_calls: AtomicU64,
    sent: AtomicU64,
    full: AtomicU64,
    refused: AtomicU64,
    recv_calls: AtomicU64,
    received: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    if n > 0 {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One of the engine's UDP sockets.
#[derive(Debug)]
pub struct EngineSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    gso_off: AtomicBool,
    counters: Counters,
}

impl EngineSocket {
    /// Binds a non-blocking socket at `addr`, with GSO and GRO where the
    /// kernel has them. Must be called within a Tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addr)?;
        // Also makes the socket non-blocking.
        let state = UdpSocketState::new((&socket).into())?;
        let local = socket.local_addr()?;
        Ok(Self {
            socket: UdpSocket::from_std(socket)?,
            state,
            local,
            gso_off: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram per `sendmsg` from now on, whatever the kernel
    /// offers.
    pub fn disable_gso(&self) {
        self.gso_off.store(true, Ordering::Relaxed);
    }

    /// How transmits leave now: chosen at bind, and per datagram from the
    /// moment GSO is turned off (by hand, or by `quinn-udp` when the kernel
    /// refused a GSO send).
    pub fn send_mode(&self) -> SendMode {
        match self.state.max_gso_segments() {
            max_segments if max_segments > 1 && !self.gso_off.load(Ordering::Relaxed) => {
                SendMode::Gso { max_segments }
            }
            _ => SendMode::PerDatagram,
        }
    }

    /// The size of the send buffer, and the receive buffer, the kernel
    /// gave (it may double what was asked, or cap it at `wmem_max` and
    /// `rmem_max`).
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        Ok((
            self.state.send_buffer_size((&self.socket).into())?,
            self.state.recv_buffer_size((&self.socket).into())?,
        ))
    }

    pub fn set_buffer_sizes(&self, send: usize, recv: usize) -> io::Result<()> {
        self.state
            .set_send_buffer_size((&self.socket).into(), send)?;
        self.state.set_recv_buffer_size((&self.socket).into(), recv)
    }

    /// Sends a transmit without waiting: in as few GSO sends as the
    /// kernel's limits allow, or datagram by datagram. When the send
    /// buffer is full, what is left of the transmit is dropped.
    pub fn send(&self, transmit: &Transmit) -> Sent {
        let segment = transmit.segment.max(1);
        let contents = transmit.contents.as_slice();
        // A socket bound to every address sends from the one the viewer
        // knows.
        let src_ip = (self.local.ip().is_unspecified() && !transmit.local.ip().is_unspecified())
            .then(|| transmit.local.ip());
        let mut sent = Sent::default();
        let mut offset = 0;
        while offset < contents.len() {
            let per_send = match self.send_mode() {
                SendMode::Gso { max_segments } => max_segments.min(MAX_BYTES / segment).max(1),
                SendMode::PerDatagram => 1,
            };
            let chunk = &contents[offset..contents.len().min(offset + segment * per_send)];
            let datagrams = chunk.len().div_ceil(segment);
            let out = quinn_udp::Transmit {
                destination: transmit.remote,
                ecn: None,
                contents: chunk,
                segment_size: (datagrams > 1).then_some(segment),
                src_ip,
            };
            sent.calls += 1;
            // Straight to the kernel, not through Tokio's readiness: a send
            // is never waited for, so there is no readiness to keep.
            match self.state.try_send((&self.socket).into(), &out) {
                Ok(()) => sent.datagrams += datagrams,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sent.full += (contents.len() - offset).div_ceil(segment);
                    break;
                }
                // The kernel refused GSO and `quinn-udp` has turned it off:
                // the same datagrams again, one by one.
                Err(e) if datagrams > 1 && self.send_mode() == SendMode::PerDatagram => {
                    tracing::debug!(error = %e, remote = %transmit.remote, "a GSO send refused");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, remote = %transmit.remote, "a send refused");
                    sent.refused += datagrams;
                }
            }
            offset += chunk.len();
        }
        let c = &self.counters;
        add(&c.send_calls, sent.calls);
        add(&c.sent, sent.datagrams);
        add(&c.full, sent.full);
        add(&c.refused, sent.refused);
        sent
    }

    /// Waits until something came, and reads what is waiting into `batch`
    /// (up to [`BATCH_SIZE`] messages in one `recvmmsg`). Returns how many
    /// datagrams it holds now; [`RecvBatch::datagrams`] gives them.
    pub async fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_recv(cx, batch)).await
    }

    /// [`EngineSocket::recv`] for a loop that waits on several sockets at
    /// once: the socket's readiness, not a future, keeps the wake-up, so
    /// polling it among others loses nothing.
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        batch: &mut RecvBatch,
    ) -> Poll<io::Result<usize>> {
        batch.messages = 0;
        batch.local = self.local;
        loop {
            ready!(self.socket.poll_recv_ready(cx))?;
            let RecvBatch { buf, meta, .. } = &mut *batch;
            let received = self.socket.try_io(Interest::READABLE, || {
                let mut slots = buf.chunks_mut(SLOT);
                let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] = std::array::from_fn(|_| {
                    IoSliceMut::new(slots.next().expect("a slot per message"))
                });
                self.state.recv((&self.socket).into(), &mut bufs, meta)
            });
            let messages = match received {
                Ok(messages) => messages,
                // The readiness was stale: it is cleared, wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            batch.messages = messages;
            let datagrams = batch.meta[..messages]
                .iter()
                .map(|m| m.len.div_ceil(m.stride.max(1)))
                .sum();
            add(&self.counters.recv_calls, 1);
            add(&self.counters.received, datagrams);
            return Poll::Ready(Ok(datagrams));
        }
    }

    pub fn counters(&self) -> UdpCounters {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        UdpCounters {
            send_calls: get(&c.send_calls),
            sent: get(&c.sent),
            full: get(&c.full),
            refused: get(&c.refused),
            recv_calls: get(&c.recv_calls),
            received: get(&c.received),
        }
    }
}

/// One datagram received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub remote: SocketAddr,
    /// The address it came to: the socket's own, or on a socket bound to
    /// every address, the one the kernel says (`IP_PKTINFO`).
    pub local: Option<SocketAddr>,
    pub contents: &'a [u8],
}

/// The buffers of one receive, used again for the next: [`BATCH_SIZE`]
/// slots of 64 KiB.
pub struct RecvBatch {
    buf: Box<[u8]>,
    meta: [RecvMeta; BATCH_SIZE],
    messages: usize,
    local: SocketAddr,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buf: vec![0; SLOT * BATCH_SIZE].into_boxed_slice(),
            meta: [RecvMeta::default(); BATCH_SIZE],
            messages: 0,
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// The datagrams of the last receive, in the order they came. An empty
    /// datagram yields nothing.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        let bound = (!self.local.ip().is_unspecified()).then_some(self.local);
        self.meta[..self.messages]
            .iter()
            .zip(self.buf.chunks(SLOT))
            .flat_map(move |(meta, slot)| {
                let local = meta
                    .dst_ip
                    .map(|ip| SocketAddr::new(ip, self.local.port()))
                    .or(bound);
                slot[..meta.len]
                    .chunks(meta.stride.max(1))
                    .map(move |contents| Datagram {
                        remote: meta.addr,
                        local,
                        contents,
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use tokio::time::timeout;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A run of datagrams, the `i`th filled with `i` and as long as
    /// `sizes[i]`.
    fn run(from: &EngineSocket, to: SocketAddr, sizes: &[usize]) -> Transmit {
        let mut contents = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            contents.extend(std::iter::repeat_n(i as u8, len));
        }
        Transmit {
            local: from.local_addr(),
            remote: to,
            segment: sizes[0],
            contents,
        }
    }

    /// Receives until `count` datagrams came; each with the size of the
    /// batch it came in.
    async fn receive(
        socket: &EngineSocket,
        count: usize,
    ) -> Vec<(SocketAddr, Option<SocketAddr>, Vec<u8>, usize)> {
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        timeout(DEADLINE, async {
            while got.len() < count {
                let n = socket.recv(&mut batch).await.expect("recv");
                assert_eq!(batch.datagrams().count(), n);
                got.extend(
                    batch
                        .datagrams()
                        .map(|d| (d.remote, d.local, d.contents.to_vec(), n)),
                );
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} of {count} datagrams came", got.len()));
        got
    }

    fn shapes(got: &[(SocketAddr, Option<SocketAddr>, Vec<u8>, usize)]) -> Vec<(u8, usize)> {
        got.iter().map(|(_, _, d, _)| (d[0], d.len())).collect()
    }

    const FRAME: [usize; 5] = [1200, 1200, 1200, 1200, 700];

    /// Sends [`FRAME`] in one transmit, which takes `calls` system calls,
    /// and checks that it arrives whole and in order.
    async fn send_frame(
        sender: &EngineSocket,
        receiver: &EngineSocket,
        calls: usize,
    ) -> Vec<(SocketAddr, Option<SocketAddr>, Vec<u8>, usize)> {
        let sent = sender.send(&run(sender, receiver.local_addr(), &FRAME));
        assert_eq!(
            sent,
            Sent {
                calls,
                datagrams: 5,
                ..Sent::default()
            }
        );
        let got = receive(receiver, 5).await;
        assert_eq!(
            shapes(&got),
            [(0, 1200), (1, 1200), (2, 1200), (3, 1200), (4, 700)]
        );
        got
    }

    #[tokio::test]
    async fn a_gso_run_arrives_as_its_datagrams_in_order() {
        let sender = EngineSocket::bind(loopback()).unwrap();
        let receiver = EngineSocket::bind(loopback()).unwrap();
        assert!(
            matches!(sender.send_mode(), SendMode::Gso { max_segments } if max_segments >= 5),
            "this kernel has GSO: {:?}",
            sender.send_mode()
        );
        let got = send_frame(&sender, &receiver, 1).await;
        assert!(
            got.iter()
                .all(|(remote, local, _, _)| *remote == sender.local_addr()
                    && *local == Some(receiver.local_addr()))
        );
        let counters = receiver.counters();
        assert_eq!((counters.received, counters.sent), (5, 0));
        assert_eq!(sender.counters().send_calls, 1);
    }

    #[tokio::test]
    async fn the_same_run_sent_per_datagram_arrives_the_same() {
        let sender = EngineSocket::bind(loopback()).unwrap();
        let receiver = EngineSocket::bind(loopback()).unwrap();
        sender.disable_gso();
        assert_eq!(sender.send_mode(), SendMode::PerDatagram);
        send_frame(&sender, &receiver, 5).await;
        let counters = sender.counters();
        assert_eq!((counters.send_calls, counters.sent), (5, 5));
    }

    #[tokio::test]
    async fn a_run_longer_than_one_gso_send_is_split_and_all_arrives() {
        let sender = EngineSocket::bind(loopback()).unwrap();
        let receiver = EngineSocket::bind(loopback()).unwrap();
        let SendMode::Gso { max_segments } = sender.send_mode() else {
            panic!("this kernel has GSO");
        };
        let sizes = [1200; 100];
        let per_send = max_segments.min(MAX_BYTES / 1200);
        assert!(per_send < 100);
        let sent = sender.send(&run(&sender, receiver.local_addr(), &sizes));
        assert_eq!(
            sent,
            Sent {
                calls: 100usize.div_ceil(per_send),
                datagrams: 100,
                ..Sent::default()
            }
        );
        let got = receive(&receiver, 100).await;
        let expected: Vec<(u8, usize)> = (0..100).map(|i| (i, 1200)).collect();
        assert_eq!(shapes(&got), expected);
    }

    #[tokio::test]
    async fn one_receive_returns_several_waiting_datagrams() {
        let sender = EngineSocket::bind(loopback()).unwrap();
        let receiver = EngineSocket::bind(loopback()).unwrap();
        sender.disable_gso();
        // Five datagrams of different sizes: no GRO merges them.
        let sizes = [500, 400, 300, 200, 100];
        for (i, len) in sizes.into_iter().enumerate() {
            let transmit = Transmit {
                local: sender.local_addr(),
                remote: receiver.local_addr(),
                segment: len,
                contents: vec![i as u8; len],
            };
            assert_eq!(sender.send(&transmit).datagrams, 1);
        }
        let got = receive(&receiver, 5).await;
        assert_eq!(
            shapes(&got),
            [(0, 500), (1, 400), (2, 300), (3, 200), (4, 100)]
        );
        let largest = got.iter().map(|(_, _, _, batch)| *batch).max();
        assert!(
            largest >= Some(2),
            "one datagram per receive: {:?}",
            receiver.counters()
        );
        assert!(receiver.counters().recv_calls < 5);
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_breaks_neither_later_sends_nor_receives() {
        let sender = EngineSocket::bind(loopback()).unwrap();
        let receiver = EngineSocket::bind(loopback()).unwrap();
        let nobody = std::net::UdpSocket::bind(loopback()).unwrap();
        let gone = nobody.local_addr().unwrap();
        drop(nobody);

        for per_datagram in [false, true] {
            if per_datagram {
                sender.disable_gso();
            }
            for _ in 0..3 {
                let sent = sender.send(&run(&sender, gone, &FRAME));
                assert_eq!(sent.datagrams + sent.refused, 5, "{sent:?}");
            }
            let sent = sender.send(&run(&sender, receiver.local_addr(), &FRAME));
            assert_eq!(sent.datagrams, 5, "{sent:?}");
            let got = receive(&receiver, 5).await;
            assert_eq!(shapes(&got).len(), 5);
        }

        // And the sender still receives.
        receiver.send(&run(&receiver, sender.local_addr(), &[300]));
        let got = receive(&sender, 1).await;
        assert_eq!(shapes(&got), [(0, 300)]);
        assert_eq!(got[0].0, receiver.local_addr());
    }

    #[tokio::test]
    async fn a_socket_bound_to_every_address_sends_from_and_tells_the_one_used() {
        let sender = EngineSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
        let receiver = EngineSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
        let from = SocketAddr::from(([127, 0, 0, 1], sender.local_addr().port()));
        let to = SocketAddr::from(([127, 0, 0, 1], receiver.local_addr().port()));
        let mut transmit = run(&sender, to, &FRAME);
        transmit.local = from;
        assert_eq!(sender.send(&transmit).datagrams, 5);
        let got = receive(&receiver, 5).await;
        assert_eq!(shapes(&got).len(), 5);
        assert!(
            got.iter()
                .all(|(remote, local, _, _)| *remote == from && *local == Some(to)),
            "{:?}",
            got.iter()
                .map(|(remote, local, _, _)| (remote, local))
                .collect::<Vec<_>>()
        );
    }

    /// What a send costs, per datagram, with GSO and without: frames of
    /// eight 1200-byte datagrams to a receiver on another thread.
    /// `cargo test --release --lib engine::udp -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn send_cost() {
        const DATAGRAMS: usize = 100_000;
        const RUN: usize = 8;

        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let receiving = {
            let (done, received) = (done.clone(), received.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let socket = EngineSocket::bind(loopback()).unwrap();
                    let _ = socket.set_buffer_sizes(1 << 22, 1 << 22);
                    addr_tx.send(socket.local_addr()).unwrap();
                    let mut batch = RecvBatch::default();
                    while !done.load(Ordering::Relaxed) {
                        if let Ok(n) =
                            timeout(Duration::from_millis(100), socket.recv(&mut batch)).await
                        {
                            received.fetch_add(n.unwrap(), Ordering::Relaxed);
                        }
                    }
                })
            })
        };
        let to = addr_rx.recv().unwrap();
        // What the receiver has once it is idle.
        let settled = || {
            let mut last = received.load(Ordering::Relaxed);
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                let now = received.load(Ordering::Relaxed);
                if now == last {
                    break;
                }
                last = now;
            }
            last
        };

        // A first round, not shown, warms up both ends.
        for (round, per_datagram) in [false, false, true, false, true].into_iter().enumerate() {
            let sender = EngineSocket::bind(loopback()).unwrap();
            if per_datagram {
                sender.disable_gso();
            }
            let frame = Transmit {
                local: sender.local_addr(),
                remote: to,
                segment: 1200,
                contents: vec![0x80; 1200 * RUN],
            };
            let before = settled();
            let started = Instant::now();
            for _ in 0..DATAGRAMS / RUN {
                sender.send(&frame);
            }
            let took = started.elapsed();
            let delivered = settled() - before;
            let counters = sender.counters();
            if round == 0 {
                continue;
            }
            println!(
                "{:?}: {DATAGRAMS} datagrams of 1200 B in runs of {RUN}: {took:?}, \
                 {:.3} µs per datagram, {} sendmsg, {} full, {} refused, {delivered} received",
                sender.send_mode(),
                took.as_secs_f64() * 1e6 / DATAGRAMS as f64,
                counters.send_calls,
                counters.full,
                counters.refused,
            );
        }
        done.store(true, Ordering::Relaxed);
        receiving.join().unwrap();
    }
}
