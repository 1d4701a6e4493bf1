//! One viewer's video sender: reads the shared frames at its own pace and
//! writes them as RTP to that viewer's track.
//!
//! It starts on a key frame and asks for one; when it falls behind the
//! fan-out (its network or its connection is slow) it loses frames for this
//! viewer alone, then waits for the next key frame so the picture recovers
//! cleanly instead of smearing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtc::rtp;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use crate::media::{EncodedFrame, KeyframeRequests};

/// What one viewer's sender has done; read by telemetry.
#[derive(Debug, Default)]
pub struct SenderCounters {
    pub frames_sent: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Frames this viewer missed because it fell behind.
    pub frames_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

/// The per-viewer RTP stream identity.
#[derive(Debug, Clone, Copy)]
pub struct RtpStream {
    pub ssrc: u32,
    pub payload_type: u8,
}

/// Sends frames until the connection goes away or the feed closes.
pub async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    stream: RtpStream,
    mut frames: broadcast::Receiver<Arc<EncodedFrame>>,
    keyframes: KeyframeRequests,
    counters: Arc<SenderCounters>,
) {
    let mut sequence: u16 = rand::random();
    let timestamp_base: u32 = rand::random();
    let mut waiting_for_keyframe = true;
    keyframes.request();
    loop {
        let frame = match frames.recv().await {
            Ok(frame) => frame,
            Err(RecvError::Lagged(missed)) => {
                counters.frames_dropped.fetch_add(missed, Ordering::Relaxed);
                if !waiting_for_keyframe {
                    waiting_for_keyframe = true;
                    keyframes.request();
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if waiting_for_keyframe {
            if !frame.keyframe {
                continue;
            }
            waiting_for_keyframe = false;
        }
        let last = frame.payloads.len().saturating_sub(1);
        for (i, payload) in frame.payloads.iter().enumerate() {
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: stream.payload_type,
                    sequence_number: sequence,
                    timestamp: frame.rtp_timestamp.wrapping_add(timestamp_base),
                    ssrc: stream.ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            sequence = sequence.wrapping_add(1);
            if track.write_rtp(packet).await.is_err() {
                // Unbound: the connection is closing.
                return;
            }
            counters.packets_sent.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_sent
                .fetch_add(payload.len() as u64 + 12, Ordering::Relaxed);
        }
        counters.frames_sent.fetch_add(1, Ordering::Relaxed);
    }
}
