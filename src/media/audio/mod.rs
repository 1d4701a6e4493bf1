//! The microphone: captured by a pipeline of its own, encoded once as Opus,
//! fanned out to every viewer like the video.
//!
//! A pipeline separate from the video's: a USB microphone that is
//! unplugged or an ALSA device that does not exist fails this one alone,
//! and its supervisor retries it while the picture keeps flowing. Both
//! stamp their buffers on the process's capture clock ([`super::clock`]),
//! so the two tracks stay in sync.
//!
//! Owns: the audio pipeline, its packets and their fan-out. Must not touch
//! peer connections.

pub mod description;
pub mod stamps;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::{broadcast, mpsc};

use super::echo;
use super::{
    EncodedFrame, FANOUT_DEPTH, MediaCounters, MediaEvent, Running, clock, elements, launch, named,
};
use crate::config::{AudioConfig, AudioSource};
use description::OPUS_CLOCK_RATE;
use stamps::AudioStamps;

/// The encoded sound's end of the fan-out: subscribe to get its packets.
#[derive(Clone)]
pub struct AudioFeed {
    packets: broadcast::Sender<Arc<EncodedFrame>>,
    pub counters: Arc<MediaCounters>,
}

impl Default for AudioFeed {
    fn default() -> Self {
        clock::epoch();
        Self {
            packets: broadcast::channel(FANOUT_DEPTH).0,
            counters: Arc::default(),
        }
    }
}

impl AudioFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedFrame>> {
        self.packets.subscribe()
    }

    /// Publishes a packet to whoever listens; no listener is fine.
    pub fn publish(&self, packet: EncodedFrame) {
        self.counters.frames.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(packet.size as u64, Ordering::Relaxed);
        let _ = self.packets.send(Arc::new(packet));
    }
}

/// A running microphone pipeline; stopped when dropped.
pub struct AudioCapture {
    running: Running,
}

impl AudioCapture {
    /// Builds and starts the pipeline for `source`, packets to `feed`,
    /// cancelling the speaker's echo when `cancel_echo`; `Ok(None)` for no
    /// sound. An element missing from the installation is a
    /// [`crate::media::MissingElements`] naming its package.
    pub fn start(
        audio: &AudioConfig,
        source: AudioSource,
        cancel_echo: bool,
        feed: &AudioFeed,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<Option<Self>> {
        gst::init().context("GStreamer failed to initialise")?;
        let Some(desc) = description::pipeline_description(audio, source, cancel_echo) else {
            return Ok(None);
        };

        // The user's own source is left to GStreamer's parser.
        if source != AudioSource::Pipeline {
            elements::require(&desc)?;
        }
        tracing::info!(pipeline = %desc, "starting the microphone");
        let pipeline = launch(&desc)?;
        if cancel_echo {
            // The canceller looks for its probe as it starts.
            echo::probe()?;
            echo::share_time(&pipeline);
        }
        let sink: gst_app::AppSink = named(&pipeline, "audio")?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(on_packet(feed.clone()))
                .build(),
        );
        let running = Running::play(pipeline, &desc, events)?;
        Ok(Some(Self { running }))
    }

    /// Mutes or unmutes the microphone while it runs: viewers get silence,
    /// their connections and the Opus stream go on.
    pub fn set_muted(&self, muted: bool) {
        if let Some(mic) = self.running.pipeline.by_name("mic") {
            mic.set_property("mute", muted);
        }
    }
}

/// The appsink callback: one Opus packet in, one shared payload out.
fn on_packet(
    feed: AudioFeed,
) -> impl FnMut(&gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> + Send + 'static {
    let mut stamps = AudioStamps::default();
    move |sink| {
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
        let measured = clock::capture_time(sink, &sample);
        let pts = sample.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
        let captured = stamps.stamp(pts, measured);
        let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
        let mapped = buffer
            .into_mapped_buffer_readable()
            .map_err(|_| gst::FlowError::Error)?;
        let packet = Bytes::from_owner(mapped);
        if packet.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        feed.publish(EncodedFrame {
            payloads: vec![packet.clone()],
            rtp_timestamp: clock::rtp_ticks(captured, OPUS_CLOCK_RATE),
            keyframe: true,
            size: packet.len(),
            access_unit: packet,
        });
        Ok(gst::FlowSuccess::Ok)
    }
}
