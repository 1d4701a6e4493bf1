//! One viewer's video sender: the rules of [`VideoStream`] carried out
//! with the shared frame feeds, a timer and that viewer's track.
//!
//! It subscribes to the feed as soon as the connection is created, so the
//! key frame asked for then is usually there by the time ICE and DTLS are
//! up. It receives the frames of the layer being sent and, during a
//! switch, of its target, each at its own pace: a viewer that falls behind
//! the fan-out loses frames alone. Every [`TICK`] it hands the viewer's
//! feedback to the stream's layer choice and publishes the adaptation for
//! telemetry.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::feedback::Feedback;
use super::layer_needs::LayerNeeds;
use super::retransmit::KeyframeMark;
use super::video_stream::{Action, TICK, VideoStream};
use crate::adapt::Estimate;
use crate::media::{EncodedFrame, VideoLayers, Watching};

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
    /// How its packets leave: a [`SendPath`] as a number.
    pub send_path: AtomicU8,
    /// Sound the viewer sent while it held the floor (RTP packets), for
    /// telemetry; the floor judges silence by what the speaker plays.
    pub talk_packets: AtomicU64,
    /// How the viewer is reached: our candidate's kind in the pair in use
    /// ([`crate::peer::stats::path_name`]).
    pub path: AtomicU8,
}

/// How a connection's packets leave, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SendPath {
    /// Its own tasks on the `webrtc` crate's driver, a `sendmsg` a packet.
    Tasks = 0,
    /// The send loop, each frame's packets in one GSO send.
    LoopGso = 1,
    /// The send loop, a `sendmsg` a packet (the kernel has no GSO).
    LoopPerDatagram = 2,
}

impl SendPath {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tasks => "tasks",
            Self::LoopGso => "loop-gso",
            Self::LoopPerDatagram => "loop-sendmsg",
        }
    }

    pub fn of(counters: &SenderCounters) -> Self {
        match counters.send_path.load(Ordering::Relaxed) {
            1 => Self::LoopGso,
            2 => Self::LoopPerDatagram,
            _ => Self::Tasks,
        }
    }
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

/// Makes this viewer's RTP packets of a frame: its own SSRC, payload type,
/// sequence numbers and timestamp base, counted in its counters.
pub struct Stamper {
    /// Video marks the last packet of each frame and counts as video; sound
    /// marks none (RFC 7587: only a talk spurt's start, and Opus here is
    /// continuous) and counts as sound.
    pub kind: RtpCodecKind,
    pub stream: RtpStream,
    pub sequence: u16,
    pub timestamp_base: u32,
    pub counters: Arc<SenderCounters>,
}

impl Stamper {
    /// Starts a stream at a random sequence number.
    pub fn new(
        kind: RtpCodecKind,
        stream: RtpStream,
        timestamp_base: u32,
        counters: Arc<SenderCounters>,
    ) -> Self {
        Self {
            kind,
            stream,
            sequence: rand::random(),
            timestamp_base,
            counters,
        }
    }

    /// The packets of `frame`, with `filler` payloads before its last one.
    pub fn packets<'a>(
        &'a mut self,
        frame: &'a EncodedFrame,
        filler: &'a [Bytes],
    ) -> impl Iterator<Item = rtp::Packet> + 'a {
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
        payloads.enumerate().map(move |(i, payload)| {
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
            let (packets, bytes) = match self.kind {
                RtpCodecKind::Audio => (
                    &self.counters.audio_packets_sent,
                    &self.counters.audio_bytes_sent,
                ),
                _ => (&self.counters.packets_sent, &self.counters.bytes_sent),
            };
            packets.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(payload.len() as u64 + 12, Ordering::Relaxed);
            packet
        })
    }
}

/// Writes frames as RTP to this viewer's track.
pub(super) struct Packetwriter {
    pub track: Arc<TrackLocalStaticRTP>,
    pub stamper: Stamper,
}

