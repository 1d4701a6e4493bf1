//! Capture and encode once per layer; fan the encoded frames out to every
//! viewer.
//!
//! One GStreamer pipeline ends in one appsink per layer. Its callback, on
//! GStreamer's streaming thread, packetizes each access unit once
//! ([`frame`]) and publishes it on that layer's [`feed`]. RTP timestamps
//! come from the buffers' presentation time on the pipeline clock, so the
//! same captured picture has the same timestamp in every layer and a
//! viewer can be switched between them.
//!
//! Owns: the pipeline, the encoded frames and their fan-out, key-frame
//! requests to the encoders. Must not touch: peer connections, the broker,
//! the room rules (viewers are subscribers of the feeds, no more).

pub mod audio;
pub mod clock;
pub mod description;
pub mod echo;
pub mod elements;
pub mod feed;
pub mod frame;
pub mod keyframe;
pub mod running;
pub mod snapshot;
pub mod speaker;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use crate::config::VideoConfig;
pub use audio::{AudioCapture, AudioFeed};
pub use description::VideoParams;
pub use elements::MissingElements;
pub use feed::{FANOUT_DEPTH, MediaCounters, VideoFeed, VideoLayers, Watching};
pub use frame::EncodedFrame;
pub use keyframe::KeyframeRequests;
pub use running::Running;

/// What the pipeline reports to the supervisor.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    Playing,
    Error(String),
    EndOfStream,
}

/// Whether GStreamer has an element factory of that name.
pub fn has_element(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// A pipeline made from `description`.
pub fn launch(description: &str) -> anyhow::Result<gst::Pipeline> {
    gst::parse::launch(description)
        .with_context(|| format!("pipeline does not parse: {description}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("the description did not make a pipeline: {description}"))
}

/// The element of `pipeline` named `name`, as a `T` (an appsrc, an appsink).
pub fn named<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> anyhow::Result<T> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<T>().ok())
        .ok_or_else(|| {
            anyhow!(
                "the pipeline has no {} named {name}",
                std::any::type_name::<T>()
            )
        })
}

/// A running capture pipeline.
pub struct Capture {
    running: Running,
    /// The encoder chosen, `None` when the source delivers H.264 itself.
    pub encoder: Option<String>,
    pub description: String,
    /// Layers this pipeline encodes (fewer than configured when the board
    /// could not take them all).
    pub layers: usize,
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
    /// Builds and starts the pipeline; frames go to `layers`, bus news to
    /// `events`. An element missing from the installation is a
    /// [`MissingElements`]. A pipeline of several layers that refuses to
    /// play (a hardware encoder with room for one session) is tried again
    /// with the top layer only, and said so.
    pub fn start(
        video: &VideoConfig,
        params: &VideoParams,
        layers: &VideoLayers,
        targets: &[KeyframeTarget],
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<Self> {
        gst::init().context("GStreamer failed to initialise")?;
        // A missing element is named with its package here, rather than as
        // a parse error or a pipeline that never plays.
        let encoder = elements::check(video, params, has_element)?;
        let encoded = !description::needs_encoder(video);
        let wanted =
            description::layer_count(encoded, params, encoder.as_deref()).min(layers.len());
        match Self::start_with(
            video,
            params,
            wanted,
            encoder.clone(),
            layers,
            targets,
            events.clone(),
        ) {
            Err(e) if wanted > 1 => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    layers = wanted,
                    "the pipeline did not play with every layer; trying the top layer only"
                );
                Self::start_with(
                    video,
                    &params.top_only(),
                    1,
                    encoder,
                    layers,
                    targets,
                    events,
                )
            }
            other => other,
        }
    }

    fn start_with(
        video: &VideoConfig,
        params: &VideoParams,
        count: usize,
        encoder: Option<String>,
        layers: &VideoLayers,
        targets: &[KeyframeTarget],
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<Self> {
        let params = if count > 1 {
            params.clone()
        } else {
            params.top_only()
        };
        let desc = description::pipeline_description(video, &params, encoder.as_deref());
        tracing::info!(pipeline = %desc, "starting capture");
        let pipeline = launch(&desc)?;
        let mut sinks = Vec::new();
        for index in 0..count {
            let sink: gst_app::AppSink = named(&pipeline, &format!("sink{index}"))?;
            let feed = layers.get(index).expect("count is at most the layers");
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(on_sample(feed.clone()))
                    .build(),
            );
            feed.set_valve(pipeline.by_name(&format!("gate{index}")));
            sinks.push(sink);
        }
        let running = match Running::play(pipeline, &desc, events) {
            Ok(running) => running,
            Err(e) => {
                for feed in layers.iter() {
                    feed.set_valve(None);
                }
                return Err(e);
            }
        };
        let configured = params.layers();
        for (index, feed) in layers.iter().enumerate() {
            if let Some(layer) = configured.get(index) {
                feed.state.set(layer, index < count);
            } else {
                feed.state.available.store(false, Ordering::Relaxed);
            }
            if let Some(target) = targets.get(index) {
                target.set(sinks.get(index).cloned());
            }
        }
        Ok(Self {
            running,
            encoder,
            description: desc,
            layers: count,
        })
    }

    /// Changes the layers' bitrates (top first) while they run.
    pub fn set_bitrates(&self, kbps: &[u32]) -> anyhow::Result<()> {
        for (index, kbps) in kbps.iter().enumerate().take(self.layers) {
            self.set_bitrate(index, *kbps)?;
        }
        Ok(())
    }

    fn set_bitrate(&self, index: usize, kbps: u32) -> anyhow::Result<()> {
        let (Some(name), Some(encoder)) = (
            &self.encoder,
            self.running.pipeline.by_name(&format!("encoder{index}")),
        ) else {
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
    pub fn stop(self, targets: &[KeyframeTarget]) {
        for target in targets {
            target.set(None);
        }
        drop(self.running);
    }
}

/// The appsink callback: one access unit in, one packetized frame out.
fn on_sample(
    feed: VideoFeed,
) -> impl FnMut(&gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> + Send + 'static {
    let mut packetizer = frame::FramePacketizer::default();
    move |sink| {
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
        let captured = clock::capture_time(sink, &sample);
        let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
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
