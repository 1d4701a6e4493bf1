//! `meshcam view`: a headless viewer for diagnostics and load.
//!
//! It joins a room as a viewer (the same room logic and peer code as the
//! camera, from the other side), receives the camera's video (and counts
//! the packets of its sound), reassembles H.264 access units ([`assembly`]), and reports time to first frame,
//! frame rate, bitrate and freezes ([`freeze`]) as JSON lines on stdout.
//! With `--decode` every access unit also goes through GStreamer's
//! `avdec_h264` ([`decoder`]), proving the frames decode. `--count N` runs N
//! independent viewers in one process, for benchmarks; `--no-twcc` leaves
//! transport-wide congestion control out of the negotiation, so the camera
//! hears only receiver reports, as from a viewer that has no TWCC.
//!
//! Owns each viewer's loop (broker session, peer events, the room timer
//! woken at [`Participant::next_deadline`]), the media receive path and the
//! report lines. Must not decide anything about negotiation: that is the
//! [`Participant`]'s and the room logic's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod assembly;
mod decoder;
mod fed;
mod freeze;
mod janus;
mod offers;
mod sound;
mod stats;

use anyhow::Context;
use gstreamer as gst;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::config::WebrtcConfig;
use crate::mqtt::{self, Broker, MqttEvent, SessionOptions};
use crate::participant::Participant;
use crate::participant::sleep_until;
use crate::peer::{PeerEvent, PeerFactory};
use crate::protocol::{Role, Topics, Watch, ids};
use crate::room::Me;
use assembly::{Assembler, is_keyframe};
use decoder::Decoder;
use freeze::Freezes;
use offers::Offers;
use sound::SoundDecoder;
pub use stats::ViewerStats;

/// What `meshcam view` was asked to do.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    pub broker: Broker,
    pub prefix: String,
    pub room: String,
    /// Peer id; with `count > 1`, a suffix `-N` is added. Random when empty.
    pub id: Option<String>,
    pub count: usize,
    pub decode: bool,
    /// Stop once every viewer has this many frames (decoded, with `decode`).
    pub frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub report_interval: Duration,
    /// Address for media sockets.
    pub bind: String,
    /// Negotiate transport-wide congestion control feedback.
    pub twcc: bool,
}

