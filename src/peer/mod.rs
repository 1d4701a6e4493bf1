//! One WebRTC connection to one remote participant, run as its own task.
//!
//! The supervisor never awaits a peer connection: it sends [`PeerCommand`]s
//! (descriptions, candidates, ICE restart, close) and receives
//! [`PeerEvent`]s (our descriptions and candidates to signal, state changes,
//! key-frame requests, remote tracks). Our own candidates are held back
//! until the other side can use them: an answerer's until its answer is out,
//! an offerer's until the answer is applied. An offerer's candidates sent
//! with the offer let the other side check them before we know its ICE
//! credentials; those checks are dropped (RFC 8445 lets nothing answer them
//! yet) and browsers try again only some 50 ms later, most of a LAN join.
//!
//! A sending peer (the camera) gets its own track and its own sender task on
//! the shared frame feed (webrtc 0.21 binds a local track to one connection
//! only). A receiving peer (a viewer) reports the remote track instead.
//!
//! Owns: one connection's negotiation, its tasks and counters. Must not
//! touch: the room rules (whether to connect, retry or close is the room's),
//! topics, the encoder (key frames are requested through the feed).

pub mod answer;
mod congestion;
pub mod factory;
pub mod feedback;
mod layer_needs;
pub mod liveness;
mod negotiation;
mod outbound;
mod padding;
mod reports;
mod retransmit;
mod send_loop;
pub mod sender;
mod sound;
pub mod stats;
pub mod video_stream;

use std::sync::Arc;

use anyhow::Context;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};

use liveness::{Gone, Liveness};
use negotiation::{Negotiation, Step};
use outbound::add_tracks;
use stats::{Consent, STATS_INTERVAL, read_stats};

use crate::media::speaker::SpeakerFeed;
use crate::media::{AudioFeed, VideoLayers};
use crate::protocol::{Candidate, SignalBody};
use crate::room::{LinkId, LinkState};
pub use factory::{PeerFactory, Wiring};
pub use feedback::Feedback;
pub use sender::{Adaptation, SendPath, SenderCounters};

/// What the supervisor asks of a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerCommand {
    ApplyOffer(String),
    ApplyAnswer(String),
    AddCandidate(Option<Candidate>),
    RestartIce,
    /// The viewer was granted the floor (`true`: the camera offers again,
    /// for the viewer's sound, and plays it) or lost it.
    Talk(bool),
}

/// What a peer reports, tagged with its link.
pub enum PeerEvent {
    /// An offer, answer or candidate to signal to the remote side.
    Signal(LinkId, SignalBody),
    State(LinkId, LinkState),
    /// The remote side asked for a key frame (PLI or FIR).
    KeyframeRequest(LinkId),
    /// A remote track arrived (receiving peers).
    Track(LinkId, Arc<dyn TrackRemote>),
    /// The connection could not go on.
    Error(LinkId, PeerError),
    /// The remote side cannot receive what we send; the reason says why.
    Incompatible(LinkId, String),
}

/// Why a connection could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// It could not be built on this machine (sockets, interfaces, tracks).
    #[error("the connection could not be set up: {0}")]
    Setup(String),
    /// A description could not be made or applied.
    #[error("the negotiation failed: {0}")]
    Negotiation(String),
}

impl PeerError {
    pub fn setup(e: anyhow::Error) -> Self {
        Self::Setup(format!("{e:#}"))
    }

    pub fn negotiation(e: anyhow::Error) -> Self {
        Self::Negotiation(format!("{e:#}"))
    }
}

/// The supervisor's handle on a running peer. Dropping it closes the peer.
pub struct PeerHandle {
    commands: mpsc::UnboundedSender<PeerCommand>,
    task: JoinHandle<()>,
    pub counters: Arc<SenderCounters>,
    pin: watch::Sender<Option<usize>>,
}

impl PeerHandle {
    pub fn send(&self, command: PeerCommand) {
        // A peer that already ended has reported why; nothing to add.
        let _ = self.commands.send(command);
    }

    /// Holds the viewer on a layer, or (`None`) lets it adapt.
    pub fn pin(&self, layer: Option<usize>) {
        self.pin.send_replace(layer);
    }

    /// Closes the connection and frees what it holds.
    pub fn close(self) {
        drop(self.commands);
        // The task sees the closed command channel, closes the connection
        // and ends; it is detached so the supervisor does not wait for it.
        drop(self.task);
    }
}

/// What a camera sends every viewer: the picture's layers and, when there
/// is a microphone, its sound, in one media stream; and when it has a
/// speaker, where a viewer that talks is played.
#[derive(Clone)]
pub struct Outgoing {
    pub video: VideoLayers,
    pub audio: Option<AudioFeed>,
    pub speaker: Option<SpeakerFeed>,
}

