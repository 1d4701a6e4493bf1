//! One viewer's counters, shared by its receive tasks and its decoders,
//! and the report line `meshcam view` prints of them: what the benchmarks
//! and tests read of a viewer from outside.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

/// One viewer's counters.
#[derive(Debug, Default)]
pub struct ViewerStats {
    pub frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub bytes: AtomicU64,
    pub decoded: AtomicU64,
    pub lost_packets: AtomicU64,
    /// Duplicates and packets older than one already received.
    pub stale_packets: AtomicU64,
    /// Freezes since the first frame ([`freeze`](super::freeze)), and their total length.
    pub freezes: AtomicU64,
    pub frozen_us: AtomicU64,
    /// Microseconds from join (presence published) to the first frame.
    pub first_frame_us: AtomicU64,
    pub width: AtomicU32,
    pub height: AtomicU32,
    pub joined: AtomicBool,
    /// RTP packets of the camera's sound.
    pub audio_packets: AtomicU64,
    /// With `--decode`: the pitch (Hz) and level (tenths of dBFS) of the
    /// last second of decoded sound.
    pub audio_hz: AtomicU32,
    pub audio_dbfs_x10: AtomicI32,
    /// Watching through an SFU, not the mesh.
    pub via_sfu: AtomicBool,
    /// Offers the cameras sent this viewer, first ones included
    /// ([`Offers`](super::offers::Offers)).
    pub offers: AtomicU64,
    /// When the latest frame came, whichever connection carried it, and
    /// the longest wait between two frames since the previous report.
    pub last_frame: Mutex<Option<Instant>>,
    pub longest_gap_us: AtomicU64,
}

impl ViewerStats {
    /// Counts the wait since the previous frame, across connections: a
    /// new connection's first frame ends the gap its predecessor left.
    pub(super) fn frame_came(&self, at: Instant) {
        let previous = self
            .last_frame
            .lock()
            .expect("last frame lock is never poisoned")
            .replace(at);
        if let Some(previous) = previous {
            let gap = at.saturating_duration_since(previous).as_micros();
            self.longest_gap_us
                .fetch_max(u64::try_from(gap).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
}

impl ViewerStats {
    /// The report line of viewer `id`, `wall` seconds after the previous
    /// one, which left its frame and byte counts in `previous`. The longest
    /// gap starts again from here.
    pub(super) fn report(&self, id: &str, previous: &mut (u64, u64), wall: f64) -> Value {
        let frames = self.frames.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let (f0, b0) = std::mem::replace(previous, (frames, bytes));
        json!({
            "event": "report",
            "viewer": id,
            "frames": frames,
            "keyframes": self.keyframes.load(Ordering::Relaxed),
            "decoded": self.decoded.load(Ordering::Relaxed),
            "fps": ((frames - f0) as f64 / wall * 10.0).round() / 10.0,
            "kbps": ((bytes - b0) as f64 * 8.0 / 1000.0 / wall).round(),
            "lost_packets": self.lost_packets.load(Ordering::Relaxed),
            "stale_packets": self.stale_packets.load(Ordering::Relaxed),
            "freezes": self.freezes.load(Ordering::Relaxed),
            "frozen_ms": self.frozen_us.load(Ordering::Relaxed) / 1000,
            "gap_ms": self.longest_gap_us.swap(0, Ordering::Relaxed) / 1000,
            "offers": self.offers.load(Ordering::Relaxed),
            "width": self.width.load(Ordering::Relaxed),
            "height": self.height.load(Ordering::Relaxed),
            "audio_packets": self.audio_packets.load(Ordering::Relaxed),
            "audio_hz": self.audio_hz.load(Ordering::Relaxed),
            "audio_dbfs": f64::from(self.audio_dbfs_x10.load(Ordering::Relaxed)) / 10.0,
            "via": if self.via_sfu.load(Ordering::Relaxed) { "sfu" } else { "mesh" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_longest_gap_spans_connections_and_starts_again_at_each_report() {
        let stats = ViewerStats::default();
        let t0 = Instant::now();
        stats.frame_came(t0);
        stats.frame_came(t0 + Duration::from_millis(33));
        // The next frame on a new connection, 2 s later.
        stats.frame_came(t0 + Duration::from_millis(2033));
        stats.frame_came(t0 + Duration::from_millis(2066));
        stats.offers.store(2, Ordering::Relaxed);
        let mut previous = (0, 0);
        let line = stats.report("v", &mut previous, 1.0);
        assert_eq!(line["gap_ms"], 2000);
        assert_eq!(line["offers"], 2);
        assert_eq!(stats.report("v", &mut previous, 1.0)["gap_ms"], 0);
    }
}
