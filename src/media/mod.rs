//! Capture and encode once; fan the encoded frames out to every viewer.
//!
//! One GStreamer pipeline ends in one appsink. Its callback, on GStreamer's
//! streaming thread, packetizes each access unit once ([`frame`]) and
//! broadcasts it as an `Arc<EncodedFrame>` on a [`tokio::sync::broadcast`]
//! channel. Each viewer's sender reads that channel at its own pace: a
//! viewer that falls behind loses frames for itself alone (and then waits
//! for a key frame), while the encoder and the other viewers never wait.
//!
//! Owns: the pipeline, the encoded frames and their fan-out, key-frame
//! requests to the encoder. Must not touch: peer connections, the broker, the
//! room rules (viewers are subscribers of the feed, no more).

pub mod description;
pub mod elements;
pub mod frame;
pub mod keyframe;
pub mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::{broadcast, mpsc};

use crate::config::VideoConfig;
pub use description::VideoParams;
pub use elements::MissingElements;
pub use frame::EncodedFrame;
pub use keyframe::KeyframeRequests;

/// Frames kept for slow viewers before they lag (about 1 s at 30 fps).
pub const FANOUT_DEPTH: usize = 32;

/// What the pipeline reports to the supervisor.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    Playing,
    Error(String),
    EndOfStream,
}

/// Counters of the encoded stream, read by telemetry.
#[derive(Debug, Default)]
pub struct MediaCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes: AtomicU64,
}

/// The shared end of the fan-out: subscribe to get encoded frames.
#[derive(Clone)]
pub struct VideoFeed {
    frames: broadcast::Sender<Arc<EncodedFrame>>,
    pub keyframes: KeyframeRequests,
    pub counters: Arc<MediaCounters>,
    /// RTP time counts from here, so it keeps running across pipeline
    /// rebuilds (a new pipeline's timestamps start again at zero).
    epoch: Instant,
}