/// How one peer is set up.
pub struct PeerSpec {
    pub link: LinkId,
    pub offerer: bool,
    /// Send this (cameras); `None` receives video and sound instead
    /// (viewers).
    pub media: Option<Outgoing>,
    /// The layer the viewer is held on, if any.
    pub pin: Option<usize>,
    /// ICE servers of this connection alone, beside the configured ones.
    pub ice_servers: Vec<crate::config::IceServer>,
}

/// Starts a peer task.
pub fn spawn(
    factory: Arc<PeerFactory>,
    spec: PeerSpec,
    events: mpsc::UnboundedSender<PeerEvent>,
) -> PeerHandle {
    if spec.ice_servers.is_empty()
        && let Some(media) = &spec.media
        && let Some(send_loop) = factory.send_loop(media)
    {
        return send_loop.open(spec, events);
    }
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (pin, pin_rx) = watch::channel(spec.pin);
    let counters = Arc::new(SenderCounters::default());
    let wiring = Wiring {
        counters: counters.clone(),
        feedback: Arc::default(),
        clocks: Arc::default(),
        send_bps: spec.media.as_ref().map(|Outgoing { video: layers, .. }| {
            let top = f64::from(
                layers
                    .top()
                    .state
                    .bitrate_kbps
                    .load(std::sync::atomic::Ordering::Relaxed),
            ) * 1000.0;
            (top, 2.0 * top)
        }),
        ice_servers: spec.ice_servers.clone(),
    };
    let task = tokio::spawn(run(factory, spec, command_rx, events, wiring, pin_rx));
    PeerHandle {
        commands,
        task,
        counters,
        pin,
    }
}

