//! A pipeline set playing, and the thread that reads its bus: both the
//! video capture and the audio capture run as one of these, each with its
//! own supervisor, so a microphone that fails never stops the picture.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;

use super::MediaEvent;

/// A playing pipeline; stopped when dropped.
pub struct Running {
    pub pipeline: gst::Pipeline,
    bus_thread: Option<std::thread::JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
}

impl Running {
    /// Sets `pipeline` (made from `description`) playing and reports its
    /// bus news to `events`; a refusal is the `Err`, with GStreamer's
    /// reason.
    pub fn play(
        pipeline: gst::Pipeline,
        description: &str,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<Self> {
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
                "the pipeline refused to play: {reason}; pipeline: {description}"
            ));
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let bus_thread = std::thread::Builder::new()
            .name("gst-bus".into())
            .spawn({
                let stopping = stopping.clone();
                let pipeline = pipeline.downgrade();
                move || watch_bus(bus, pipeline, stopping, events)
            })
            .context("spawning the bus thread")?;
        Ok(Self {
            pipeline,
            bus_thread: Some(bus_thread),
            stopping,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(thread) = self.bus_thread.take() {
            let _ = thread.join();
        }
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
    stopping: Arc<AtomicBool>,
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
