//! One viewer's video sender: reads the shared frames at its own pace and
//! writes them as RTP to that viewer's track.
//!
//! It subscribes to the feed as soon as the connection is created and asks
//! for a key frame then, so the key frame is usually there by the time ICE
//! and DTLS are up: it keeps the frames from the latest key frame on
//! ("preload") and sends them the moment the connection is ready. The
//! viewer's first frame then costs the connection set-up and nothing more.
//!
//! When it falls behind the fan-out (its network or its connection is slow)
//! it loses frames for this viewer alone, then waits for the next key frame
//! so the picture recovers cleanly instead of smearing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtc::rtp;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use crate::media::{EncodedFrame, KeyframeRequests};

/// Frames kept while the connection is being set up (half a second at
/// 30 fps); a longer preload is dropped rather than sent as a burst.
pub const MAX_PRELOAD: usize = 15;

/// What one viewer's sender has done; read by telemetry.
#[derive(Debug, Default)]
pub struct SenderCounters {
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Frames this viewer missed because it fell behind.
    pub frames_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// RTCP packets from the viewer: reports, feedback, requests.
    pub rtcp_received: AtomicU64,
    /// From the connection's statistics: NACKs received.
    pub nacks: AtomicU64,
    /// From the connection's statistics: round-trip time in microseconds
    /// (0 until measured).
    pub rtt_us: AtomicU64,
}

/// The per-viewer RTP stream identity, known once negotiation is done.
#[derive(Debug, Clone, Copy)]
pub struct RtpStream {
    pub ssrc: u32,
    pub payload_type: u8,
}

/// Writes frames as RTP with this viewer's own header fields.
struct Packetwriter {
    track: Arc<TrackLocalStaticRTP>,
    stream: RtpStream,
    sequence: u16,
    timestamp_base: u32,
    counters: Arc<SenderCounters>,
}

impl Packetwriter {
    /// `false` when the track is gone (the connection is closing).
    async fn send(&mut self, frame: &EncodedFrame) -> bool {
        let last = frame.payloads.len().saturating_sub(1);
        for (i, payload) in frame.payloads.iter().enumerate() {
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: self.stream.payload_type,
                    sequence_number: self.sequence,
                    timestamp: frame.rtp_timestamp.wrapping_add(self.timestamp_base),
                    ssrc: self.stream.ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            self.sequence = self.sequence.wrapping_add(1);
            if self.track.write_rtp(packet).await.is_err() {
                return false;
            }
            self.counters.packets_sent.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_sent
                .fetch_add(payload.len() as u64 + 12, Ordering::Relaxed);
        }
        true
    }
}

/// Keeps the frames since the latest key frame until the connection is up.
async fn preload(
    frames: &mut broadcast::Receiver<Arc<EncodedFrame>>,
    ready: oneshot::Receiver<RtpStream>,
) -> Option<(RtpStream, Vec<Arc<EncodedFrame>>)> {
    let mut kept: Vec<Arc<EncodedFrame>> = Vec::new();
    tokio::pin!(ready);
    loop {
        tokio::select! {
            stream = &mut ready => return stream.ok().map(|s| (s, kept)),
            frame = frames.recv() => match frame {
                Ok(frame) if frame.keyframe => kept = vec![frame],
                Ok(frame) if !kept.is_empty() => {
                    kept.push(frame);
                    if kept.len() > MAX_PRELOAD {
                        // Too old to send as a burst: wait for the next one.
                        kept.clear();
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => kept.clear(),
                Err(RecvError::Closed) => return None,
            },
        }
    }
}

/// Sends video for one viewer: preloads until `ready` gives the negotiated
/// stream, then sends until the connection goes away or the feed closes.
pub async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    mut frames: broadcast::Receiver<Arc<EncodedFrame>>,
    ready: oneshot::Receiver<RtpStream>,
    keyframes: KeyframeRequests,
    counters: Arc<SenderCounters>,
) {
    keyframes.request();
    let Some((stream, preloaded)) = preload(&mut frames, ready).await else {
        return;
    };
    let mut writer = Packetwriter {
        track,
        stream,
        sequence: rand::random(),
        timestamp_base: rand::random(),
        counters: counters.clone(),
    };
    let mut waiting_for_keyframe = preloaded.is_empty();
    if waiting_for_keyframe {
        keyframes.request();
    }
    for frame in &preloaded {
        if !writer.send(frame).await {
            return;
        }
    }
    drop(preloaded);
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
        if !writer.send(&frame).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(keyframe: bool, n: u32) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            payloads: vec![Bytes::from_static(b"x")],
            rtp_timestamp: n,
            keyframe,
            size: 1,
            access_unit: Bytes::from_static(b"x"),
        })
    }

    #[tokio::test]
    async fn preload_keeps_the_frames_since_the_latest_key_frame() {
        let (tx, mut rx) = broadcast::channel(64);
        let (ready_tx, ready) = oneshot::channel();
        for (i, key) in [false, true, false, true, false, false]
            .into_iter()
            .enumerate()
        {
            tx.send(frame(key, i as u32)).unwrap();
        }
        let task = tokio::spawn(async move { preload(&mut rx, ready).await });
        tokio::task::yield_now().await;
        while !tx.is_empty() {
            tokio::task::yield_now().await;
        }
        ready_tx
            .send(RtpStream {
                ssrc: 1,
                payload_type: 102,
            })
            .unwrap();
        let (_, kept) = task.await.unwrap().unwrap();
        let stamps: Vec<u32> = kept.iter().map(|f| f.rtp_timestamp).collect();
        assert_eq!(stamps, vec![3, 4, 5]);
    }

    #[tokio::test]
    async fn a_long_preload_is_dropped_not_burst() {
        let (tx, mut rx) = broadcast::channel(64);
        let (ready_tx, ready) = oneshot::channel();
        tx.send(frame(true, 0)).unwrap();
        for i in 1..=MAX_PRELOAD as u32 {
            tx.send(frame(false, i)).unwrap();
        }
        let task = tokio::spawn(async move { preload(&mut rx, ready).await });
        while !tx.is_empty() {
            tokio::task::yield_now().await;
        }
        ready_tx
            .send(RtpStream {
                ssrc: 1,
                payload_type: 102,
            })
            .unwrap();
        let (_, kept) = task.await.unwrap().unwrap();
        assert!(kept.is_empty());
    }
}
