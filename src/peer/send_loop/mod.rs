//! The camera's viewers in one loop of meshcam's own ([`crate::engine`]),
//! instead of a task, a track and a sender task per viewer on the `webrtc`
//! crate's driver.
//!
//! One task owns the engine, the UDP sockets (one per interface address,
//! shared by every connection: [`crate::engine::host`]) and every viewer.
//! It wakes once per encoded frame and writes it to each viewer that gets
//! that layer, then hands each connection's packets to the kernel as one
//! GSO send; it wakes for datagrams (read from every socket in `recvmmsg`
//! batches), for the supervisor's commands, and at the
//! earliest deadline of all connections. One loop rather than shards: on
//! the boards meshcam runs on, a viewer costs microseconds per frame in
//! it, and one loop keeps the frames' order and the viewers' state without
//! a lock.
//!
//! The supervisor sees no difference: a viewer here has a [`PeerHandle`]
//! whose commands a small task forwards, and reports the same
//! [`PeerEvent`]s. The configured STUN and TURN servers are resolved in a
//! task and asked once for all viewers ([`crate::engine::gather`]); their
//! candidates trickle to the viewers already connecting. A camera with
//! multicast DNS, or a connection with ICE servers of its own (a WHIP
//! server's), keeps the per-connection tasks.

mod ice_servers;
mod status;
mod viewer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::sleep_until;

use super::layer_needs::LayerNeeds;
use super::stats::STATS_INTERVAL;
use super::video_stream::TICK;
use super::{
    Outgoing, PeerCommand, PeerError, PeerEvent, PeerFactory, PeerHandle, PeerSpec, SendPath,
    SenderCounters,
};
use crate::engine::gather::{Gathered, Gatherer, Server};
use crate::engine::transmit::Transmit;
use crate::engine::udp::{EngineSocket, RecvBatch, SendMode};
use crate::engine::{ConnectionId, Engine, host};
use crate::media::EncodedFrame;
pub use status::LoopStatus;
use viewer::Viewer;

/// What the forwarding tasks and the supervisor ask of the loop.
enum Command {
    Open {
        key: u64,
        spec: PeerSpec,
        counters: Arc<SenderCounters>,
        events: mpsc::UnboundedSender<PeerEvent>,
    },
    Peer(u64, PeerCommand),
    Pin(u64, Option<usize>),
    Close(u64),
    /// The configured STUN and TURN servers, resolved.
    Servers(Vec<Server>),
}

/// The running loop, as the factory holds it.
pub struct SendLoop {
    commands: mpsc::UnboundedSender<Command>,
    next_key: AtomicU64,
    media: Outgoing,
    status: Arc<LoopStatus>,
}

