//! RTP time for sound: anchored once to the capture clock, then counted in
//! samples.
//!
//! Each packet's capture time read off the clock carries microseconds of
//! scheduling noise; at 48 kHz that is a tick of jitter a receiver would
//! take for a gap. So the first packet's capture time is the anchor and
//! every later one is the anchor plus its distance in presentation time,
//! which the pipeline counts in whole samples. A distance that disagrees
//! with the clock by more than a packet (the source restarted, skipped or
//! drifted that far) anchors again.

/// Disagreement with the clock past which the stamps are anchored again.
pub const REANCHOR_NS: u64 = 20_000_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct AudioStamps {
    /// (presentation time, capture time) of the anchor packet, in ns.
    anchor: Option<(u64, u64)>,
}

impl AudioStamps {
    /// The capture time to stamp a packet presented at `pts` and read off
    /// the clock as `measured` (both in ns).
    pub fn stamp(&mut self, pts: Option<u64>, measured: u64) -> u64 {
        let Some(pts) = pts else {
            self.anchor = None;
            return measured;
        };
        if let Some((anchor_pts, anchor_capture)) = self.anchor
            && pts >= anchor_pts
        {
            let counted = anchor_capture + (pts - anchor_pts);
            if counted.abs_diff(measured) <= REANCHOR_NS {
                return counted;
            }
        }
        self.anchor = Some((pts, measured));
        measured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn packets_are_counted_from_the_anchor_not_read_off_the_noisy_clock() {
        let mut stamps = AudioStamps::default();
        assert_eq!(stamps.stamp(Some(0), 1_000 * MS), 1_000 * MS);
        // 20 ms later by the pipeline, read 37 µs late off the clock.
        assert_eq!(stamps.stamp(Some(20 * MS), 1_020 * MS + 37_000), 1_020 * MS);
        assert_eq!(stamps.stamp(Some(40 * MS), 1_040 * MS - 5_000), 1_040 * MS);
    }

    #[test]
    fn a_jump_or_a_restart_anchors_again() {
        let mut stamps = AudioStamps::default();
        stamps.stamp(Some(0), 1_000 * MS);
        // The source skipped half a second the clock did not.
        assert_eq!(stamps.stamp(Some(500 * MS), 1_020 * MS), 1_020 * MS);
        assert_eq!(stamps.stamp(Some(520 * MS), 1_040 * MS), 1_040 * MS);
        // A rebuilt pipeline starts its presentation time over.
        assert_eq!(stamps.stamp(Some(0), 5_000 * MS), 5_000 * MS);
        assert_eq!(stamps.stamp(None, 5_010 * MS), 5_010 * MS);
    }
}
