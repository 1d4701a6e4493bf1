//! Builds peer connections that share one DTLS certificate and one
//! configuration.
//!
//! Generating a certificate takes seconds on a low-end board, so it is made
//! once per process. Every connection offers exactly one video codec, H.264
//! constrained baseline with packetization mode 1 (`42e01f`), which every
//! browser decodes, usually in hardware.
//!
//! A sending connection numbers its packets transport-wide and runs the
//! stack's congestion control on the viewer's TWCC feedback
//! ([`super::congestion`]); every connection reports what it receives (TWCC
//! and receiver reports), unless made [`PeerFactory::without_twcc`], a
//! viewer for tests of the cameras' fallback estimate.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rtc::crypto::{self, SignatureScheme};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, ReceiverReportBuilder,
    Slot, TwccSenderBuilder,
};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCConfigurationBuilder, RTCIceServer, Registry, SettingEngine,
    SettingEngineBuilder, configure_simulcast_extension_headers,
};

use super::congestion::ViewerEstimator;
use super::feedback::{Feedback, FeedbackInterceptor, SLOT};
use super::reports::{CaptureClockReports, StreamClocks};
use super::retransmit::{self, RetransmitBudget};
use super::send_loop::SendLoop;
use super::{Outgoing, SenderCounters};
use crate::config::{IceServer, MdnsMode, WebrtcConfig};

/// The payload type we offer H.264 on.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// The fmtp line of the one codec we offer.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// ICE gives up on a silent peer after `DISCONNECTED + FAILED`: fast enough
/// to free a vanished viewer's resources within seconds, slow enough for a
/// brief Wi-Fi hiccup (an ICE restart is tried at `disconnected`).
pub const ICE_DISCONNECTED: Duration = Duration::from_secs(3);
pub const ICE_FAILED: Duration = Duration::from_secs(5);
/// How often ICE asks the viewer for consent on the selected pair (a STUN
/// binding request of about 100 bytes). Every receiver answers at once, so
/// each check is also a probe of the path's delay: a queue building at a
/// narrow link shows in the round trip within a few hundred milliseconds,
/// from receivers that say nothing else for seconds (RTCP at RFC 3550's
/// pace, no NACKs, no TWCC). See [`crate::adapt::estimate`]. ICE's timer
/// runs at this period or every 200 ms, whichever is shorter, and sends
/// when a whole period has passed: so a check goes out every 150 to 300 ms
/// (at 250 ms it was every 400).
pub const ICE_KEEPALIVE: Duration = Duration::from_millis(150);
/// Connectivity checks every 10 ms instead of 200 ms while connecting. The
/// controlling side nominates a pair only on its next check round after the
/// pair answered, and the viewer starts DTLS only once nominated: at 50 ms
/// that wait was a third of a LAN viewer's time to first frame. The checks
/// stop once a pair is selected. 140 attempts keep the default 1.4 s per
/// candidate pair.
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
pub const ICE_MAX_BINDING_REQUESTS: u16 = 140;
/// How long a peer-reflexive pair waits before it may be nominated (ICE's
/// default is 1 s). A browser that hides its address behind a `*.local`
/// name is only ever learned peer-reflexive, from its own checks, so this
/// wait was most of its time to first frame. On a LAN there is no better
/// pair coming: nominate at once.
pub const ICE_PRFLX_MIN_WAIT: Duration = Duration::ZERO;

/// Packets each connection keeps for retransmission (the stack keeps
/// 1024): about 1.2 s at 2 Mbit/s, 0.3 s at 8 Mbit/s, past which a
/// retransmission comes too late to be played. Each viewer holds its own
/// history: it was most of what a viewer costs in memory.
pub const NACK_HISTORY: u16 = 256;

/// The H.264 codec every connection negotiates.
pub fn h264_codec() -> RTCRtpCodec {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: crate::media::frame::VIDEO_CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![
            feedback("goog-remb", ""),
            feedback("ccm", "fir"),
            feedback("nack", ""),
            feedback("nack", "pli"),
        ],
    }
}

/// The payload type of Opus, as browsers offer it.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Opus as every browser negotiates it: `opus/48000/2` (RFC 7587 names two
/// channels whatever is sent), with in-band FEC.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: crate::media::audio::description::OPUS_CLOCK_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// What a connection is made of.
struct Parts {
    media: MediaEngine,
    registry: Registry,
    configuration: RTCConfiguration,
    settings: SettingEngine,
}

/// Makes peer connections; one per process.
pub struct PeerFactory {
    certificate: RTCCertificate,
    /// What TURN's message integrity is computed with.
    crypto: Arc<dyn crypto::RTCCryptoProvider>,
    ice_servers: Vec<RTCIceServer>,
    bind: IpAddr,
    ports: Option<(u16, u16)>,
    next_port: AtomicU32,
    mdns: MdnsMode,
    /// Said once that multicast DNS cannot work here.
    mdns_warned: AtomicBool,
    /// Negotiate transport-wide congestion control feedback.
    twcc: bool,
    /// Send from meshcam's own loop (`webrtc.engine`), once started.
    engine: bool,
    send_loop: OnceLock<Option<SendLoop>>,
}