impl VideoFeed {
    pub fn new() -> Self {
        Self {
            frames: broadcast::channel(FANOUT_DEPTH).0,
            keyframes: KeyframeRequests::new(),
            counters: Arc::default(),
            epoch: Instant::now(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedFrame>> {
        self.frames.subscribe()
    }

    /// Publishes a frame to whoever listens; no listener is fine.
    pub fn publish(&self, frame: EncodedFrame) {
        let c = &self.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(frame.size as u64, Ordering::Relaxed);
        if frame.keyframe {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.frames.send(Arc::new(frame));
    }
}

impl Default for VideoFeed {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether GStreamer has an element factory of that name.
pub fn has_element(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// A running capture pipeline.
pub struct Capture {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus_thread: Option<std::thread::JoinHandle<()>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The encoder chosen, `None` when the source delivers H.264 itself.
    pub encoder: Option<String>,
    pub description: String,
}

/// The sink that key-frame requests go to; replaced on pipeline rebuilds.
#[derive(Clone, Default)]
pub struct KeyframeTarget(Arc<Mutex<Option<gst_app::AppSink>>>);

impl KeyframeTarget {
    /// Sends a force-key-unit event upstream from the appsink to the encoder.
    pub fn force(&self) {
        let sink = self
            .0
            .lock()
            .expect("key-frame target lock is never poisoned")
            .clone();
        if let Some(sink) = sink {
            let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            if !sink.send_event(event) {
                tracing::debug!("force-key-unit event was not handled");
            }
        }
    }

    fn set(&self, sink: Option<gst_app::AppSink>) {
        *self
            .0
            .lock()
            .expect("key-frame target lock is never poisoned") = sink;
    }
}

impl Capture {
    /// Builds and starts the pipeline; frames go to `feed`, bus news to `events`.
    /// An element missing from the installation is a [`MissingElements`].
    pub fn start(
        video: &VideoConfig,
        params: &VideoParams,
        feed: &VideoFeed,
        target: &KeyframeTarget,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<Self> {
        gst::init().context("GStreamer failed to initialise")?;
        // A missing element is named with its package here, rather than as
        // a parse error or a pipeline that never plays.
        let encoder = elements::check(video, params, has_element)?;
        let desc = description::pipeline_description(video, params, encoder.as_deref());
        tracing::info!(pipeline = %desc, "starting capture");
        let pipeline = gst::parse::launch(&desc)
            .with_context(|| format!("pipeline does not parse: {desc}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("the description did not make a pipeline"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("the pipeline has no appsink named sink"))?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(on_sample(feed.clone()))
                .build(),
        );
        let bus = pipeline
            .bus()
            .ok_or_else(|| anyhow!("pipeline has no bus"))?;
        // The bus keeps its messages until they are read: the watcher starts
        // after the state change, so a refusal's error is ours to report.
        if pipeline.set_state(gst::State::Playing).is_err() {
            let reason = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|msg| match msg.view() {
                    gst::MessageView::Error(err) => Some(error_text(err)),
                    _ => None,
                })
                .unwrap_or_else(|| "no error message".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(anyhow!(
                "the pipeline refused to play: {reason}; pipeline: {desc}"
            ));
        }
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bus_thread = std::thread::Builder::new()
            .name("gst-bus".into())
            .spawn({
                let stopping = stopping.clone();
                let pipeline = pipeline.downgrade();
                move || watch_bus(bus, pipeline, stopping, events)
            })
            .context("spawning the bus thread")?;
        target.set(Some(sink.clone()));
        Ok(Self {
            pipeline,
            sink,
            bus_thread: Some(bus_thread),
            stopping,
            encoder,
            description: desc,
        })
    }

    /// Changes the encoder's bitrate while it runs.
    pub fn set_bitrate(&self, kbps: u32) -> anyhow::Result<()> {
        let (Some(name), Some(encoder)) = (&self.encoder, self.pipeline.by_name("encoder")) else {
            bail!("the source's own H.264 is passed through: there is no encoder to change");
        };
        match name.as_str() {
            "x264enc" => encoder.set_property("bitrate", kbps),
            "openh264enc" => encoder.set_property("bitrate", kbps * 1000),
            "v4l2h264enc" => encoder.set_property_from_str(
                "extra-controls",
                &format!("controls,video_bitrate={}", kbps * 1000),
            ),
            other => bail!("cannot change the bitrate of {other}"),
        }
        Ok(())
    }

    /// Stops the pipeline and its bus thread.
    pub fn stop(mut self, target: &KeyframeTarget) {
        target.set(None);
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(thread) = self.bus_thread.take() {
            let _ = thread.join();
        }
        let _ = &self.sink;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The appsink callback: one access unit in, one packetized frame out.
fn on_sample(
    feed: VideoFeed,
) -> impl FnMut(&gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> + Send + 'static {
    let mut packetizer = frame::FramePacketizer::default();
    move |sink| {
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
        let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let captured = feed.epoch.elapsed().as_nanos() as u64;
        let mapped = buffer
            .into_mapped_buffer_readable()
            .map_err(|_| gst::FlowError::Error)?;
        // The mapped buffer becomes the Bytes' owner: no copy of the frame.
        let data = Bytes::from_owner(mapped);
        match packetizer.packetize(&data, captured, keyframe) {
            Ok(frame) => feed.publish(frame),
            Err(e) => {
                tracing::warn!(error = %e, "could not packetize an access unit");
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

/// GStreamer's error and its debug detail, e.g. "Cannot identify device
/// '/dev/video9'. (../sys/v4l2/v4l2_calls.c(…): … No such file or directory)".
fn error_text(err: &gst::message::Error) -> String {
    match err.debug() {
        Some(debug) => format!("{} ({debug})", err.error()),
        None => err.error().to_string(),
    }
}

fn watch_bus(
    bus: gst::Bus,
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    events: mpsc::UnboundedSender<MediaEvent>,
) {
    use gst::MessageView;
    while !stopping.load(Ordering::SeqCst) {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            continue;
        };
        let event = match msg.view() {
            MessageView::Error(err) => Some(MediaEvent::Error(error_text(err))),
            MessageView::Eos(_) => Some(MediaEvent::EndOfStream),
            MessageView::StateChanged(s)
                if s.current() == gst::State::Playing
                    && msg.src().map(|src| src.name()) == pipeline.upgrade().map(|p| p.name()) =>
            {
                Some(MediaEvent::Playing)
            }
            _ => None,
        };
        if let Some(event) = event
            && events.send(event).is_err()
        {
            return;
        }
    }
}
