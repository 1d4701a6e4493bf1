//! One JPEG of the current picture, for the `snapshot` command.
//!
//! The capture pipeline stays as it is (no second branch that would cost
//! CPU all the time): a snapshot takes the next key frame from the shared
//! feed and decodes it in a short-lived pipeline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::broadcast::error::RecvError;

use super::{EncodedFrame, VideoFeed, elements, has_element};

/// A JPEG and its size.
#[derive(Debug, Clone)]
pub struct Jpeg {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Asks for a key frame and waits (up to `timeout`) for it.
pub async fn next_keyframe(
    feed: &VideoFeed,
    timeout: Duration,
) -> anyhow::Result<Arc<EncodedFrame>> {
    let (mut frames, _watching) = feed.watch();
    feed.keyframes.request();
    tokio::time::timeout(timeout, async {
        loop {
            match frames.recv().await {
                Ok(frame) if frame.keyframe => return Ok(frame),
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => bail!("the video feed closed"),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no key frame within {timeout:?}: is the pipeline running?"))?
}

/// The H.264 decoders a snapshot can use, in order of preference.
pub const DECODERS: [&str; 2] = ["avdec_h264", "openh264dec"];

/// The snapshot pipeline around `decoder`: one access unit in, one JPEG out.
pub fn snapshot_description(decoder: &str) -> String {
    format!(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au ! \
         h264parse ! {decoder} ! videoconvert ! jpegenc quality=85 ! appsink name=sink sync=false"
    )
}

/// Decodes one key frame (Annex B, with SPS/PPS) to a JPEG. Blocking.
pub fn encode_jpeg(access_unit: &[u8]) -> anyhow::Result<Jpeg> {
    let decoder = DECODERS
        .into_iter()
        .find(|d| has_element(d))
        .ok_or_else(|| anyhow!("no H.264 decoder: {}", elements::one_of(&DECODERS)))?;
    let pipeline = super::launch(&snapshot_description(decoder))?;
    let src: gst_app::AppSrc = super::named(&pipeline, "src")?;
    let sink: gst_app::AppSink = super::named(&pipeline, "sink")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| anyhow!("the snapshot pipeline refused to play"))?;
    let result = (|| {
        let mut buffer = gst::Buffer::from_slice(access_unit.to_vec());
        buffer
            .get_mut()
            .context("a fresh buffer is writable")?
            .set_pts(gst::ClockTime::ZERO);
        src.push_buffer(buffer)
            .map_err(|e| anyhow!("push: {e:?}"))?;
        src.end_of_stream().map_err(|e| anyhow!("eos: {e:?}"))?;
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .context("the key frame did not decode")?;
        let caps = sample.caps().context("no caps")?;
        let s = caps.structure(0).context("empty caps")?;
        let width = s.get::<i32>("width").unwrap_or(0) as u32;
        let height = s.get::<i32>("height").unwrap_or(0) as u32;
        let map = sample
            .buffer()
            .context("no buffer")?
            .map_readable()
            .map_err(|_| anyhow!("unreadable buffer"))?;
        Ok(Jpeg {
            data: map.as_slice().to_vec(),
            width,
            height,
        })
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}