/// What a connection's interceptors report into, and how it sends.
#[derive(Clone)]
pub struct Wiring {
    pub counters: Arc<SenderCounters>,
    pub feedback: Arc<Feedback>,
    /// The RTP timestamp bases its sender reports need.
    pub clocks: Arc<StreamClocks>,
    /// For a sending connection: the rate its estimate starts at and the
    /// most it may reach (bit/s).
    pub send_bps: Option<(f64, f64)>,
    /// ICE servers of this connection alone, beside the configured ones
    /// (a WHIP server's `Link` headers).
    pub ice_servers: Vec<IceServer>,
}

impl PeerFactory {
    /// Generates the process's DTLS certificate. `ice_servers` are the
    /// configured STUN and TURN servers with the credentials this process
    /// uses ([`crate::turn_rest::IceServers::for_camera`]).
    pub fn new(config: &WebrtcConfig, ice_servers: Vec<RTCIceServer>) -> anyhow::Result<Self> {
        let provider = crypto::default_provider().context("no crypto provider")?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["meshcam".to_owned()]).context("certificate parameters")?,
        )
        .context("generating the DTLS certificate")?;
        let bind: IpAddr = config
            .bind_address
            .parse()
            .context("webrtc.bind_address is not an IP address")?;
        let ports =
            (config.udp_port_min != 0).then_some((config.udp_port_min, config.udp_port_max));
        Ok(Self {
            certificate,
            crypto: provider,
            ice_servers,
            bind,
            ports,
            next_port: AtomicU32::new(0),
            mdns: config.mdns,
            mdns_warned: AtomicBool::new(false),
            twcc: true,
            engine: config.engine,
            send_loop: OnceLock::new(),
        })
    }

    /// Connections that neither send nor ask for TWCC feedback, as a viewer
    /// that reports only with receiver reports does.
    pub fn without_twcc(mut self) -> Self {
        self.twcc = false;
        self
    }

    /// The loop that sends `media` to viewers, when the configuration asks
    /// for it and it can serve them (no multicast DNS). Started by the
    /// first viewer; one that cannot
    /// bind its sockets leaves the connections to their own tasks, and
    /// says why once.
    pub(super) fn send_loop(self: &Arc<Self>, media: &Outgoing) -> Option<&SendLoop> {
        if !self.engine || self.mdns != MdnsMode::Off {
            return None;
        }
        self.send_loop
            .get_or_init(|| match SendLoop::start(self.clone(), media.clone()) {
                Ok(send_loop) => Some(send_loop),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the send loop cannot start; each connection runs its own tasks");
                    None
                }
            })
            .as_ref()
            .filter(|l| l.sends(media))
    }

    /// The telemetry object `send_loop`: `null` until the loop runs.
    pub fn send_loop_telemetry(&self) -> serde_json::Value {
        match self.send_loop.get() {
            Some(Some(send_loop)) => send_loop.status().to_json(),
            _ => serde_json::Value::Null,
        }
    }

    pub(super) fn crypto(&self) -> &Arc<dyn crypto::RTCCryptoProvider> {
        &self.crypto
    }

    /// The configured STUN and TURN servers.
    pub(super) fn ice_servers(&self) -> &[RTCIceServer] {
        &self.ice_servers
    }

    /// Where the send loop's sockets listen: the bind address, and the
    /// first port of the configured range (one port serves every viewer)
    /// or any free one.
    pub(super) fn send_loop_bind(&self) -> (IpAddr, u16) {
        (self.bind, self.ports.map_or(0, |(min, _)| min))
    }

    /// Builds one connection, counting what the remote side sends back into
    /// `counters`. With a port range, tries its ports in turn.
    pub async fn build(
        &self,
        handler: Arc<dyn PeerConnectionEventHandler>,
        wiring: &Wiring,
    ) -> anyhow::Result<Arc<dyn PeerConnection>> {
        let Some((min, max)) = self.ports else {
            return self.build_on(0, handler, wiring).await;
        };
        let span = u32::from(max - min) + 1;
        let mut last_error = None;
        for _ in 0..span {
            let offset = self.next_port.fetch_add(1, Ordering::Relaxed) % span;
            let port = min + offset as u16;
            match self.build_on(port, handler.clone(), wiring).await {
                Ok(pc) => return Ok(pc),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("empty port range"))
            .context(format!("no free UDP port in {min}-{max}")))
    }

    /// Builds on `port` with the configured mDNS mode. Its multicast socket
    /// cannot be opened where the host has no multicast route (a camera LAN
    /// without a gateway, a network before DHCP answered); the error is a
    /// bare string, so any failure with mDNS on is tried again without it,
    /// and said once. The next connection tries mDNS again: routes come.
    async fn build_on(
        &self,
        port: u16,
        handler: Arc<dyn PeerConnectionEventHandler>,
        wiring: &Wiring,
    ) -> anyhow::Result<Arc<dyn PeerConnection>> {
        let mode = match self.mdns {
            MdnsMode::Off => {
                return self
                    .build_with(port, MulticastDnsMode::Disabled, handler, wiring)
                    .await;
            }
            MdnsMode::Query => MulticastDnsMode::QueryOnly,
            MdnsMode::Gather => MulticastDnsMode::QueryAndGather,
        };
        match self.build_with(port, mode, handler.clone(), wiring).await {
            Ok(pc) => Ok(pc),
            Err(e) => {
                let pc = self
                    .build_with(port, MulticastDnsMode::Disabled, handler, wiring)
                    .await?;
                if !self.mdns_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "multicast DNS cannot work on this network (no multicast route?); \
                         connecting without it, with host candidates"
                    );
                }
                Ok(pc)
            }
        }
    }

    /// What every connection is made of: the codecs, the interceptors
    /// wired to `wiring`, the ICE servers and certificate, the ICE timing.
    fn parts(&self, mdns: MulticastDnsMode, wiring: &Wiring) -> anyhow::Result<Parts> {
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )?;
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )?;
        // The stack's default interceptors, but with a shorter NACK history
        // (the codec above already offers nack and nack pli).
        let registry = Registry::new()
            .with(
                Slot::NackResponder,
                NackResponderBuilder::new().with_size(NACK_HISTORY).build(),
            )
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
        configure_simulcast_extension_headers(&mut media)?;
        let registry = if self.twcc {
            configure_twcc_receiver_only(registry, &mut media)?
        } else {
            registry
        };
        // Receiver reports as the stack makes them; sender reports on the
        // capture clock, for lip sync (see `reports`).
        let registry = registry
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(
                Slot::SenderReport,
                CaptureClockReports::new(wiring.clocks.clone()),
            );
        let mut registry = registry.with(
            Slot::from(SLOT),
            FeedbackInterceptor::new(wiring.counters.clone(), wiring.feedback.clone()),
        );
        if let Some((initial, max)) = wiring.send_bps {
            // The header extension and feedback type are registered above
            // (TWCC receiver): number what leaves, estimate from what returns;
            // and retransmit within a budget.
            registry = registry
                .with(
                    Slot::from(retransmit::SLOT),
                    RetransmitBudget::new(wiring.counters.clone()),
                )
                .with(Slot::TwccSender, TwccSenderBuilder::new().build())
                .with(
                    Slot::CongestionControl,
                    CongestionControlBuilder::new(ViewerEstimator::new(
                        initial,
                        max,
                        wiring.feedback.clone(),
                    ))
                    .build(),
                );
        }
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(
                self.ice_servers
                    .iter()
                    .cloned()
                    .chain(wiring.ice_servers.iter().map(|s| RTCIceServer {
                        urls: s.urls.clone(),
                        username: s.username.clone(),
                        credential: s.credential.clone(),
                    }))
                    .collect(),
            )
            .with_certificates(vec![self.certificate.clone()])
            .build();
        let settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(self.bind.is_loopback())
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED),
                Some(ICE_FAILED),
                Some(ICE_KEEPALIVE),
            )
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
            .with_prflx_acceptance_min_wait(Some(ICE_PRFLX_MIN_WAIT))
            .with_multicast_dns_mode(mdns)
            .build();
        Ok(Parts {
            media,
            registry,
            configuration,
            settings,
        })
    }

    /// One connection's sans-I/O core, for a loop that drives it itself
    /// ([`crate::engine`]): the same parts as [`PeerFactory::build`], with
    /// the loop's own host candidates and no multicast DNS.
    pub fn core(
        &self,
        now: std::time::Instant,
        wiring: &Wiring,
    ) -> anyhow::Result<rtc::peer_connection::RTCPeerConnection> {
        let Parts {
            media,
            registry,
            configuration,
            settings,
        } = self.parts(MulticastDnsMode::Disabled, wiring)?;
        rtc::peer_connection::RTCPeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build(now)
            .context("building a connection")
    }

    async fn build_with(
        &self,
        port: u16,
        mdns: MulticastDnsMode,
        handler: Arc<dyn PeerConnectionEventHandler>,
        wiring: &Wiring,
    ) -> anyhow::Result<Arc<dyn PeerConnection>> {
        let Parts {
            media,
            registry,
            configuration,
            settings,
        } = self.parts(mdns, wiring)?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(vec![std::net::SocketAddr::new(self.bind, port)])
            .build()
            .await?;
        Ok(Arc::new(pc))
    }
}
