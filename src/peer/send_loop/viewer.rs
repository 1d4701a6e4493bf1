//! One viewer's connection in the send loop: its negotiation, its
//! streams, its liveness. Everything here is called by the loop with the
//! time; nothing waits.
//!
//! The negotiation is the rule a peer task follows too
//! ([`crate::peer::negotiation`]); here our candidates are the host
//! candidates of the loop's sockets, known from the start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::Marshal;
use tokio::sync::mpsc;

use crate::engine::{ConnectionId, Engine};
use crate::media::speaker::SpeakerFeed;
use crate::media::{EncodedFrame, VideoLayers, Watching};
use crate::peer::factory::{self, PeerFactory, Wiring};
use crate::peer::feedback::Feedback;
use crate::peer::liveness::{Gone, Liveness, Observed};
use crate::peer::negotiation::{Negotiation, Step};
use crate::peer::outbound::{media_track, send_only};
use crate::peer::sender::{RtpStream, Stamper};
use crate::peer::stats::{Consent, take_stats};
use crate::peer::video_stream::{Action, VideoStream};
use crate::peer::{
    PeerCommand, PeerError, PeerEvent, PeerSpec, SenderCounters, candidate_init, link_state,
    signaled_candidate,
};
use crate::protocol::{Candidate, SignalBody};
use crate::room::{LinkId, LinkState};

/// One local track: its sender in the connection and its stream.
struct Track {
    sender: RTCRtpSenderId,
    ssrc: u32,
    offered_payload_type: u8,
    /// The RTP timestamp base, told to the sender reports.
    base: u32,
    /// Once connected: the packets' header fields.
    stamper: Option<Stamper>,
}

impl Track {
    fn add(
        core: &mut RTCPeerConnection,
        kind: RtpCodecKind,
        codec: RTCRtpCodec,
        offered_payload_type: u8,
        direction: RTCRtpTransceiverDirection,
        wiring: &Wiring,
    ) -> anyhow::Result<Self> {
        let ssrc: u32 = rand::random();
        let init = RTCRtpTransceiverInit {
            direction,
            ..send_only()
        };
        let transceiver = core
            .add_transceiver_from_track(media_track(kind, codec, ssrc), Some(init))
            .with_context(|| format!("adding the {kind} track"))?;
        let sender = core
            .rtp_transceiver(transceiver)
            .and_then(|t| t.sender())
            .with_context(|| format!("the {kind} transceiver has no sender"))?;
        let base: u32 = rand::random();
        wiring.clocks.set(ssrc, base);
        Ok(Self {
            sender,
            ssrc,
            offered_payload_type,
            base,
            stamper: None,
        })
    }

    /// The negotiated stream, once the connection is up.
    fn start(
        &mut self,
        core: &mut RTCPeerConnection,
        kind: RtpCodecKind,
        counters: &Arc<SenderCounters>,
    ) {
        let payload_type = core
            .rtp_sender(self.sender)
            .and_then(|mut s| {
                s.get_parameters()
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|c| c.payload_type)
            })
            .unwrap_or(self.offered_payload_type);
        let stream = RtpStream {
            ssrc: self.ssrc,
            payload_type,
        };
        self.stamper = Some(Stamper::new(kind, stream, self.base, counters.clone()));
    }

    /// Writes a frame's packets into the connection.
    fn write(
        &mut self,
        engine: &mut Engine,
        id: ConnectionId,
        now: Instant,
        frame: &EncodedFrame,
        filler: &[bytes::Bytes],
    ) {
        let Some(stamper) = &mut self.stamper else {
            return;
        };
        let sender = self.sender;
        engine.media(id, now, |core| {
            let Some(mut sender) = core.rtp_sender(sender) else {
                return;
            };
            for packet in stamper.packets(frame, filler) {
                if let Err(e) = sender.write_rtp(now, packet) {
                    tracing::debug!(error = %e, "a packet not written");
                    return;
                }
            }
        });
    }
}

/// A viewer of the camera, connected through the send loop.
pub struct Viewer {
    pub link: LinkId,
    pub id: ConnectionId,
    events: mpsc::UnboundedSender<PeerEvent>,
    pub counters: Arc<SenderCounters>,
    feedback: Arc<Feedback>,
    layers: VideoLayers,
    pub video: VideoStream,
    watching: Vec<Option<Watching>>,
    video_track: Track,
    audio_track: Option<Track>,
    negotiation: Negotiation,
    /// Our candidates so far (the sockets' and those the servers gave),
    /// gathered again on each ICE restart, and whether more may come.
    candidates: Vec<RTCIceCandidateInit>,
    complete: bool,
    liveness: Liveness,
    consent: Consent,
    connected: bool,
    /// It holds the floor: its sound goes to the speaker.
    talking: bool,
    speaker: Option<SpeakerFeed>,
    /// The viewer closed its side (`close_notify`), or the connection failed.
    ended: Option<LinkState>,
}

