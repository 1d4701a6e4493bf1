//! One receiver's figures, from what it reports: frames so far, offers,
//! the longest wait between two frames, time to its first frame.
//!
//! The three kinds of receiver report differently (cumulative counts every
//! half second, an event per offer, a line every thirtieth frame); each
//! kind's module turns its lines into [`Event`]s, and this keeps one
//! account for all of them, so the benchmark and the soak judge every
//! receiver by the same rules. Pure: the caller says when each event came.

use std::time::{Duration, Instant};

/// What a receiver said, in the terms all kinds share.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// It published its presence (the start of its time to first frame
    /// when it does not measure that itself).
    Joined,
    /// Its frame count so far, all connections together; the longest wait
    /// between two frames it measured since its previous report; the
    /// connection that carried the latest frames, when it numbers them.
    Frames {
        total: u64,
        gap: Option<Duration>,
        connection: Option<u64>,
    },
    /// It was sent one more offer.
    Offer,
    /// It was sent this many offers so far.
    Offers(u64),
    /// Its first frame, this long after it joined, by its own clock.
    FirstFrame { ms: f64 },
}

/// One receiver's account.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    frames: u64,
    offers: u64,
    /// Longest wait between two frames since [`Tally::take_gap`].
    longest_gap: Duration,
    /// When a report last showed new frames, and on which connection.
    last_frames_at: Option<Instant>,
    connection: Option<u64>,
    joined_at: Option<Instant>,
    first_frame_ms: Option<f64>,
}

impl Tally {
    pub fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::Joined => {
                self.joined_at.get_or_insert(now);
            }
            Event::Frames {
                total,
                gap,
                connection,
            } => self.frames(total, gap, connection, now),
            Event::Offer => self.offers += 1,
            Event::Offers(n) => self.offers = self.offers.max(n),
            Event::FirstFrame { ms } => {
                self.first_frame_ms.get_or_insert(ms);
            }
        }
    }

    fn frames(&mut self, total: u64, gap: Option<Duration>, connection: Option<u64>, now: Instant) {
        if let Some(gap) = gap {
            self.longest_gap = self.longest_gap.max(gap);
        }
        // A receiver that measures gaps per connection does not see the
        // one between the old connection's last frame and the new one's
        // first: it is at most the time since the old one's last report.
        let switched =
            connection.is_some() && self.connection.is_some() && connection != self.connection;
        if switched && let Some(at) = self.last_frames_at {
            self.longest_gap = self.longest_gap.max(now.saturating_duration_since(at));
        }
        if total > self.frames {
            if self.frames == 0
                && self.first_frame_ms.is_none()
                && let Some(joined) = self.joined_at
            {
                self.first_frame_ms =
                    Some(now.saturating_duration_since(joined).as_secs_f64() * 1000.0);
            }
            self.frames = total;
            self.last_frames_at = Some(now);
        }
        if connection.is_some() {
            self.connection = connection;
        }
    }

    /// Frames so far.
    pub fn total_frames(&self) -> u64 {
        self.frames
    }

    /// Frames so far, and when the report that said so came.
    pub fn count(&self) -> Count {
        Count {
            frames: self.frames,
            at: self.last_frames_at,
        }
    }

    /// Offers after the first: each one a connection cut or restarted.
    pub fn reoffers(&self) -> u64 {
        self.offers.saturating_sub(1)
    }

    pub fn first_frame_ms(&self) -> Option<f64> {
        self.first_frame_ms
    }

    /// The longest wait between two frames since the previous call.
    pub fn take_gap(&mut self) -> Duration {
        std::mem::take(&mut self.longest_gap)
    }
}

/// A frame count and when it was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub frames: u64,
    pub at: Option<Instant>,
}

/// How long a receiver at full rate goes at most without a report that
/// shows new frames: webrtcbin reports every 30th frame, Chromium tabs
/// every second, `meshcam view` every half second.
pub const REPORT_PERIOD: Duration = Duration::from_millis(1500);

