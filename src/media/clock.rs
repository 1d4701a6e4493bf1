//! The capture clock: one epoch per process, from which every track's RTP
//! time is counted.
//!
//! A buffer's capture time is "now, less how long ago its presentation
//! time was on its pipeline's clock": the same picture or sound sample gets
//! the same time whatever its encoder took, and video and audio, captured
//! by two pipelines, share one time line. The sender reports map this
//! clock to NTP time ([`crate::peer`]), which is what a viewer aligns the
//! two tracks by: lip sync is a property of these two functions.

use std::sync::OnceLock;
use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process's capture epoch: fixed at its first use, which is when the
/// first feed is made ([`super::VideoLayers::new`], [`super::AudioFeed`]),
/// before any pipeline runs. A capture time before it would be clamped to
/// 0, and the first frames of a pipeline would share one RTP timestamp.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from the epoch to `at` (0 before it).
pub fn since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// Nanoseconds on an RTP clock of `rate` Hz (wrapping, as RTP time does).
pub fn rtp_ticks(ns: u64, rate: u32) -> u32 {
    ((u128::from(ns) * u128::from(rate) / 1_000_000_000) & 0xffff_ffff) as u32
}

/// When the sample was captured, in nanoseconds since the epoch: now, less
/// how long ago its presentation time was on the pipeline clock. Without
/// a time (a source that sets none), now.
pub fn capture_time(sink: &gst_app::AppSink, sample: &gst::Sample) -> u64 {
    let now = since_epoch(Instant::now());
    let presented = sample
        .buffer()
        .and_then(|b| b.pts())
        .zip(
            sample
                .segment()
                .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned()),
        )
        .and_then(|(pts, segment)| segment.to_running_time(pts));
    match (presented, sink.current_running_time()) {
        (Some(presented), Some(running)) => {
            now.saturating_sub(running.saturating_sub(presented).nseconds())
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_time_counts_at_the_track_rate_and_wraps() {
        assert_eq!(rtp_ticks(1_000_000_000, 90_000), 90_000);
        assert_eq!(rtp_ticks(20_000_000, 48_000), 960);
        let wrap_ns = (1u64 << 32) * 1_000_000_000 / 90_000;
        assert!(rtp_ticks(wrap_ns + 1_000_000, 90_000) < 100);
    }
}