struct Viewer {
    id: String,
    stats: Arc<ViewerStats>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the viewers; returns whether every one of them reached its goal
/// (the frame target, or at least one frame).
pub async fn run(options: ViewOptions) -> anyhow::Result<bool> {
    if options.decode {
        gst::init().context("GStreamer failed to initialise")?;
        anyhow::ensure!(
            crate::media::has_element("avdec_h264"),
            "--decode needs avdec_h264 (Debian package gstreamer1.0-libav)"
        );
    }
    let factory = PeerFactory::new(
        &WebrtcConfig {
            bind_address: options.bind.clone(),
            ..WebrtcConfig::default()
        },
        Vec::new(),
    )?;
    let factory = Arc::new(if options.twcc {
        factory
    } else {
        factory.without_twcc()
    });
    let base = options
        .id
        .clone()
        .unwrap_or_else(|| format!("view-{}", &ids::new_session()[..8]));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut viewers = Vec::new();
    for n in 0..options.count {
        let id = if options.count == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let stats = Arc::new(ViewerStats::default());
        let task = tokio::spawn(run_viewer(
            id.clone(),
            options.clone(),
            factory.clone(),
            stats.clone(),
            stop_rx.clone(),
        ));
        viewers.push(Viewer { id, stats, task });
    }
    let started = Instant::now();
    let mut report = tokio::time::interval(options.report_interval);
    let mut previous: Vec<(u64, u64)> = vec![(0, 0); viewers.len()];
    let mut announced = vec![false; viewers.len()];
    let mut last_report = Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(50));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = report.tick() => {
                let now = Instant::now();
                let wall = now.duration_since(last_report).as_secs_f64().max(1e-3);
                last_report = now;
                for (i, v) in viewers.iter().enumerate() {
                    print_line(v.stats.report(&v.id, &mut previous[i], wall));
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
        for (i, v) in viewers.iter().enumerate() {
            let us = v.stats.first_frame_us.load(Ordering::Relaxed);
            if us > 0 && !announced[i] {
                announced[i] = true;
                print_line(json!({
                    "event": "first_frame",
                    "viewer": v.id,
                    "ms": us as f64 / 1000.0,
                }));
            }
        }
        if let Some(target) = options.frames
            && viewers
                .iter()
                .all(|v| progress(&v.stats, options.decode) >= target)
        {
            break;
        }
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    for v in &mut viewers {
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut v.task).await;
    }
    let goal = options.frames.unwrap_or(1);
    let mut first_ms: Vec<f64> = viewers
        .iter()
        .map(|v| v.stats.first_frame_us.load(Ordering::Relaxed))
        .filter(|us| *us > 0)
        .map(|us| us as f64 / 1000.0)
        .collect();
    first_ms.sort_by(f64::total_cmp);
    let ok = viewers
        .iter()
        .all(|v| progress(&v.stats, options.decode) >= goal);
    print_line(json!({
        "event": "summary",
        "viewers": viewers.len(),
        "ok": ok,
        "frames": viewers.iter().map(|v| v.stats.frames.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "decoded": viewers.iter().map(|v| v.stats.decoded.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "first_frame_ms": {
            "median": first_ms.get(first_ms.len() / 2),
            "max": first_ms.last(),
        },
    }));
    Ok(ok)
}

fn progress(stats: &ViewerStats, decode: bool) -> u64 {
    if decode {
        stats.decoded.load(Ordering::Relaxed)
    } else {
        stats.frames.load(Ordering::Relaxed)
    }
}

fn print_line(value: serde_json::Value) {
    println!("{value}");
}

async fn run_viewer(
    id: String,
    options: ViewOptions,
    factory: Arc<PeerFactory>,
    stats: Arc<ViewerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let topics = Topics::new(options.prefix.clone());
    let (mqtt, mut mqtt_events) = mqtt::start(SessionOptions {
        client_id: id.clone(),
        broker: options.broker.clone(),
        keepalive: Duration::from_secs(10),
        // A vanished viewer leaves: its will clears its presence.
        will: Some((topics.presence(&options.room, &id), Vec::new())),
    });
    let (peer_tx, mut peer_events) = mpsc::unbounded_channel();
    let mut participant = Participant::new(
        Me {
            id: id.clone(),
            role: Role::Viewer,
            name: id.clone(),
        },
        1,
        topics.clone(),
        mqtt.clone(),
        factory.clone(),
        None,
        peer_tx,
    );
    participant.join(&options.room);
    let mut joined_at = Instant::now();
    let mut offers = Offers::default();
    let mut receivers = Vec::new();
    // Watching through an SFU, where a camera that turned us away points.
    let mut sfu: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        // Woken for the room's timers exactly when one is due, not polled.
        let deadline = participant.next_deadline();
        tokio::select! {
            _ = stop.changed() => break,
            event = mqtt_events.recv() => match event {
                Some(MqttEvent::Connected) => participant.broker_connected(Instant::now()),
                Some(MqttEvent::Disconnected(_)) => participant.broker_disconnected(),
                Some(MqttEvent::Subscribed(token)) => {
                    if participant.subscribed(token, Instant::now()) && !stats.joined.swap(true, Ordering::Relaxed) {
                        joined_at = Instant::now();
                    }
                }
                Some(MqttEvent::Message { topic, payload }) => {
                    if let Some(topic) = topics.parse(&topic) {
                        offers.observe(&topic, &payload, &id, participant.mesh.session(&options.room));
                        stats.offers.store(offers.count(), Ordering::Relaxed);
                        participant.on_message(&topic, &payload, Instant::now());
                    }
                    if sfu.is_none() && let Some((camera, pointer)) = participant.mesh.sfu_pointer() {
                        sfu = Some(follow(&id, camera, pointer, &factory, &stats, joined_at, options.decode));
                    }
                }
                None => break,
            },
            Some(event) = peer_events.recv() => {
                if let Some(PeerEvent::Track(_, track)) = participant.on_peer_event(event, Instant::now()) {
                    receivers.push(tokio::spawn(take_track(track, stats.clone(), joined_at, options.decode)));
                }
            }
            _ = sleep_until(deadline) => participant.tick(Instant::now()),
        }
    }
    participant.leave_all("leaving");
    mqtt.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while mqtt_events.recv().await.is_some() {}
    })
    .await;
    for r in receivers.into_iter().chain(sfu) {
        r.abort();
    }
}