impl Viewer {
    /// Opens a connection for `spec` with our `candidates` so far
    /// (`complete`: no more will come); an offerer's offer goes out at
    /// once.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        now: Instant,
        engine: &mut Engine,
        factory: &PeerFactory,
        spec: PeerSpec,
        counters: Arc<SenderCounters>,
        events: mpsc::UnboundedSender<PeerEvent>,
        candidates: Vec<RTCIceCandidateInit>,
        complete: bool,
    ) -> anyhow::Result<Self> {
        let media = spec.media.context("a sending peer has media")?;
        let top_bps =
            f64::from(media.video.top().state.bitrate_kbps.load(Ordering::Relaxed)) * 1000.0;
        let wiring = Wiring {
            counters: counters.clone(),
            feedback: Arc::default(),
            clocks: Arc::default(),
            send_bps: Some((top_bps, 2.0 * top_bps)),
            ice_servers: spec.ice_servers.clone(),
        };
        let mut core = factory.core(now, &wiring)?;
        let video_track = Track::add(
            &mut core,
            RtpCodecKind::Video,
            factory::h264_codec(),
            factory::H264_PAYLOAD_TYPE,
            RTCRtpTransceiverDirection::Sendonly,
            &wiring,
        )?;
        wiring
            .feedback
            .video_ssrc
            .store(video_track.ssrc, Ordering::Relaxed);
        let audio_track = match &media.audio {
            Some(_) => Some(Track::add(
                &mut core,
                RtpCodecKind::Audio,
                factory::opus_codec(),
                factory::OPUS_PAYLOAD_TYPE,
                // With a speaker, a viewer may talk back on it.
                if media.speaker.is_some() {
                    RTCRtpTransceiverDirection::Sendrecv
                } else {
                    RTCRtpTransceiverDirection::Sendonly
                },
                &wiring,
            )?),
            None => None,
        };
        let id = engine.insert(now, core);
        let start = spec
            .pin
            .filter(|l| media.video.get(*l).is_some_and(|f| f.state.is_available()))
            .unwrap_or(0);
        let mut viewer = Self {
            link: spec.link,
            id,
            negotiation: Negotiation::new(spec.offerer, true),
            events,
            counters,
            feedback: wiring.feedback,
            watching: (0..media.video.len()).map(|_| None).collect(),
            video: VideoStream::new(now, start, top_bps, spec.pin),
            layers: media.video,
            video_track,
            audio_track,
            candidates,
            complete,
            liveness: Liveness::default(),
            consent: Consent::default(),
            connected: false,
            talking: false,
            speaker: media.speaker.clone(),
            ended: None,
        };
        viewer.counters.layer.store(start, Ordering::Relaxed);
        viewer.act(engine, now);
        viewer.gather();
        if spec.offerer {
            viewer.offer(engine, now, false)?;
        }
        Ok(viewer)
    }

    /// Whether it watches `layer`'s frames.
    pub fn watches(&self, layer: usize) -> bool {
        self.watching.get(layer).is_some_and(Option::is_some)
    }

    /// The connection cannot go on; `error` says why.
    pub fn error(&self, error: PeerError) {
        let _ = self.events.send(PeerEvent::Error(self.link, error));
    }

    fn signal(&self, body: SignalBody) {
        let _ = self.events.send(PeerEvent::Signal(self.link, body));
    }

    fn offer(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        ice_restart: bool,
    ) -> anyhow::Result<()> {
        let options = ice_restart.then_some(RTCOfferOptions { ice_restart: true });
        let sdp = engine
            .with(self.id, now, |core| -> anyhow::Result<String> {
                let offer = core.create_offer(options).context("creating the offer")?;
                let sdp = offer.sdp.clone();
                core.set_local_description(now, offer)
                    .context("setting our offer")?;
                Ok(sdp)
            })
            .context("the connection is gone")??;
        self.signal(SignalBody::offer(sdp));
        Ok(())
    }

    /// Our candidates, for the negotiation to hold until they may go.
    fn gather(&mut self) {
        for init in &self.candidates {
            let held = self
                .negotiation
                .gathered(Some(signaled_candidate(init.clone())));
            debug_assert!(held.is_none(), "candidates are gathered before an offer");
        }
        if self.complete {
            self.negotiation.gathered(None);
        }
    }

    /// A candidate the servers gave (`None`: they have all answered).
    pub fn gathered(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        candidate: Option<RTCIceCandidateInit>,
    ) {
        match &candidate {
            Some(init) => self.candidates.push(init.clone()),
            None if self.complete => return,
            None => self.complete = true,
        }
        if let Some(candidate) = self.negotiation.gathered(candidate.map(signaled_candidate)) {
            self.share(engine, now, candidate);
        }
    }

    /// The remote description `sdp` is applied: our candidates go to the
    /// connection and to the other side.
    fn applied(&mut self, engine: &mut Engine, now: Instant, sdp: &str) {
        for candidate in self.negotiation.applied(sdp) {
            self.share(engine, now, candidate);
        }
    }

    /// One of our candidates goes to the connection and to the other side.
    fn share(&self, engine: &mut Engine, now: Instant, candidate: Option<Candidate>) {
        if let Some(c) = &candidate {
            let init = candidate_init(c.clone());
            let added = engine.with(self.id, now, |core| core.add_local_candidate(init));
            if let Some(Err(e)) = added {
                tracing::debug!(link = self.link, error = %e, "our candidate refused");
            }
        }
        self.signal(SignalBody::Candidate { candidate });
    }

    /// A command of the supervisor. `Err` ends the connection, saying why.
    pub fn command(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        command: PeerCommand,
    ) -> anyhow::Result<()> {
        if let PeerCommand::Talk(on) = command {
            self.talking = on;
        }
        match self.negotiation.command(command) {
            Step::Answer(sdp) => {
                let offer = RTCSessionDescription::offer(sdp.clone())
                    .context("the offer is not valid SDP")?;
                let answer = engine
                    .with(self.id, now, |core| -> anyhow::Result<String> {
                        core.set_remote_description(now, offer)
                            .context("the offer cannot be applied")?;
                        let answer = core.create_answer(None).context("creating the answer")?;
                        let sdp = answer.sdp.clone();
                        core.set_local_description(now, answer)
                            .context("setting our answer")?;
                        Ok(sdp)
                    })
                    .context("the connection is gone")??;
                self.signal(SignalBody::Answer { sdp: answer });
                self.applied(engine, now, &sdp);
            }
            Step::Accept(sdp) => {
                let answer = RTCSessionDescription::answer(sdp.clone())
                    .context("the answer is not valid SDP")?;
                engine
                    .with(self.id, now, |core| {
                        core.set_remote_description(now, answer)
                    })
                    .context("the connection is gone")?
                    .context("the answer cannot be applied")?;
                self.applied(engine, now, &sdp);
            }
            Step::AddRemote(c) => {
                let init = candidate_init(c);
                if let Some(Err(e)) =
                    engine.with(self.id, now, |core| core.add_remote_candidate(init))
                {
                    tracing::debug!(link = self.link, error = %e, "remote candidate refused");
                }
            }
            Step::RestartIce => {
                self.offer(engine, now, true)?;
                self.gather();
            }
            Step::Offer => self.offer(engine, now, false)?,
            Step::Incompatible(reason) => {
                let _ = self.events.send(PeerEvent::Incompatible(self.link, reason));
                self.ended = Some(LinkState::Closed);
            }
            Step::Replaced => {
                tracing::info!(link = self.link, "the peer answered from a new connection");
                let _ = self
                    .events
                    .send(PeerEvent::State(self.link, LinkState::Replaced));
                self.ended = Some(LinkState::Replaced);
            }
            Step::Nothing => {}
        }
        Ok(())
    }

    /// The connection's state changed.
    pub fn state(&mut self, engine: &mut Engine, now: Instant, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected && !self.connected {
            self.connected = true;
            let counters = self.counters.clone();
            engine.with(self.id, now, |core| {
                self.video_track.start(core, RtpCodecKind::Video, &counters);
                if let Some(audio) = &mut self.audio_track {
                    audio.start(core, RtpCodecKind::Audio, &counters);
                }
            });
            self.video.ready();
            self.act(engine, now);
            self.liveness.connected(now, self.observed());
        } else if state != RTCPeerConnectionState::Connected {
            self.liveness.disconnected();
        }
        if let Some(link_state) = link_state(state) {
            let _ = self.events.send(PeerEvent::State(self.link, link_state));
            if matches!(link_state, LinkState::Closed | LinkState::Failed) {
                self.ended = Some(link_state);
            }
        }
    }

    /// An RTP packet from the viewer: its voice, played while it holds the
    /// floor.
    pub fn heard(&self, packet: &rtc::rtp::Packet) {
        if !self.talking {
            return;
        }
        let Some(speaker) = &self.speaker else {
            return;
        };
        match packet.marshal() {
            Ok(bytes) => {
                self.counters.talk_packets.fetch_add(1, Ordering::Relaxed);
                speaker.play(bytes.freeze());
            }
            Err(e) => tracing::debug!(link = self.link, error = %e, "a talk packet not played"),
        }
    }

    /// The viewer asked for a key frame (PLI or FIR).
    pub fn keyframe_request(&self) {
        self.counters
            .keyframe_requests
            .fetch_add(1, Ordering::Relaxed);
        if let Some(feed) = self.layers.get(self.video.layer()) {
            feed.keyframes.request();
        }
        let _ = self.events.send(PeerEvent::KeyframeRequest(self.link));
    }

    /// A frame of `layer`.
    pub fn frame(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        layer: usize,
        frame: &Arc<EncodedFrame>,
    ) {
        self.video.on_frame(now, layer, frame);
        self.act(engine, now);
    }

    /// Frames of `layer` were lost before they could be sent.
    pub fn lagged(&mut self, engine: &mut Engine, now: Instant, layer: usize, missed: u64) {
        if layer == self.video.layer() {
            self.counters
                .frames_dropped
                .fetch_add(missed, Ordering::Relaxed);
        }
        self.video.on_lagged(layer);
        self.act(engine, now);
    }

    /// An Opus packet of the camera's microphone.
    pub fn sound(&mut self, engine: &mut Engine, now: Instant, packet: &EncodedFrame) {
        if let Some(audio) = &mut self.audio_track {
            audio.write(engine, self.id, now, packet, &[]);
        }
    }

    pub fn pin(&mut self, layer: Option<usize>) {
        self.video.pin(layer);
    }

    /// The layer choice, every [`crate::peer::video_stream::TICK`].
    pub fn tick(&mut self, engine: &mut Engine, now: Instant, needs: &[Option<f64>]) {
        let (estimate, decision) = self
            .video
            .tick(now, self.feedback.heard(&self.counters), needs);
        self.act(engine, now);
        let Some(feed) = self.layers.get(self.video.layer()) else {
            return;
        };
        let state = &feed.state;
        *self
            .counters
            .adaptation
            .lock()
            .expect("adaptation lock is never poisoned") = Some(crate::peer::Adaptation {
            layer: self.video.layer(),
            width: state.width.load(Ordering::Relaxed),
            height: state.height.load(Ordering::Relaxed),
            estimate,
            switches: self.video.controller().switches(),
            pinned: self.video.controller().pinned(),
            padding_bps: decision.padding_bps,
        });
    }

    /// The connection's statistics and liveness, every
    /// [`crate::peer::stats::STATS_INTERVAL`]. `Some` when the viewer is
    /// gone.
    pub fn check(&mut self, engine: &mut Engine, now: Instant) -> Option<LinkState> {
        if let Some(ended) = self.ended {
            return Some(ended);
        }
        let counters = self.counters.clone();
        let consent = engine.with(self.id, now, |core| {
            take_stats(
                &core.get_stats(now, rtc::statistics::StatsSelector::None),
                &counters,
            )
        })?;
        self.consent = consent;
        self.feedback
            .take_consent(consent.requests, consent.responses, consent.rtt);
        let gone = self.liveness.check(now, self.observed())?;
        tracing::info!(link = self.link, ?gone, "the viewer is gone");
        let state = match gone {
            Gone::ClosedByPeer => LinkState::Closed,
            Gone::ConsentExpired => LinkState::Failed,
        };
        let _ = self.events.send(PeerEvent::State(self.link, state));
        Some(state)
    }

    fn observed(&self) -> Observed {
        Observed {
            consent_requests: self.consent.requests,
            consent_responses: self.consent.responses,
            rtcp_received: self.counters.rtcp_received.load(Ordering::Relaxed),
            dtls_closed: self.ended == Some(LinkState::Closed),
        }
    }

    /// Carries out what the video stream asks for.
    fn act(&mut self, engine: &mut Engine, now: Instant) {
        while let Some(action) = self.video.poll_action() {
            match action {
                Action::Send { frame, filler } => {
                    self.video_track
                        .write(engine, self.id, now, &frame, &filler);
                }
                Action::Watch(layer) => {
                    if let Some(feed) = self.layers.get(layer) {
                        self.watching[layer] = Some(feed.watch().1);
                    }
                }
                Action::Unwatch(layer) => self.watching[layer] = None,
                Action::RequestKeyframe(layer) => {
                    if let Some(feed) = self.layers.get(layer) {
                        feed.keyframes.request();
                    }
                }
            }
        }
        self.counters
            .layer
            .store(self.video.layer(), Ordering::Relaxed);
    }
}
