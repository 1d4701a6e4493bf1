//! The local half of a sending peer: its send-only video transceiver and
//! its audio transceiver (one media stream), their own sender tasks on the
//! shared feeds, and what it hears back (key-frame
//! requests, what the liveness watch observes).
//!
//! Owns the track, the sender and their tasks. Must not touch negotiation
//! (the peer task in `mod.rs`) or the frame feed's producer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::feedback::{self, Feedback};
use super::reports::StreamClocks;
use super::stats::Consent;
use super::{Outgoing, PeerEvent, SenderCounters, factory, liveness::Observed, sender, sound};
use crate::media::VideoLayers;
use crate::room::LinkId;

/// The local half of a sending peer.
pub(super) struct Outbound {
    layers: VideoLayers,
    video: LocalTrack,
    audio: Option<LocalTrack>,
    tasks: Vec<JoinHandle<()>>,
}

/// One local track on its transceiver, and its stream's identity.
struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// The payload type offered, used when the negotiated one cannot be read.
    offered_payload_type: u8,
    /// The RTP timestamp base, told to the sender reports.
    base: u32,
    /// Tells the track's sender the negotiated stream once connected.
    ready: Option<oneshot::Sender<sender::RtpStream>>,
}

impl LocalTrack {
    /// Tells the sender the negotiated stream; `false` once told.
    async fn announce(&mut self) -> bool {
        let Some(ready) = self.ready.take() else {
            return false;
        };
        let payload_type = match self.sender.get_parameters().await {
            Ok(p) => p
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .unwrap_or(self.offered_payload_type),
            Err(_) => self.offered_payload_type,
        };
        let _ = ready.send(sender::RtpStream {
            ssrc: self.ssrc,
            payload_type,
        });
        true
    }
}

/// The media stream both tracks belong to: a browser plays them in one
/// element, in sync.
const STREAM_ID: &str = "meshcam";

fn kind_name(kind: RtpCodecKind) -> &'static str {
    if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    }
}

/// A local track of `kind`, sent as `ssrc`, in the camera's media stream.
pub(super) fn media_track(
    kind: RtpCodecKind,
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    ssrc: u32,
) -> MediaStreamTrack {
    let name = kind_name(kind);
    MediaStreamTrack::new(
        STREAM_ID.to_owned(),
        format!("{name}-{ssrc:08x}"),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

/// Send-only (PROTOCOL.md): `add_track` would offer sendrecv.
pub(super) fn send_only() -> RTCRtpTransceiverInit {
    RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        streams: vec![],
        send_encodings: vec![],
    }
}

async fn add_track(
    pc: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    offered_payload_type: u8,
    clocks: &StreamClocks,
) -> anyhow::Result<(LocalTrack, oneshot::Receiver<sender::RtpStream>)> {
    let ssrc: u32 = rand::random();
    let name = kind_name(kind);
    let track = Arc::new(TrackLocalStaticRTP::new(media_track(kind, codec, ssrc)));
    let transceiver = pc
        .add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(send_only()))
        .await
        .with_context(|| format!("adding the {name} track"))?;
    let sender = transceiver
        .sender()
        .await
        .with_context(|| format!("the {name} sender"))?
        .with_context(|| format!("the {name} transceiver has no sender"))?;
    let base: u32 = rand::random();
    clocks.set(ssrc, base);
    let (ready, ready_rx) = oneshot::channel();
    Ok((
        LocalTrack {
            track,
            sender,
            ssrc,
            offered_payload_type,
            base,
            ready: Some(ready),
        },
        ready_rx,
    ))
}

pub(super) async fn add_tracks(
    pc: &Arc<dyn PeerConnection>,
    media: Outgoing,
    counters: Arc<SenderCounters>,
    feedback: Arc<Feedback>,
    clocks: &StreamClocks,
    pin: watch::Receiver<Option<usize>>,
) -> anyhow::Result<Outbound> {
    let (video, ready_rx) = add_track(
        pc,
        RtpCodecKind::Video,
        factory::h264_codec(),
        factory::H264_PAYLOAD_TYPE,
        clocks,
    )
    .await?;
    feedback.video_ssrc.store(video.ssrc, Ordering::Relaxed);
    // The sender starts now, preloading from the next key frame while the
    // connection is being set up.
    let mut tasks = vec![tokio::spawn(sender::send_video(sender::SenderSetup {
        track: video.track.clone(),
        layers: media.video.clone(),
        ready: ready_rx,
        timestamp_base: video.base,
        counters: counters.clone(),
        feedback,
        pin,
    }))];
    let audio = match media.audio {
        Some(feed) => {
            let (audio, ready_rx) = add_track(
                pc,
                RtpCodecKind::Audio,
                factory::opus_codec(),
                factory::OPUS_PAYLOAD_TYPE,
                clocks,
            )
            .await?;
            tasks.push(tokio::spawn(sound::send_audio(
                audio.track.clone(),
                feed,
                ready_rx,
                audio.base,
                counters.clone(),
            )));
            Some(audio)
        }
        None => None,
    };
    Ok(Outbound {
        layers: media.video,
        video,
        audio,
        tasks,
    })
}

impl Outbound {
    /// Once connected: lets the video flow and listens for PLI/FIR, which
    /// go to the encoder of the layer this viewer gets.
    pub(super) async fn start(
        &mut self,
        link: LinkId,
        counters: Arc<SenderCounters>,
        events: &mpsc::UnboundedSender<PeerEvent>,
    ) {
        if !self.video.announce().await {
            return;
        }
        if let Some(audio) = self.audio.as_mut() {
            audio.announce().await;
        }
        let track = self.video.track.clone();
        let layers = self.layers.clone();
        let events = events.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                    continue;
                };
                if packets
                    .iter()
                    .any(|p| feedback::is_keyframe_request(p.as_ref()))
                {
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    let layer = counters.layer.load(Ordering::Relaxed);
                    if let Some(feed) = layers.get(layer) {
                        feed.keyframes.request();
                    }
                    let _ = events.send(PeerEvent::KeyframeRequest(link));
                }
            }
        }));
    }
}

impl Outbound {
    /// What the liveness watch needs to know now, with the consent checks
    /// just read from the connection's statistics.
    pub(super) async fn observe(&self, counters: &SenderCounters, consent: Consent) -> Observed {
        let dtls_closed = match self.video.sender.transport().await {
            Ok(Some(transport)) => {
                matches!(transport.state().await, Ok(RTCDtlsTransportState::Closed))
            }
            _ => false,
        };
        Observed {
            consent_requests: consent.requests,
            consent_responses: consent.responses,
            rtcp_received: counters.rtcp_received.load(Ordering::Relaxed),
            dtls_closed,
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
