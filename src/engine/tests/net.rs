//! The in-memory network of the engine's tests: a camera's engine and its
//! viewers, each a connection of the same WebRTC core, faster than real
//! time, no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCOfferOptions};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::super::*;
use crate::config::WebrtcConfig;
use crate::peer::factory::{
    H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE, PeerFactory, Wiring, h264_codec, opus_codec,
};
use std::sync::{Arc, OnceLock};

pub(super) const CAMERA: &str = "10.0.0.1:5000";
/// One way through the network.
pub(super) const LATENCY: Duration = Duration::from_millis(2);
pub(super) const SSRC: u32 = 0x1234_5678;
pub(super) const CAMERA_SOUND_SSRC: u32 = 0x0a0d_0001;

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

fn media_engine() -> MediaEngine {
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .expect("H.264 registered");
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )
        .expect("Opus registered");
    media
}

/// An Opus track of `ssrc`, as a side that sends sound adds it.
pub(super) fn opus_track(id: &str, ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        id.to_owned(),
        id.to_owned(),
        id.to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )
}

/// A viewer's side: the core's default codecs and interceptors.
fn viewer_core(now: Instant, candidate: &str) -> RTCPeerConnection {
    let mut media = media_engine();
    let registry =
        register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    let mut core = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("a connection");
    add_host(&mut core, candidate);
    core
}

fn add_host(core: &mut RTCPeerConnection, candidate: &str) {
    let host = host::host_candidate(addr(candidate)).expect("a host candidate");
    core.add_local_candidate(host).expect("candidate added");
}

/// The factory every camera connection comes from (its certificate is
/// made once).
fn factory() -> &'static PeerFactory {
    static FACTORY: OnceLock<PeerFactory> = OnceLock::new();
    FACTORY
        .get_or_init(|| PeerFactory::new(&WebrtcConfig::default(), Vec::new()).expect("a factory"))
}

/// The camera's side: a connection as the camera makes them (its
/// interceptors: congestion control, the retransmission budget, what it
/// hands the application), with a send-only H.264 track; with `sound`,
/// an Opus track too, offered `sendrecv` (a viewer may talk back).
fn camera_core(now: Instant, sound: bool) -> RTCPeerConnection {
    let wiring = Wiring {
        counters: Arc::default(),
        feedback: Arc::default(),
        clocks: Arc::default(),
        send_bps: Some((2e6, 4e6)),
        ice_servers: Vec::new(),
    };
    let mut core = factory().core(now, &wiring).expect("a camera connection");
    add_host(&mut core, CAMERA);
    let track = MediaStreamTrack::new(
        "camera".to_owned(),
        "video".to_owned(),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(SSRC),
                ..Default::default()
            },
            codec: h264_codec(),
            ..Default::default()
        }],
    );
    core.add_transceiver_from_track(
        track,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        }),
    )
    .expect("a video transceiver");
    if sound {
        core.add_transceiver_from_track(
            opus_track("camera-sound", CAMERA_SOUND_SSRC),
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendrecv,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .expect("a sound transceiver");
    }
    core
}

/// One datagram under way.
pub(super) struct InFlight {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub datagram: Vec<u8>,
}

/// A viewer, and what it saw.
pub(super) struct Viewer {
    pub id: ConnectionId,
    pub core: RTCPeerConnection,
    pub connected: Option<Instant>,
    /// The sequence numbers of the RTP packets it received.
    pub received: Vec<u16>,
}

/// A camera's engine with a connection to each of its viewers, joined by
/// a network that delivers after [`LATENCY`], or later when `delay` says
/// so. All connections share the camera's one address.
pub(super) struct Net {
    pub now: Instant,
    pub engine: Engine,
    pub viewers: Vec<Viewer>,
    pub in_flight: Vec<InFlight>,
    /// Extra delay for a datagram to the camera, by its content.
    pub delay: fn(&[u8]) -> Duration,
    /// RTP packets to the viewers with these sequence numbers are lost,
    /// once each.
    pub lose: Vec<u16>,
    pub camera_ice_connected: Option<Instant>,
    pub camera_connected: Option<Instant>,
    /// RTCP the camera received (PLI, NACK, reports), as packets.
    pub rtcp_received: Vec<Box<dyn rtc::rtcp::Packet>>,
    /// RTP the camera received (a viewer talking): SSRC and sequence
    /// number.
    pub rtp_received: Vec<(u32, u16)>,
}