impl SendLoop {
    /// Binds the sockets and starts the loop for the camera's `media`.
    pub fn start(factory: Arc<PeerFactory>, media: Outgoing) -> anyhow::Result<Self> {
        let (bind, port) = factory.send_loop_bind();
        let addresses = host::listen_addresses(bind, host::interface_addresses());
        let mut sockets = Vec::new();
        for ip in addresses {
            let socket = EngineSocket::bind(SocketAddr::new(ip, port)).map_err(|e| {
                anyhow::anyhow!("binding the media socket on {ip} port {port}: {e}")
            })?;
            tracing::info!(address = %socket.local_addr(), mode = ?socket.send_mode(), "media socket");
            sockets.push(Arc::new(socket));
        }
        let status = Arc::new(LoopStatus::new(sockets.clone()));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let host = sockets
            .iter()
            .map(|s| host::host_candidate(s.local_addr()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("a host candidate: {e}"))?;
        let wanted = ice_servers::wanted(factory.ice_servers());
        let gathering = !wanted.is_empty();
        if gathering {
            let to_loop = commands.clone();
            tokio::spawn(async move {
                let servers = ice_servers::resolve(wanted).await;
                let _ = to_loop.send(Command::Servers(servers));
            });
        }
        let run = Run {
            factory,
            engine: Engine::default(),
            batches: sockets.iter().map(|_| RecvBatch::default()).collect(),
            sockets,
            host,
            gatherer: None,
            gathering,
            status: status.clone(),
            viewers: HashMap::new(),
            keys: HashMap::new(),
            needs: LayerNeeds::new(),
            media: media.clone(),
        };
        tokio::spawn(run.run(command_rx));
        Ok(Self {
            commands,
            next_key: AtomicU64::new(0),
            media,
            status,
        })
    }

    /// What telemetry shows of the loop.
    pub fn status(&self) -> &LoopStatus {
        &self.status
    }

    /// Whether this loop sends `media` (it serves one camera's feeds).
    pub fn sends(&self, media: &Outgoing) -> bool {
        self.media.video.same(&media.video)
    }

    /// A viewer's connection in the loop, behind a handle like any peer's.
    pub fn open(&self, spec: PeerSpec, events: mpsc::UnboundedSender<PeerEvent>) -> PeerHandle {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(SenderCounters::default());
        let (pin, mut pin_rx) = watch::channel(spec.pin);
        let _ = self.commands.send(Command::Open {
            key,
            spec,
            counters: counters.clone(),
            events,
        });
        let (commands, mut command_rx) = mpsc::unbounded_channel();
        let to_loop = self.commands.clone();
        // Forwards the handle's commands and pin; dropping the handle
        // closes the connection.
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(c) => { let _ = to_loop.send(Command::Peer(key, c)); }
                        None => break,
                    },
                    changed = pin_rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let _ = to_loop.send(Command::Pin(key, *pin_rx.borrow()));
                    }
                }
            }
            let _ = to_loop.send(Command::Close(key));
        });
        PeerHandle {
            commands,
            task,
            counters,
            pin,
        }
    }
}

/// The loop's state.
struct Run {
    factory: Arc<PeerFactory>,
    engine: Engine,
    sockets: Vec<Arc<EngineSocket>>,
    /// The sockets' candidates.
    host: Vec<RTCIceCandidateInit>,
    /// Candidates from the STUN and TURN servers, once they are resolved.
    gatherer: Option<Gatherer>,
    /// The servers are being resolved.
    gathering: bool,
    status: Arc<LoopStatus>,
    /// A receive batch per socket.
    batches: Vec<RecvBatch>,
    viewers: HashMap<ConnectionId, Viewer>,
    keys: HashMap<u64, ConnectionId>,
    needs: LayerNeeds,
    media: Outgoing,
}

