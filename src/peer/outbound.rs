//! The local half of a sending peer: its send-only video transceiver, its
//! own sender task on the shared frame feed, and what it hears back (key-frame
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
use super::{PeerEvent, SenderCounters, factory, liveness::Observed, sender};
use crate::media::VideoLayers;
use crate::room::LinkId;

/// The local half of a sending peer.
pub(super) struct Outbound {
    layers: VideoLayers,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// Tells the video sender the negotiated stream once connected.
    ready: Option<oneshot::Sender<sender::RtpStream>>,
    tasks: Vec<JoinHandle<()>>,
}

pub(super) async fn add_video_track(
    pc: &Arc<dyn PeerConnection>,
    layers: VideoLayers,
    counters: Arc<SenderCounters>,
    feedback: Arc<Feedback>,
    pin: watch::Receiver<Option<usize>>,
) -> anyhow::Result<Outbound> {
    let ssrc: u32 = rand::random();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "meshcam".to_owned(),
        format!("video-{ssrc:08x}"),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: factory::h264_codec(),
            ..Default::default()
        }],
    )));
    // Send-only (PROTOCOL.md): `add_track` would offer sendrecv.
    let transceiver = pc
        .add_transceiver_from_track(
            track.clone() as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .context("adding the video track")?;
    let sender = transceiver
        .sender()
        .await
        .context("the video sender")?
        .context("the video transceiver has no sender")?;
    // The sender starts now, preloading from the next key frame while the
    // connection is being set up.
    let (ready, ready_rx) = oneshot::channel();
    let video = tokio::spawn(sender::send_video(sender::SenderSetup {
        track: track.clone(),
        layers: layers.clone(),
        ready: ready_rx,
        counters,
        feedback,
        pin,
    }));
    Ok(Outbound {
        layers,
        track,
        sender,
        ssrc,
        ready: Some(ready),
        tasks: vec![video],
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
        let Some(ready) = self.ready.take() else {
            return;
        };
        let payload_type = match self.sender.get_parameters().await {
            Ok(p) => p
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .unwrap_or(factory::H264_PAYLOAD_TYPE),
            Err(_) => factory::H264_PAYLOAD_TYPE,
        };
        let _ = ready.send(sender::RtpStream {
            ssrc: self.ssrc,
            payload_type,
        });
        let track = self.track.clone();
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
    /// What the liveness watch needs to know now.
    pub(super) async fn observe(&self, counters: &SenderCounters) -> Observed {
        let dtls_closed = match self.sender.transport().await {
            Ok(Some(transport)) => {
                matches!(transport.state().await, Ok(RTCDtlsTransportState::Closed))
            }
            _ => false,
        };
        Observed {
            rtcp_received: counters.rtcp_received.load(Ordering::Relaxed),
            packets_sent: counters.packets_sent.load(Ordering::Relaxed),
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
