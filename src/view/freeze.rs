//! Freezes, counted the way WebRTC statistics count them (webrtc-stats,
//! `freezeCount` and `totalFreezesDuration`), so a viewer's report means
//! what a browser's `getStats()` would say about the same stream.
//!
//! A freeze is a gap between two consecutive frames of at least
//! max(3 × the average frame duration, the average + 150 ms), the average
//! taken over the last [`WINDOW`] frame durations before that gap; its whole
//! gap is frozen time. Counting starts at the first frame: the wait for it
//! is time to first frame, not a freeze. A stall is counted when the frame
//! that ends it arrives, as a browser does.
//!
//! Pure: the caller says when each frame came.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many recent frame durations the average is taken over.
pub const WINDOW: usize = 30;
/// The least a freeze exceeds the average frame duration by.
pub const MIN_INCREASE: Duration = Duration::from_millis(150);

/// Whether a gap of `gap` after frames `average` apart is a freeze.
pub fn is_freeze(gap: Duration, average: Duration) -> bool {
    gap >= (average * 3).max(average + MIN_INCREASE)
}

/// One stream's freezes so far.
#[derive(Debug, Default)]
pub struct Freezes {
    last: Option<Instant>,
    recent: VecDeque<Duration>,
    count: u64,
    total: Duration,
}

impl Freezes {
    /// Counts a frame that arrived at `at`; whether the gap before it was a
    /// freeze.
    pub fn frame(&mut self, at: Instant) -> bool {
        let Some(last) = self.last.replace(at) else {
            return false;
        };
        let gap = at.saturating_duration_since(last);
        let frozen = self
            .average()
            .is_some_and(|average| is_freeze(gap, average));
        if frozen {
            self.count += 1;
            self.total += gap;
        }
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(gap);
        frozen
    }

    /// How many freezes there were.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their durations added up.
    pub fn total(&self) -> Duration {
        self.total
    }

    fn average(&self) -> Option<Duration> {
        let n = u32::try_from(self.recent.len()).ok().filter(|n| *n > 0)?;
        Some(self.recent.iter().sum::<Duration>() / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Frames at these offsets (milliseconds) from a start.
    fn frames(offsets: impl IntoIterator<Item = u64>) -> Freezes {
        let start = Instant::now();
        let mut freezes = Freezes::default();
        for ms in offsets {
            freezes.frame(start + MS * ms as u32);
        }
        freezes
    }

    #[test]
    fn the_threshold_is_three_frames_or_150_ms_more_whichever_is_longer() {
        // At 30 fps the 150 ms increase decides: 33 + 150 ms.
        assert!(!is_freeze(MS * 182, MS * 33));
        assert!(is_freeze(MS * 183, MS * 33));
        // At 2 fps three frame durations decide.
        assert!(!is_freeze(MS * 1499, MS * 500));
        assert!(is_freeze(MS * 1500, MS * 500));
    }

    #[test]
    fn a_steady_stream_has_no_freeze() {
        let freezes = frames((0..300).map(|i| i * 33));
        assert_eq!(freezes.count(), 0);
        assert_eq!(freezes.total(), Duration::ZERO);
    }

    #[test]
    fn a_gap_counts_whole_once_the_next_frame_arrives() {
        let start = Instant::now();
        let mut freezes = Freezes::default();
        for i in 0..30 {
            assert!(!freezes.frame(start + MS * (i * 40)));
        }
        // 29 × 40 ms, then 400 ms without a frame.
        assert!(freezes.frame(start + MS * (29 * 40 + 400)));
        assert!(!freezes.frame(start + MS * (29 * 40 + 440)));
        assert_eq!(freezes.count(), 1);
        assert_eq!(freezes.total(), MS * 400);
    }

    #[test]
    fn jitter_below_the_threshold_is_not_a_freeze() {
        // Frames 20 and 60 ms apart in turn, then one 150 ms late.
        let mut offsets = Vec::new();
        let mut t = 0;
        for i in 0..60 {
            t += if i % 2 == 0 { 20 } else { 60 };
            offsets.push(t);
        }
        offsets.push(t + 150);
        assert_eq!(frames(offsets).count(), 0);
    }

    #[test]
    fn the_wait_for_the_first_frame_is_not_a_freeze() {
        let freezes = frames([5_000, 5_033, 5_066]);
        assert_eq!(freezes.count(), 0);
    }

    #[test]
    fn the_average_follows_the_recent_frame_rate() {
        // 30 fps, then 5 fps: the first 200 ms gaps after 33 ms frames are
        // freezes, until the average has caught up; after that 200 ms is
        // ordinary, and even 500 ms is not three of it.
        let start = Instant::now();
        let mut freezes = Freezes::default();
        let mut t = Duration::ZERO;
        for _ in 0..30 {
            t += MS * 33;
            freezes.frame(start + t);
        }
        for _ in 0..10 {
            t += MS * 200;
            freezes.frame(start + t);
        }
        let early = freezes.count();
        assert!(early >= 1, "the first slow frames froze");
        for _ in 0..30 {
            t += MS * 200;
            freezes.frame(start + t);
        }
        assert!(!freezes.frame(start + t + MS * 500));
        assert_eq!(freezes.count(), early);
    }
}
