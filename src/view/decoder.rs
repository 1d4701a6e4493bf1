//! `--decode`: every access unit through `appsrc ! h264parse ! avdec_h264 !
//! appsink`, proving the frames decode, and the picture size they decode to.
//!
//! The size is read from each decoded sample's caps, so it follows a layer
//! switch: the camera switches at an IDR with new parameter sets, h264parse
//! announces the new size and avdec_h264 reconfigures itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::ViewerStats;
use super::fed::FedPipeline;
use bytes::Bytes;

/// One track's decoding pipeline; stopped when dropped.
pub struct Decoder(FedPipeline);

impl Decoder {
    /// Starts a pipeline that counts decoded pictures and their size into
    /// `stats`.
    pub fn start(stats: Arc<ViewerStats>) -> anyhow::Result<Self> {
        let pipeline = FedPipeline::start(
            "appsrc name=src is-live=true do-timestamp=true format=time \
             caps=video/x-h264,stream-format=byte-stream,alignment=au ! \
             h264parse ! avdec_h264 ! appsink name=out sync=false max-buffers=2 drop=true",
            "the H.264 decoder",
            move |sample| {
                if let Some(s) = sample.caps().and_then(|c| c.structure(0)) {
                    let w = s.get::<i32>("width").unwrap_or(0);
                    let h = s.get::<i32>("height").unwrap_or(0);
                    stats.width.store(w as u32, Ordering::Relaxed);
                    stats.height.store(h as u32, Ordering::Relaxed);
                }
                stats.decoded.fetch_add(1, Ordering::Relaxed);
            },
        )?;
        Ok(Self(pipeline))
    }

    /// Queues one access unit.
    pub fn push(&self, frame: Bytes) {
        self.0.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    use super::*;
    use crate::media;

    /// `count` access units of the test picture at `width`×`height`, from
    /// the encoder and settings the camera uses, starting with an IDR.
    fn encode(width: u32, height: u32, count: u32) -> Vec<Bytes> {
        let pipeline = media::launch(&format!(
            "videotestsrc num-buffers={count} pattern=ball ! \
             video/x-raw,width={width},height={height},framerate=30/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 \
             byte-stream=true ! video/x-h264,profile=constrained-baseline ! \
             h264parse config-interval=-1 ! \
             video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false"
        ))
        .unwrap();
        let sink: gst_app::AppSink = media::named(&pipeline, "out").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut units = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let map = sample.buffer().unwrap().map_readable().unwrap();
            units.push(Bytes::copy_from_slice(&map));
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(units.len(), count as usize, "{width}x{height} encoded");
        units
    }

    /// Waits until `stats` show `decoded` pictures of `height` lines.
    fn wait_decoded(stats: &ViewerStats, decoded: u64, height: u32) {
        let end = Instant::now() + Duration::from_secs(20);
        while stats.decoded.load(Ordering::Relaxed) < decoded
            || stats.height.load(Ordering::Relaxed) != height
        {
            assert!(
                Instant::now() < end,
                "decoded {} pictures, {}x{}; wanted {decoded} of height {height}",
                stats.decoded.load(Ordering::Relaxed),
                stats.width.load(Ordering::Relaxed),
                stats.height.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_picture_size_follows_a_layer_switch_at_an_idr() {
        gst::init().unwrap();
        assert!(
            crate::media::has_element("avdec_h264") && crate::media::has_element("x264enc"),
            "needs avdec_h264 and x264enc (gstreamer1.0-libav, gstreamer1.0-plugins-ugly)"
        );
        // Filler data as a probing camera adds it, inside every frame.
        let filler: &[u8] = &[0, 0, 0, 1, 0x0c, 0xff, 0xff, 0xff, 0x80];
        let with_filler = |unit: Bytes| Bytes::from([&unit[..], filler].concat());
        let stats = Arc::new(ViewerStats::default());
        let decoder = Decoder::start(stats.clone()).unwrap();
        // A frame-threaded decoder holds a few pictures back: each size is
        // seen once most of its frames came out.
        let mut pushed = 0;
        for (width, height) in [(640, 360), (1280, 720), (640, 360)] {
            for unit in encode(width, height, 10) {
                decoder.push(with_filler(unit));
                pushed += 1;
            }
            wait_decoded(&stats, pushed - 3, height);
        }
        assert_eq!(stats.width.load(Ordering::Relaxed), 640);
    }
}
