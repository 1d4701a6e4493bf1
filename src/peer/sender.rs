//! One viewer's video sender: reads the shared frames of the layer its
//! link carries, at its own pace, and writes them as RTP to that viewer's
//! track.
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
//!
//! Every [`TICK`] it hands the viewer's feedback to its [`LinkEstimator`]
//! and [`LayerController`] and carries the decision out: a switch starts by
//! watching the target layer and asking it for a key frame, and happens at
//! that key frame, on the same SSRC with continuous sequence numbers (the
//! viewer's decoder sees a new resolution at an IDR). A step down holds
//! the current layer back meanwhile, so the key frame finds the link's
//! queue empty. A probe adds filler NAL units to the frames
//! ([`super::padding`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::feedback::Feedback;
use super::layer_needs::LayerNeeds;
use super::padding::Padding;
use super::retransmit::KeyframeMark;
use crate::adapt::{Estimate, LayerController, LinkEstimator};
use crate::media::{EncodedFrame, VideoLayers, Watching};

/// Frames kept while the connection is being set up (half a second at
/// 30 fps); a longer preload is dropped rather than sent as a burst.
pub const MAX_PRELOAD: usize = 15;
/// How often the layer choice is made again.
pub const TICK: Duration = Duration::from_millis(100);
/// A layer switch whose key frame has not come by then asks again.
pub const SWITCH_RETRY: Duration = Duration::from_secs(1);

/// What one viewer's sender has done; read by telemetry.
#[derive(Debug, Default)]
pub struct SenderCounters {
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Frames this viewer missed because it fell behind.
    pub frames_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Sound sent to this viewer (RTP packets, payload and header bytes).
    pub audio_packets_sent: AtomicU64,
    pub audio_bytes_sent: AtomicU64,
    /// RTCP packets from the viewer: reports, feedback, requests.
    pub rtcp_received: AtomicU64,
    /// From the connection's statistics: NACKs received.
    pub nacks: AtomicU64,
    /// From the connection's statistics: round-trip time in microseconds
    /// (0 until measured).
    pub rtt_us: AtomicU64,
    /// The layer being sent: where the viewer's key-frame requests go.
    pub layer: AtomicUsize,
    /// Where the latest video key frame sent starts (see [`KeyframeMark`]):
    /// packets before it are not worth sending again.
    pub keyframe_mark: AtomicU64,
    /// The adaptation as last decided, once the sender runs.
    pub adaptation: Mutex<Option<Adaptation>>,
}

/// One viewer's adaptation, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptation {
    pub layer: usize,
    /// The layer's picture size.
    pub width: u32,
    pub height: u32,
    pub estimate: Estimate,
    pub switches: u64,
    pub pinned: Option<usize>,
    pub padding_bps: f64,
}

/// The per-viewer RTP stream identity, known once negotiation is done.
#[derive(Debug, Clone, Copy)]
pub struct RtpStream {
    pub ssrc: u32,
    pub payload_type: u8,
}

/// Writes frames as RTP with this viewer's own header fields.
pub(super) struct Packetwriter {
    /// Video marks the last packet of each frame and counts as video; sound
    /// marks none (RFC 7587: only a talk spurt's start, and Opus here is
    /// continuous) and counts as sound.
    pub kind: RtpCodecKind,
    pub track: Arc<TrackLocalStaticRTP>,
    pub stream: RtpStream,
    pub sequence: u16,
    pub timestamp_base: u32,
    pub counters: Arc<SenderCounters>,
}