impl Packetwriter {
    /// Sends `frame`, with `filler` payloads before its last packet.
    /// `false` when the track is gone (the connection is closing).
    pub async fn send(&mut self, frame: &EncodedFrame, filler: &[Bytes]) -> bool {
        for packet in self.stamper.packets(frame, filler) {
            if self.track.write_rtp(packet).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// A layer's frames, received while the viewer watches it.
struct Watched {
    frames: broadcast::Receiver<Arc<EncodedFrame>>,
    _watching: Watching,
}

/// The next frame of the layer being sent or of a switch's target,
/// whichever comes first; never when neither is watched.
async fn next_frame(
    watched: &mut [Option<Watched>],
    current: usize,
    target: Option<usize>,
) -> (usize, Result<Arc<EncodedFrame>, RecvError>) {
    let mut receivers = watched
        .iter_mut()
        .enumerate()
        .filter(|(layer, _)| *layer == current || Some(*layer) == target)
        .filter_map(|(layer, w)| w.as_mut().map(|w| (layer, &mut w.frames)));
    match (receivers.next(), receivers.next()) {
        (Some((a, first)), Some((b, second))) => tokio::select! {
            frame = first.recv() => (a, frame),
            frame = second.recv() => (b, frame),
        },
        (Some((layer, only)), None) => (layer, only.recv().await),
        _ => std::future::pending().await,
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

/// The frames, watches and key-frame requests a [`VideoStream`] asks for.
struct Shell {
    layers: VideoLayers,
    watched: Vec<Option<Watched>>,
    counters: Arc<SenderCounters>,
}

impl Shell {
    /// Carries out the stream's actions; `false` when the track is gone.
    async fn act(&mut self, stream: &mut VideoStream, writer: Option<&mut Packetwriter>) -> bool {
        let mut writer = writer;
        while let Some(action) = stream.poll_action() {
            match action {
                Action::Send { frame, filler } => {
                    let writer = writer.as_deref_mut().expect("frames are sent once ready");
                    if !writer.send(&frame, &filler).await {
                        return false;
                    }
                }
                Action::Watch(layer) => {
                    let feed = self.layers.get(layer).expect("a layer of the feed");
                    let (frames, watching) = feed.watch();
                    self.watched[layer] = Some(Watched {
                        frames,
                        _watching: watching,
                    });
                }
                Action::Unwatch(layer) => self.watched[layer] = None,
                Action::RequestKeyframe(layer) => {
                    self.layers
                        .get(layer)
                        .expect("a layer of the feed")
                        .keyframes
                        .request();
                }
            }
        }
        self.counters.layer.store(stream.layer(), Ordering::Relaxed);
        true
    }

    /// Passes a frame, or the news that some were lost, to the stream.
    fn take(
        &self,
        stream: &mut VideoStream,
        layer: usize,
        frame: Result<Arc<EncodedFrame>, RecvError>,
    ) -> bool {
        match frame {
            Ok(frame) => stream.on_frame(Instant::now(), layer, &frame),
            Err(RecvError::Lagged(missed)) => {
                if layer == stream.layer() {
                    self.counters
                        .frames_dropped
                        .fetch_add(missed, Ordering::Relaxed);
                }
                stream.on_lagged(layer);
            }
            Err(RecvError::Closed) => return false,
        }
        true
    }
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
    let top_bps = f64::from(layers.top().state.bitrate_kbps.load(Ordering::Relaxed)) * 1000.0;
    let mut stream = VideoStream::new(Instant::now(), start, top_bps, *pin.borrow());
    let mut shell = Shell {
        watched: (0..layers.len()).map(|_| None).collect(),
        layers,
        counters: counters.clone(),
    };
    shell.act(&mut stream, None).await;
    tokio::pin!(ready);
    let rtp_stream = loop {
        tokio::select! {
            rtp_stream = &mut ready => match rtp_stream {
                Ok(s) => break s,
                Err(_) => return,
            },
            (layer, frame) = next_frame(&mut shell.watched, stream.layer(), None) => {
                if !shell.take(&mut stream, layer, frame) {
                    return;
                }
            }
        }
    };
    let mut writer = Packetwriter {
        track,
        stamper: Stamper::new(
            RtpCodecKind::Video,
            rtp_stream,
            timestamp_base,
            counters.clone(),
        ),
    };
    stream.ready();
    if !shell.act(&mut stream, Some(&mut writer)).await {
        return;
    }

    let mut needs = LayerNeeds::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            (layer, frame) = next_frame(&mut shell.watched, stream.layer(), stream.target()) => {
                if !shell.take(&mut stream, layer, frame) {
                    return;
                }
            }
            changed = pin.changed() => {
                if changed.is_err() {
                    return;
                }
                stream.pin(*pin.borrow());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let (estimate, decision) =
                    stream.tick(now, feedback.heard(&counters), &needs.update(now, &shell.layers));
                let state = &shell.layers.get(stream.layer()).expect("watched").state;
                *counters.adaptation.lock().expect("adaptation lock is never poisoned") = Some(Adaptation {
                    layer: stream.layer(),
                    width: state.width.load(Ordering::Relaxed),
                    height: state.height.load(Ordering::Relaxed),
                    estimate,
                    switches: stream.controller().switches(),
                    pinned: stream.controller().pinned(),
                    padding_bps: decision.padding_bps,
                });
            }
        }
        if !shell.act(&mut stream, Some(&mut writer)).await {
            return;
        }
    }
}
