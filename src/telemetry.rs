//! Rates for telemetry: frames per second, bitrate and CPU between two
//! samples of monotonically growing counters.
//!
//! Owns: turning two samples into rates. Must not touch: where the samples
//! come from or where the rates go.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::media::MediaCounters;
use crate::procstat::{self, Usage};

/// One reading of the counters that rates are made from.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub frames: u64,
    pub bytes: u64,
    /// Bytes the publication to an SFU sent.
    pub sfu_bytes: u64,
    pub usage: Usage,
}

impl Sample {
    pub fn take(at: Instant, media: &MediaCounters, sfu_bytes: u64) -> Self {
        Self {
            at,
            frames: media.frames.load(Ordering::Relaxed),
            bytes: media.bytes.load(Ordering::Relaxed),
            sfu_bytes,
            usage: procstat::read("self").unwrap_or_default(),
        }
    }
}

/// Rates between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub fps: f64,
    pub bitrate_kbps: f64,
    pub sfu_kbps: f64,
    pub cpu_percent: f64,
}

pub fn rates(before: &Sample, after: &Sample) -> Rates {
    let wall = after.at.saturating_duration_since(before.at);
    if wall < Duration::from_millis(1) {
        return Rates {
            fps: 0.0,
            bitrate_kbps: 0.0,
            sfu_kbps: 0.0,
            cpu_percent: 0.0,
        };
    }
    let secs = wall.as_secs_f64();
    let kbps = |before: u64, after: u64| after.saturating_sub(before) as f64 * 8.0 / 1000.0 / secs;
    Rates {
        fps: after.frames.saturating_sub(before.frames) as f64 / secs,
        bitrate_kbps: kbps(before.bytes, after.bytes),
        // A new attempt starts its counters at 0: no rate for that window.
        sfu_kbps: kbps(before.sfu_bytes, after.sfu_bytes),
        cpu_percent: procstat::cpu_percent(&before.usage, &after.usage, wall),
    }
}

/// Rounds to one decimal for display.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counter_differences() {
        let t0 = Instant::now();
        let a = Sample {
            at: t0,
            frames: 100,
            bytes: 1_000_000,
            sfu_bytes: 0,
            usage: Usage::default(),
        };
        let b = Sample {
            at: t0 + Duration::from_secs(2),
            frames: 160,
            bytes: 1_500_000,
            sfu_bytes: 250_000,
            usage: Usage {
                cpu: Duration::from_millis(500),
                ..Usage::default()
            },
        };
        let r = rates(&a, &b);
        assert_eq!(r.fps, 30.0);
        assert_eq!(r.bitrate_kbps, 2000.0);
        assert_eq!(r.sfu_kbps, 1000.0);
        assert_eq!(r.cpu_percent, 25.0);
        assert_eq!(rates(&a, &a).fps, 0.0);
    }
}