fn viewer_addr(i: usize) -> String {
    format!("10.0.0.2:{}", 6000 + i)
}

impl Net {
    pub fn new(viewers: usize, delay: fn(&[u8]) -> Duration) -> Self {
        Self::build(viewers, delay, false)
    }

    /// Viewers of a camera that sends sound and may hear them talk.
    pub fn with_sound(viewers: usize) -> Self {
        Self::build(viewers, no_delay, true)
    }

    fn build(viewers: usize, delay: fn(&[u8]) -> Duration, sound: bool) -> Self {
        let now = Instant::now();
        let mut engine = Engine::default();
        let viewers = (0..viewers)
            .map(|i| {
                let id = engine.insert(now, camera_core(now, sound));
                let mut core = viewer_core(now, &viewer_addr(i));
                offer_answer(&mut engine, id, &mut core, now, None, |_| {});
                Viewer {
                    id,
                    core,
                    connected: None,
                    received: Vec::new(),
                }
            })
            .collect();
        Self {
            now,
            engine,
            viewers,
            in_flight: Vec::new(),
            delay,
            lose: Vec::new(),
            camera_ice_connected: None,
            camera_connected: None,
            rtcp_received: Vec::new(),
            rtp_received: Vec::new(),
        }
    }

    /// Moves what the camera has to send onto the network.
    pub fn collect_camera(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            self.carry(&t);
        }
    }

    /// Puts what the camera sends onto the network, less what is to be
    /// lost.
    pub fn carry(&mut self, t: &Transmit) {
        for datagram in t.iter() {
            if route::kind(datagram) == Kind::Rtp
                && let Some(seq) = datagram.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]))
                && let Some(at) = self.lose.iter().position(|s| *s == seq)
            {
                self.lose.remove(at);
                continue;
            }
            self.in_flight.push(InFlight {
                at: self.now + LATENCY,
                from: t.local,
                to: t.remote,
                datagram: datagram.to_vec(),
            });
        }
    }

    /// Moves what both sides have to send onto the network, and takes
    /// their events.
    fn collect(&mut self) {
        self.collect_camera();
        while let Some((_, event)) = self.engine.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) => {
                    self.camera_connected.get_or_insert(self.now);
                }
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected,
                ) => {
                    self.camera_ice_connected.get_or_insert(self.now);
                }
                _ => {}
            }
        }
        while let Some((_, read)) = self.engine.poll_read() {
            match read.message {
                RTCMessage::RtcpPacket(_, packets) => self.rtcp_received.extend(packets),
                RTCMessage::RtpPacket(_, packet) => self
                    .rtp_received
                    .push((packet.header.ssrc, packet.header.sequence_number)),
                _ => {}
            }
        }
        for viewer in &mut self.viewers {
            while let Some(out) = viewer.core.poll_write() {
                let extra = (self.delay)(&out.message);
                self.in_flight.push(InFlight {
                    at: self.now + LATENCY + extra,
                    from: out.transport.local_addr,
                    to: out.transport.peer_addr,
                    datagram: out.message.to_vec(),
                });
            }
            while let Some(event) = viewer.core.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) = event
                {
                    viewer.connected.get_or_insert(self.now);
                }
            }
            while let Some(read) = viewer.core.poll_read() {
                if let RTCMessage::RtpPacket(_, packet) = read.message {
                    viewer.received.push(packet.header.sequence_number);
                }
            }
        }
    }

    /// Runs the network and every side until `until` (simulated time).
    fn run_until(&mut self, until: Instant) {
        loop {
            self.collect();
            let next = [
                self.in_flight.iter().map(|f| f.at).min(),
                self.engine.poll_timeout(),
                self.viewers
                    .iter_mut()
                    .filter_map(|v| v.core.poll_timeout())
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until)
            .max(self.now);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            let (due, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|f| f.at <= self.now);
            self.in_flight = later;
            for f in due {
                if f.to == addr(CAMERA) {
                    self.engine
                        .handle_datagram(self.now, f.to, f.from, &f.datagram);
                } else if let Some(viewer) = self
                    .viewers
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, v)| (addr(&viewer_addr(i)) == f.to).then_some(v))
                {
                    let message = TaggedBytesMut {
                        now: self.now,
                        transport: TransportContext {
                            local_addr: f.to,
                            peer_addr: f.from,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&f.datagram[..]),
                    };
                    viewer.core.handle_read(message).expect("viewer read");
                }
            }
            self.engine.handle_timeout(self.now);
            for viewer in &mut self.viewers {
                if viewer.core.poll_timeout().is_some_and(|at| at <= self.now) {
                    viewer.core.handle_timeout(self.now).expect("viewer timer");
                }
            }
        }
    }

    /// The camera offers again on viewer `i`'s connection, with `options`;
    /// `before_answer` runs on the viewer's core once it took the offer.
    pub fn renegotiate(
        &mut self,
        i: usize,
        options: Option<RTCOfferOptions>,
        before_answer: impl FnOnce(&mut RTCPeerConnection),
    ) {
        let viewer = &mut self.viewers[i];
        offer_answer(
            &mut self.engine,
            viewer.id,
            &mut viewer.core,
            self.now,
            options,
            before_answer,
        );
    }

    pub fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Sends a frame of `packets` RTP packets of `size` bytes of H.264 to
    /// every viewer.
    pub fn send_frame(&mut self, first_sequence: u16, packets: u16, size: usize) {
        let now = self.now;
        let payload = {
            let mut p = vec![0u8; size];
            p[0] = 0x65;
            bytes::Bytes::from(p)
        };
        for viewer in &self.viewers {
            self.engine
                .media(viewer.id, now, |c| {
                    let sender = c.get_senders().next().expect("a sender");
                    let mut sender = c.rtp_sender(sender).expect("the sender");
                    for i in 0..packets {
                        let sequence_number = first_sequence.wrapping_add(i);
                        let packet = rtp::Packet {
                            header: rtp::header::Header {
                                version: 2,
                                payload_type: H264_PAYLOAD_TYPE,
                                sequence_number,
                                timestamp: u32::from(first_sequence) * 3000,
                                ssrc: SSRC,
                                marker: i + 1 == packets,
                                ..Default::default()
                            },
                            payload: payload.clone(),
                        };
                        sender.write_rtp(now, packet).expect("written");
                    }
                })
                .expect("the connection");
        }
    }
}

/// The camera's connection `id` offers (with `options`), `viewer` takes
/// the offer, runs `before_answer`, and answers.
fn offer_answer(
    engine: &mut Engine,
    id: ConnectionId,
    viewer: &mut RTCPeerConnection,
    now: Instant,
    options: Option<RTCOfferOptions>,
    before_answer: impl FnOnce(&mut RTCPeerConnection),
) {
    let offer = engine
        .with(id, now, |c| {
            let offer = c.create_offer(options).expect("an offer");
            c.set_local_description(now, offer.clone())
                .expect("offer set");
            offer
        })
        .expect("the connection");
    viewer
        .set_remote_description(now, offer)
        .expect("offer taken");
    before_answer(viewer);
    let answer = viewer.create_answer(None).expect("an answer");
    viewer
        .set_local_description(now, answer.clone())
        .expect("answer set");
    engine
        .with(id, now, |c| c.set_remote_description(now, answer))
        .expect("the connection")
        .expect("answer taken");
}

pub(super) fn no_delay(_: &[u8]) -> Duration {
    Duration::ZERO
}
