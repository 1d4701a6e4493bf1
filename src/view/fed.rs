//! A decoding pipeline fed through `appsrc name=src` and read by a
//! callback on `appsink name=out`: what the picture's and the sound's
//! decoders share. Stopped when dropped.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::media;

pub struct FedPipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
}

impl FedPipeline {
    /// Starts `description`, handing every decoded sample to `on_sample`;
    /// `what` names it when it does not play.
    pub fn start(
        description: &str,
        what: &str,
        mut on_sample: impl FnMut(&gst::Sample) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let pipeline = media::launch(description)?;
        let src: gst_app::AppSrc = media::named(&pipeline, "src")?;
        let sink: gst_app::AppSink = media::named(&pipeline, "out")?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    on_sample(&sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| anyhow::anyhow!("{what} refused to play"))?;
        Ok(Self { pipeline, src })
    }

    /// Queues one unit: an access unit, an Opus packet.
    pub fn push(&self, data: Bytes) {
        let _ = self.src.push_buffer(gst::Buffer::from_slice(data));
    }
}

impl Drop for FedPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