impl Run {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (media_tx, mut media) = mpsc::channel(64);
        for (layer, feed) in self.media.video.iter().enumerate() {
            tokio::spawn(forward(feed.watch().0, media_tx.clone(), move |frame| {
                Some(Media::Frame(layer, frame))
            }));
        }
        if let Some(feed) = &self.media.audio {
            tokio::spawn(forward(feed.subscribe(), media_tx.clone(), |packet| {
                packet.ok().map(Media::Sound)
            }));
        }
        drop(media_tx);
        let start = tokio::time::Instant::now();
        let mut next_tick = start + TICK;
        let mut next_check = start + STATS_INTERVAL;
        loop {
            let deadline = self
                .engine
                .poll_timeout()
                .into_iter()
                .chain(self.gatherer.as_mut().and_then(Gatherer::poll_timeout))
                .min()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(next_tick)
                .min(next_tick)
                .min(next_check);
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    self.command(command);
                }
                (socket, received) = recv_any(&self.sockets, &mut self.batches) => {
                    let now = Instant::now();
                    match received {
                        Ok(_) => {
                            let local = self.sockets[socket].local_addr();
                            for d in self.batches[socket].datagrams() {
                                let local = d.local.unwrap_or(local);
                                match &mut self.gatherer {
                                    Some(g) if g.owns(local, d.remote) => {
                                        g.handle_datagram(now, local, d.remote, d.contents);
                                    }
                                    _ => self.engine.handle_datagram(now, local, d.remote, d.contents),
                                }
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "reading a media socket"),
                    }
                }
                Some(item) = media.recv() => {
                    let now = Instant::now();
                    match item {
                        Media::Frame(layer, Ok(frame)) => {
                            for viewer in self.viewers.values_mut() {
                                if viewer.watches(layer) {
                                    viewer.frame(&mut self.engine, now, layer, &frame);
                                }
                            }
                        }
                        Media::Frame(layer, Err(RecvError::Lagged(missed))) => {
                            for viewer in self.viewers.values_mut() {
                                viewer.lagged(&mut self.engine, now, layer, missed);
                            }
                        }
                        Media::Frame(_, Err(RecvError::Closed)) => return,
                        Media::Sound(packet) => {
                            for viewer in self.viewers.values_mut() {
                                viewer.sound(&mut self.engine, now, &packet);
                            }
                        }
                    }
                }
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.engine.handle_timeout(now);
                    if let Some(g) = &mut self.gatherer {
                        g.handle_timeout(now);
                    }
                    let tokio_now = tokio::time::Instant::now();
                    if tokio_now >= next_tick {
                        next_tick = tokio_now + TICK;
                        let needs = self.needs.update(now, &self.media.video);
                        for viewer in self.viewers.values_mut() {
                            viewer.tick(&mut self.engine, now, &needs);
                        }
                    }
                    if tokio_now >= next_check {
                        next_check = tokio_now + STATS_INTERVAL;
                        self.check(now);
                    }
                }
            }
            self.settle();
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Open {
                key,
                spec,
                counters,
                events,
            } => {
                let link = spec.link;
                let mut candidates = self.host.clone();
                let gathered = self.gatherer.as_ref();
                candidates.extend(gathered.into_iter().flat_map(|g| g.candidates()).cloned());
                match Viewer::open(
                    now,
                    &mut self.engine,
                    &self.factory,
                    spec,
                    counters,
                    events.clone(),
                    candidates,
                    gathered.is_none_or(Gatherer::complete) && !self.gathering,
                ) {
                    Ok(viewer) => {
                        let path = match self.sockets.first().map(|s| s.send_mode()) {
                            Some(SendMode::Gso { .. }) => SendPath::LoopGso,
                            _ => SendPath::LoopPerDatagram,
                        };
                        viewer
                            .counters
                            .send_path
                            .store(path as u8, Ordering::Relaxed);
                        self.keys.insert(key, viewer.id);
                        self.viewers.insert(viewer.id, viewer);
                    }
                    Err(e) => {
                        let _ = events.send(PeerEvent::Error(link, PeerError::setup(e)));
                    }
                }
            }
            Command::Peer(key, command) => {
                let Some(id) = self.keys.get(&key).copied() else {
                    return;
                };
                let Some(viewer) = self.viewers.get_mut(&id) else {
                    return;
                };
                if let Err(e) = viewer.command(&mut self.engine, now, command) {
                    viewer.error(PeerError::negotiation(e));
                    self.end(id, now);
                }
            }
            Command::Pin(key, layer) => {
                if let Some(viewer) = self.keys.get(&key).and_then(|id| self.viewers.get_mut(id)) {
                    viewer.pin(layer);
                }
            }
            Command::Close(key) => {
                if let Some(id) = self.keys.remove(&key) {
                    self.end(id, now);
                }
            }
            Command::Servers(servers) => {
                let locals: Vec<SocketAddr> = self.sockets.iter().map(|s| s.local_addr()).collect();
                let crypto = self.factory.crypto().clone();
                self.gatherer = Some(Gatherer::new(now, &locals, &servers, &crypto));
                self.gathering = false;
            }
        }
    }

    /// Ends a connection: its close goes out, its state goes.
    fn end(&mut self, id: ConnectionId, now: Instant) {
        self.engine.close(id, now);
        self.viewers.remove(&id);
        self.keys.retain(|_, c| *c != id);
    }

    /// Statistics and liveness of every viewer, and the engine's counts
    /// for telemetry.
    fn check(&mut self, now: Instant) {
        self.status.engine_counted(self.engine.counters());
        if let Some(g) = &self.gatherer {
            self.status.servers_seen(g.servers());
        }
        let gone: Vec<ConnectionId> = self
            .viewers
            .values_mut()
            .filter_map(|v| v.check(&mut self.engine, now).map(|_| v.id))
            .collect();
        for id in gone {
            self.end(id, now);
        }
    }

    /// Hands what the engine has to send to the socket it leaves from:
    /// the one bound to its address, or a wildcard one on its port; what
    /// leaves from a relay address goes through its TURN server.
    fn flush(&mut self, now: Instant) {
        while let Some(transmit) = self.engine.poll_transmit() {
            match &mut self.gatherer {
                Some(g) if g.is_relay(transmit.local) => g.send(now, &transmit),
                _ => send_from(&self.sockets, &transmit),
            }
        }
        if let Some(g) = &mut self.gatherer {
            while let Some(transmit) = g.poll_transmit() {
                send_from(&self.sockets, &transmit);
            }
        }
    }

    /// What the gatherer found, for the engine and the viewers.
    fn gathered(&mut self, now: Instant) {
        let Some(g) = &mut self.gatherer else {
            return;
        };
        while let Some((relay, peer, datagram)) = g.poll_relayed() {
            self.engine.handle_datagram(now, relay, peer, &datagram);
        }
        while let Some(event) = g.poll_event() {
            match event {
                Gathered::Candidate(init) => {
                    for viewer in self.viewers.values_mut() {
                        viewer.gathered(&mut self.engine, now, Some(init.clone()));
                    }
                }
                Gathered::Complete => {
                    for viewer in self.viewers.values_mut() {
                        viewer.gathered(&mut self.engine, now, None);
                    }
                }
            }
        }
    }

    /// Everything the engine has for the outside: datagrams to the
    /// sockets, events and RTCP to the viewers.
    fn settle(&mut self) {
        let now = Instant::now();
        self.gathered(now);
        self.flush(now);
        while let Some((id, event)) = self.engine.poll_event() {
            let Some(viewer) = self.viewers.get_mut(&id) else {
                continue;
            };
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                viewer.state(&mut self.engine, now, state);
            }
        }
        while let Some((id, read)) = self.engine.poll_read() {
            let Some(viewer) = self.viewers.get(&id) else {
                continue;
            };
            match read.message {
                RTCMessage::RtcpPacket(_, packets)
                    if packets
                        .iter()
                        .any(|p| super::feedback::is_keyframe_request(p.as_ref())) =>
                {
                    viewer.keyframe_request();
                }
                RTCMessage::RtpPacket(_, packet) => viewer.heard(&packet),
                _ => {}
            }
        }
        // Handling events may have queued more.
        self.flush(now);
    }
}