/// Events from the connection's own callbacks, before ordering.
enum Callback {
    Candidate(Option<Candidate>),
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

struct Handler(mpsc::UnboundedSender<Callback>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self
                .0
                .send(Callback::Candidate(Some(signaled_candidate(init))));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(Callback::Candidate(None));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(Callback::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(Callback::Track(track));
    }
}

/// A candidate from signaling, as the WebRTC stack takes it.
pub(crate) fn candidate_init(c: Candidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}

/// One of our candidates, as signaling carries it.
pub(crate) fn signaled_candidate(init: RTCIceCandidateInit) -> Candidate {
    Candidate {
        candidate: init.candidate,
        sdp_mid: init.sdp_mid,
        sdp_mline_index: init.sdp_mline_index,
        username_fragment: init.username_fragment,
    }
}

pub(crate) fn link_state(state: RTCPeerConnectionState) -> Option<LinkState> {
    match state {
        RTCPeerConnectionState::Connected => Some(LinkState::Connected),
        RTCPeerConnectionState::Disconnected => Some(LinkState::Disconnected),
        RTCPeerConnectionState::Failed => Some(LinkState::Failed),
        RTCPeerConnectionState::Closed => Some(LinkState::Closed),
        _ => None,
    }
}

async fn offer(pc: &Arc<dyn PeerConnection>, ice_restart: bool) -> anyhow::Result<SignalBody> {
    let options = ice_restart.then_some(RTCOfferOptions { ice_restart: true });
    let offer = pc
        .create_offer(options)
        .await
        .context("creating the offer")?;
    let sdp = offer.sdp.clone();
    pc.set_local_description(offer)
        .await
        .context("setting our offer")?;
    Ok(SignalBody::offer(sdp))
}

async fn answer(pc: &Arc<dyn PeerConnection>, offer_sdp: String) -> anyhow::Result<SignalBody> {
    let offer = RTCSessionDescription::offer(offer_sdp).context("the offer is not valid SDP")?;
    pc.set_remote_description(offer)
        .await
        .context("the offer cannot be applied")?;
    let answer = pc
        .create_answer(None)
        .await
        .context("creating the answer")?;
    let sdp = answer.sdp.clone();
    pc.set_local_description(answer)
        .await
        .context("setting our answer")?;
    Ok(SignalBody::Answer { sdp })
}

async fn run(
    factory: Arc<PeerFactory>,
    spec: PeerSpec,
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
    events: mpsc::UnboundedSender<PeerEvent>,
    wiring: Wiring,
    pin: watch::Receiver<Option<usize>>,
) {
    let link = spec.link;
    let (callback_tx, mut callbacks) = mpsc::unbounded_channel();
    let pc = match factory.build(Arc::new(Handler(callback_tx)), &wiring).await {
        Ok(pc) => pc,
        Err(e) => {
            let _ = events.send(PeerEvent::Error(link, PeerError::setup(e)));
            return;
        }
    };
    let result = negotiate(
        &pc,
        spec,
        &mut commands,
        &mut callbacks,
        &events,
        wiring,
        pin,
    )
    .await;
    if let Err(e) = result {
        let _ = events.send(PeerEvent::Error(link, e));
    }
    if let Err(e) = pc.close().await {
        tracing::debug!(link, error = %e, "closing the peer connection");
    }
}

async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    spec: PeerSpec,
    commands: &mut mpsc::UnboundedReceiver<PeerCommand>,
    callbacks: &mut mpsc::UnboundedReceiver<Callback>,
    events: &mpsc::UnboundedSender<PeerEvent>,
    wiring: Wiring,
    pin: watch::Receiver<Option<usize>>,
) -> Result<(), PeerError> {
    let link = spec.link;
    let counters = wiring.counters;
    let feedback = wiring.feedback.clone();
    let mut outbound = match spec.media {
        Some(media) => Some(
            add_tracks(
                pc,
                media,
                counters.clone(),
                wiring.feedback,
                &wiring.clocks,
                pin,
            )
            .await
            .map_err(PeerError::setup)?,
        ),
        None => {
            for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                pc.add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .context("adding the receiving transceivers")
                .map_err(PeerError::setup)?;
            }
            None
        }
    };
    let mut negotiation = Negotiation::new(spec.offerer, outbound.is_some());
    let signal = |body| {
        let _ = events.send(PeerEvent::Signal(link, body));
    };
    let release = |held: Vec<Option<Candidate>>| {
        for candidate in held {
            signal(SignalBody::Candidate { candidate });
        }
    };
    if spec.offerer {
        signal(offer(pc, false).await.map_err(PeerError::negotiation)?);
    }
    let mut stats_timer = tokio::time::interval(STATS_INTERVAL);
    stats_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut liveness = Liveness::default();
    let mut consent = Consent::default();
    loop {
        tokio::select! {
            _ = stats_timer.tick(), if outbound.is_some() => {
                consent = read_stats(pc, &counters).await;
                feedback.take_consent(consent.requests, consent.responses, consent.rtt);
                let out = outbound.as_ref().expect("checked by the guard");
                let observed = out.observe(&counters, consent).await;
                if let Some(gone) = liveness.check(std::time::Instant::now(), observed) {
                    tracing::info!(link, ?gone, "the viewer is gone");
                    let state = match gone {
                        Gone::ClosedByPeer => LinkState::Closed,
                        Gone::ConsentExpired => LinkState::Failed,
                    };
                    let _ = events.send(PeerEvent::State(link, state));
                    return Ok(());
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return Ok(()) };
                match negotiation.command(command) {
                    Step::Answer(sdp) => {
                        signal(answer(pc, sdp.clone()).await.map_err(PeerError::negotiation)?);
                        release(negotiation.applied(&sdp));
                    }
                    Step::Accept(sdp) => {
                        let applied = match RTCSessionDescription::answer(sdp.clone()) {
                            Ok(answer) => pc.set_remote_description(answer).await,
                            Err(e) => Err(e),
                        };
                        applied
                            .context("the answer cannot be applied")
                            .map_err(PeerError::negotiation)?;
                        release(negotiation.applied(&sdp));
                    }
                    Step::AddRemote(c) => {
                        if let Err(e) = pc.add_ice_candidate(candidate_init(c)).await {
                            tracing::debug!(link, error = %e, "remote candidate refused");
                        }
                    }
                    Step::RestartIce => {
                        signal(offer(pc, true).await.map_err(PeerError::negotiation)?)
                    }
                    Step::Offer => signal(offer(pc, false).await.map_err(PeerError::negotiation)?),
                    Step::Incompatible(reason) => {
                        let _ = events.send(PeerEvent::Incompatible(link, reason));
                        return Ok(());
                    }
                    Step::Replaced => {
                        tracing::info!(link, "the peer answered from a new connection");
                        let _ = events.send(PeerEvent::State(link, LinkState::Replaced));
                        return Ok(());
                    }
                    Step::Nothing => {}
                }
            }
            callback = callbacks.recv() => {
                let Some(callback) = callback else { return Ok(()) };
                match callback {
                    Callback::Candidate(candidate) => {
                        if let Some(candidate) = negotiation.gathered(candidate) {
                            signal(SignalBody::Candidate { candidate });
                        }
                    }
                    Callback::State(state) => {
                        if state == RTCPeerConnectionState::Connected
                            && let Some(out) = outbound.as_mut()
                        {
                            out.start(link, counters.clone(), events).await;
                            let observed = out.observe(&counters, consent).await;
                            liveness.connected(std::time::Instant::now(), observed);
                        } else if state != RTCPeerConnectionState::Connected {
                            liveness.disconnected();
                        }
                        if let Some(state) = link_state(state) {
                            let _ = events.send(PeerEvent::State(link, state));
                        }
                    }
                    Callback::Track(track) => {
                        let _ = events.send(PeerEvent::Track(link, track));
                    }
                }
            }
        }
    }
}