impl Packetwriter {
    /// Sends `frame`, with `filler` payloads before its last packet.
    /// `false` when the track is gone (the connection is closing).
    pub async fn send(&mut self, frame: &EncodedFrame, filler: &[Bytes]) -> bool {
        let (last, body) = frame.payloads.split_last().expect("a frame has payloads");
        let payloads = body.iter().chain(filler).chain(std::iter::once(last));
        let count = frame.payloads.len() + filler.len();
        if self.kind == RtpCodecKind::Video && frame.keyframe {
            KeyframeMark {
                ssrc: self.stream.ssrc,
                sequence: self.sequence,
            }
            .store(&self.counters.keyframe_mark);
        }
        for (i, payload) in payloads.enumerate() {
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: self.kind == RtpCodecKind::Video && i + 1 == count,
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
            let (packets, bytes) = match self.kind {
                RtpCodecKind::Audio => (
                    &self.counters.audio_packets_sent,
                    &self.counters.audio_bytes_sent,
                ),
                _ => (&self.counters.packets_sent, &self.counters.bytes_sent),
            };
            packets.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(payload.len() as u64 + 12, Ordering::Relaxed);
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

/// The layer being watched, frames and all.
struct Watched {
    layer: usize,
    frames: broadcast::Receiver<Arc<EncodedFrame>>,
    _watching: Watching,
}

impl Watched {
    fn new(layers: &VideoLayers, layer: usize) -> Self {
        let feed = layers.get(layer).expect("a layer of the feed");
        let (frames, watching) = feed.watch();
        feed.keyframes.request();
        Self {
            layer,
            frames,
            _watching: watching,
        }
    }
}

/// A switch under way: the target layer, watched until its key frame.
struct Switch {
    target: Watched,
    asked: Instant,
}

async fn next_of(switch: &mut Option<Switch>) -> Result<Arc<EncodedFrame>, RecvError> {
    match switch {
        Some(s) => s.target.frames.recv().await,
        None => std::future::pending().await,
    }
}

/// What a viewer's sender is given.
pub struct SenderSetup {
    pub track: Arc<TrackLocalStaticRTP>,
    pub layers: VideoLayers,
    pub ready: oneshot::Receiver<RtpStream>,
    /// The stream's RTP timestamp base, known to its sender reports.
    pub timestamp_base: u32,
    pub counters: Arc<SenderCounters>,
    pub feedback: Arc<Feedback>,
    /// The layer this viewer is held on, if any.
    pub pin: watch::Receiver<Option<usize>>,
}

/// Sends video for one viewer: preloads until `ready` gives the negotiated
/// stream, then sends until the connection goes away or the feed closes.
pub async fn send_video(setup: SenderSetup) {
    let SenderSetup {
        track,
        layers,
        ready,
        timestamp_base,
        counters,
        feedback,
        mut pin,
    } = setup;
    let start = pin
        .borrow()
        .filter(|l| layers.get(*l).is_some_and(|f| f.state.is_available()))
        .unwrap_or(0);
    let mut current = Watched::new(&layers, start);
    counters.layer.store(start, Ordering::Relaxed);
    let Some((stream, preloaded)) = preload(&mut current.frames, ready).await else {
        return;
    };
    let mut writer = Packetwriter {
        kind: RtpCodecKind::Video,
        track,
        stream,
        sequence: rand::random(),
        timestamp_base,
        counters: counters.clone(),
    };
    let mut waiting_for_keyframe = preloaded.is_empty();
    if waiting_for_keyframe {
        layers.get(start).expect("watched").keyframes.request();
    }
    for frame in &preloaded {
        if !writer.send(frame, &[]).await {
            return;
        }
    }
    drop(preloaded);

    let now = Instant::now();
    let top_bps = f64::from(layers.top().state.bitrate_kbps.load(Ordering::Relaxed)) * 1000.0;
    let mut estimator = LinkEstimator::new(top_bps);
    let mut controller = LayerController::new(now, start);
    controller.pin(*pin.borrow());
    let mut needs = LayerNeeds::new();
    let mut padding = Padding::default();
    let mut switch: Option<Switch> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            frame = current.frames.recv() => {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(RecvError::Lagged(missed)) => {
                        counters.frames_dropped.fetch_add(missed, Ordering::Relaxed);
                        if !waiting_for_keyframe {
                            waiting_for_keyframe = true;
                            layers.get(current.layer).expect("watched").keyframes.request();
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if switch.as_ref().is_some_and(|s| s.target.layer > current.layer) {
                    // Stepping down: this layer overruns the link, so it
                    // waits, and the bottleneck's queue drains before the
                    // target's key frame comes. It resumes at a key frame.
                    waiting_for_keyframe = true;
                    continue;
                }
                if waiting_for_keyframe {
                    if !frame.keyframe {
                        continue;
                    }
                    waiting_for_keyframe = false;
                }
                if !writer.send(&frame, &padding.filler(Instant::now())).await {
                    return;
                }
            }
            frame = next_of(&mut switch) => {
                match frame {
                    Ok(frame) if frame.keyframe => {
                        let target = switch.take().expect("a switch is under way").target;
                        counters.layer.store(target.layer, Ordering::Relaxed);
                        current = target;
                        waiting_for_keyframe = false;
                        if !writer.send(&frame, &[]).await {
                            return;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
            changed = pin.changed() => {
                if changed.is_err() {
                    return;
                }
                controller.pin(*pin.borrow());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let estimate = estimator.update(now, feedback.heard(&counters));
                let decision = controller.update(now, &estimate, &needs.update(now, &layers));
                padding.set_rate(decision.padding_bps);
                if decision.layer == current.layer {
                    if switch.take().is_some() && waiting_for_keyframe {
                        layers.get(current.layer).expect("watched").keyframes.request();
                    }
                } else {
                    match &mut switch {
                        Some(s) if s.target.layer == decision.layer => {
                            if now.duration_since(s.asked) >= SWITCH_RETRY {
                                layers.get(s.target.layer).expect("watched").keyframes.request();
                                s.asked = now;
                            }
                        }
                        _ => {
                            switch = Some(Switch {
                                target: Watched::new(&layers, decision.layer),
                                asked: now,
                            });
                        }
                    }
                }
                let state = &layers.get(current.layer).expect("watched").state;
                *counters.adaptation.lock().expect("adaptation lock is never poisoned") = Some(Adaptation {
                    layer: current.layer,
                    width: state.width.load(Ordering::Relaxed),
                    height: state.height.load(Ordering::Relaxed),
                    estimate,
                    switches: controller.switches(),
                    pinned: controller.pinned(),
                    padding_bps: decision.padding_bps,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