/// Sends `transmit` from the socket at its local address, or a wildcard
/// one on its port.
fn send_from(sockets: &[Arc<EngineSocket>], transmit: &Transmit) {
    let socket = sockets
        .iter()
        .find(|s| s.local_addr() == transmit.local)
        .or_else(|| {
            sockets.iter().find(|s| {
                s.local_addr().ip().is_unspecified()
                    && s.local_addr().port() == transmit.local.port()
            })
        });
    if let Some(socket) = socket {
        socket.send(transmit);
    }
}

/// The first of the sockets to have received something, with what it
/// received in its batch.
async fn recv_any(
    sockets: &[Arc<EngineSocket>],
    batches: &mut [RecvBatch],
) -> (usize, std::io::Result<usize>) {
    std::future::poll_fn(|cx| {
        for (i, (socket, batch)) in sockets.iter().zip(batches.iter_mut()).enumerate() {
            if let std::task::Poll::Ready(received) = socket.poll_recv(cx, batch) {
                return std::task::Poll::Ready((i, received));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// What the camera's feeds bring the loop.
enum Media {
    Frame(usize, Result<Arc<EncodedFrame>, RecvError>),
    Sound(Arc<EncodedFrame>),
}

/// Hands a feed's frames to the loop, one wake per frame. A loop that
/// falls behind makes the feed lag, and the viewers of that layer wait for
/// its next key frame.
async fn forward(
    mut feed: broadcast::Receiver<Arc<EncodedFrame>>,
    to_loop: mpsc::Sender<Media>,
    wrap: impl Fn(Result<Arc<EncodedFrame>, RecvError>) -> Option<Media>,
) {
    loop {
        let item = feed.recv().await;
        let closed = matches!(item, Err(RecvError::Closed));
        if let Some(media) = wrap(item)
            && to_loop.send(media).await.is_err()
        {
            return;
        }
        if closed {
            return;
        }
    }
}