/// Watches through the SFU `pointer` names, for as long as the viewer
/// runs, starting again when the SFU's connection ends. A kind this
/// viewer does not follow is said once, and the task ends at once.
fn follow(
    id: &str,
    camera: &str,
    pointer: &Watch,
    factory: &Arc<PeerFactory>,
    stats: &Arc<ViewerStats>,
    joined_at: Instant,
    decode: bool,
) -> tokio::task::JoinHandle<()> {
    let Some(room) = pointer.room.filter(|_| pointer.kind == "janus-videoroom") else {
        tracing::warn!(kind = %pointer.kind, "this viewer follows janus-videoroom pointers only");
        return tokio::spawn(async {});
    };
    print_line(json!({
        "event": "sfu",
        "viewer": id,
        "camera": camera,
        "kind": pointer.kind,
        "url": pointer.url,
        "room": room,
    }));
    stats.via_sfu.store(true, Ordering::Relaxed);
    let (url, factory, stats) = (pointer.url.clone(), factory.clone(), stats.clone());
    tokio::spawn(async move {
        loop {
            let mut tracks = Vec::new();
            let result = janus::watch(&url, room, factory.clone(), |track| {
                tracks.push(tokio::spawn(take_track(
                    track,
                    stats.clone(),
                    joined_at,
                    decode,
                )));
            })
            .await;
            for t in tracks {
                t.abort();
            }
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "watching through Janus");
            }
            tokio::time::sleep(SFU_RETRY).await;
        }
    })
}

/// The wait before watching through the SFU again after its connection
/// ended.
const SFU_RETRY: Duration = Duration::from_secs(1);

/// Receives a remote track: the video's frames (decoded with `decode`),
/// or the sound's packets.
async fn take_track(
    track: Arc<dyn TrackRemote>,
    stats: Arc<ViewerStats>,
    joined_at: Instant,
    decode: bool,
) {
    if track.kind().await == RtpCodecKind::Audio {
        let decoder = decode
            .then(|| started(SoundDecoder::start(stats.clone())))
            .flatten();
        receive_audio(track, stats, decoder).await;
    } else {
        let decoder = decode
            .then(|| started(Decoder::start(stats.clone())))
            .flatten();
        receive(track, stats, joined_at, decoder).await;
    }
}

/// A decoder that does not start is said, and its track still counted.
fn started<T>(decoder: anyhow::Result<T>) -> Option<T> {
    decoder
        .inspect_err(|e| tracing::error!(error = %format!("{e:#}"), "decoder did not start"))
        .ok()
}

/// Counts the packets of the camera's sound and, with `decoder`, decodes
/// them; the video's frames and losses are the video track's alone.
async fn receive_audio(
    track: Arc<dyn TrackRemote>,
    stats: Arc<ViewerStats>,
    decoder: Option<SoundDecoder>,
) {
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(packet) = event {
            stats.audio_packets.fetch_add(1, Ordering::Relaxed);
            if let Some(decoder) = &decoder {
                decoder.push(packet.payload);
            }
        }
    }
}

/// Reassembles access units from RTP and counts them, their freezes, and
/// the packets lost or dropped on the way.
async fn receive(
    track: Arc<dyn TrackRemote>,
    stats: Arc<ViewerStats>,
    joined_at: Instant,
    decoder: Option<Decoder>,
) {
    let mut assembler = Assembler::default();
    let mut freezes = Freezes::default();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        stats
            .bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        let frame = assembler.push(&packet);
        stats
            .lost_packets
            .store(assembler.lost(), Ordering::Relaxed);
        stats
            .stale_packets
            .store(assembler.stale(), Ordering::Relaxed);
        let Some(frame) = frame else {
            continue;
        };
        let now = Instant::now();
        stats.frame_came(now);
        if freezes.frame(now) {
            stats.freezes.store(freezes.count(), Ordering::Relaxed);
            stats.frozen_us.store(
                u64::try_from(freezes.total().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        if is_keyframe(&frame) {
            stats.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        if stats.frames.fetch_add(1, Ordering::Relaxed) == 0 {
            let us = joined_at.elapsed().as_micros().max(1) as u64;
            stats.first_frame_us.store(us, Ordering::Relaxed);
        }
        if let Some(decoder) = &decoder {
            decoder.push(frame);
        }
    }
}