/// Frames per second over a window from `start` (its wall-clock start)
/// to `now`, from the counts reported before and after it.
///
/// Receivers report every so many frames or every so often, so the
/// counts are exact at the instants they were reported, not at the
/// window's edges: the rate is taken between those instants. A receiver
/// whose latest report is older than [`REPORT_PERIOD`] has stalled, and
/// its rate is taken up to `now` instead, so a stall lowers it.
pub fn fps(before: Count, after: Count, start: Instant, now: Instant) -> f64 {
    let from = before.at.unwrap_or(start);
    let to = match after.at {
        Some(at) if now.saturating_duration_since(at) <= REPORT_PERIOD => at,
        _ => now,
    };
    let span = to.saturating_duration_since(from);
    if span.is_zero() {
        return 0.0;
    }
    after.frames.saturating_sub(before.frames) as f64 / span.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn frames(total: u64, gap_ms: Option<u64>, connection: Option<u64>) -> Event {
        Event::Frames {
            total,
            gap: gap_ms.map(Duration::from_millis),
            connection,
        }
    }

    #[test]
    fn the_longest_gap_is_the_largest_reported_and_resets_when_taken() {
        let t0 = Instant::now();
        let mut tally = Tally::default();
        tally.apply(frames(30, Some(40), None), t0);
        tally.apply(frames(60, Some(120), None), t0 + 1000 * MS);
        tally.apply(frames(90, Some(35), None), t0 + 2000 * MS);
        assert_eq!(tally.take_gap(), 120 * MS);
        assert_eq!(tally.take_gap(), Duration::ZERO);
        assert_eq!(tally.total_frames(), 90);
    }

    #[test]
    fn a_new_connection_counts_the_wait_since_the_old_ones_last_frames() {
        let t0 = Instant::now();
        let mut tally = Tally::default();
        tally.apply(frames(30, Some(34), Some(1)), t0);
        tally.apply(frames(31, Some(0), Some(2)), t0 + 7000 * MS);
        assert_eq!(tally.take_gap(), 7000 * MS);
    }

    #[test]
    fn reports_without_new_frames_do_not_move_the_last_frame_time() {
        let t0 = Instant::now();
        let mut tally = Tally::default();
        tally.apply(frames(30, None, Some(1)), t0);
        tally.apply(frames(30, None, Some(1)), t0 + 500 * MS);
        tally.apply(frames(32, None, Some(2)), t0 + 3000 * MS);
        assert_eq!(tally.take_gap(), 3000 * MS);
    }

    #[test]
    fn reoffers_are_the_offers_after_the_first_whichever_way_counted() {
        let now = Instant::now();
        let mut counted = Tally::default();
        assert_eq!(counted.reoffers(), 0);
        counted.apply(Event::Offer, now);
        assert_eq!(counted.reoffers(), 0);
        counted.apply(Event::Offer, now);
        counted.apply(Event::Offer, now);
        assert_eq!(counted.reoffers(), 2);
        let mut cumulative = Tally::default();
        cumulative.apply(Event::Offers(1), now);
        cumulative.apply(Event::Offers(3), now);
        cumulative.apply(Event::Offers(3), now);
        assert_eq!(cumulative.reoffers(), 2);
    }

    #[test]
    fn first_frame_time_is_the_receivers_own_or_from_its_join() {
        let t0 = Instant::now();
        let mut own = Tally::default();
        own.apply(Event::Joined, t0);
        own.apply(Event::FirstFrame { ms: 80.0 }, t0 + 100 * MS);
        own.apply(frames(1, None, None), t0 + 200 * MS);
        assert_eq!(own.first_frame_ms(), Some(80.0));
        let mut timed = Tally::default();
        timed.apply(Event::Joined, t0);
        timed.apply(frames(1, None, Some(1)), t0 + 250 * MS);
        assert_eq!(timed.first_frame_ms(), Some(250.0));
    }

    fn count(frames: u64, at: Option<Instant>) -> Count {
        Count { frames, at }
    }

    #[test]
    fn fps_is_taken_between_the_reports_not_the_window_edges() {
        let t0 = Instant::now();
        // Reports every 30 frames at 30 fps, the window from 0.4 s to 10.4 s:
        // 300 frames between the reports at 0 s and 10 s.
        let before = count(30, Some(t0));
        let after = count(330, Some(t0 + 10_000 * MS));
        assert_eq!(fps(before, after, t0 + 400 * MS, t0 + 10_400 * MS), 30.0);
    }

    #[test]
    fn a_receiver_that_stopped_reporting_has_its_rate_taken_to_now() {
        let t0 = Instant::now();
        let before = count(0, Some(t0));
        // 150 frames in 5 s, then nothing for the rest of a 10 s window.
        let after = count(150, Some(t0 + 5000 * MS));
        assert_eq!(fps(before, after, t0, t0 + 10_000 * MS), 15.0);
        assert_eq!(
            fps(count(0, None), count(0, None), t0, t0 + 10_000 * MS),
            0.0
        );
        assert_eq!(fps(before, before, t0, t0), 0.0);
    }

    #[test]
    fn a_first_count_inside_the_window_starts_at_the_window() {
        let t0 = Instant::now();
        let after = count(270, Some(t0 + 9000 * MS));
        assert_eq!(fps(count(0, None), after, t0, t0 + 9500 * MS), 30.0);
    }
}
