//! The rate a TWCC viewer receives, on its own clock.
//!
//! Transport-wide feedback comes in batches, one every 50 to 100 ms, each
//! acknowledging the packets that arrived since the last. Counting a
//! batch's bytes at the moment the feedback is read, over a window of half
//! a second, reads five batches' bytes over the four gaps between them: a
//! quarter too high, and more when feedback is late. That error made a link
//! of 500 kbit/s look like 550 to 620: a probe stepping on it took an
//! overrun for a carried step, and the level the controller keeps as the
//! link's ceiling was the overrun's. Here each packet counts at the arrival
//! time the viewer reported, and the rate is the bytes that arrived after
//! the first packet of the window over the time since it.

use std::collections::VecDeque;
use std::time::Duration;

/// How far back the rate is measured: long enough for a few frames, short
/// enough to follow a step of a probe within its hold.
pub const WINDOW: Duration = Duration::from_millis(500);
/// A span shorter than this measures nothing (a frame's packets arrive
/// within a few milliseconds of each other).
const SPAN_MIN: Duration = Duration::from_millis(100);

/// Arrivals over the last [`WINDOW`] of the viewer's clock.
#[derive(Debug, Default)]
pub struct DeliveredRate {
    /// (arrival, bytes), oldest first.
    arrivals: VecDeque<(Duration, usize)>,
    bytes: usize,
    latest: Duration,
}

impl DeliveredRate {
    /// A packet of `size` bytes that arrived at `arrival` on the viewer's
    /// clock. A clock that went back (a feedback format's reference time
    /// wrapped, or the viewer restarted it) starts the window anew.
    pub fn add(&mut self, arrival: Duration, size: usize) {
        if arrival + WINDOW < self.latest {
            self.arrivals.clear();
            self.bytes = 0;
            self.latest = arrival;
        }
        self.latest = self.latest.max(arrival);
        self.arrivals.push_back((arrival, size));
        self.bytes += size;
        while let Some(&(at, bytes)) = self.arrivals.front() {
            if at + WINDOW >= self.latest {
                break;
            }
            self.arrivals.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Bit/s, or `None` until the window spans [`SPAN_MIN`].
    pub fn bps(&self) -> Option<f64> {
        let &(first, first_bytes) = self.arrivals.front()?;
        let span = self.latest.checked_sub(first)?;
        (span >= SPAN_MIN).then(|| (self.bytes - first_bytes) as f64 * 8.0 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 500 kbit/s in packets of 1250 bytes: one every 20 ms.
    fn steady(rate: &mut DeliveredRate, from: Duration, count: u32) -> Duration {
        let mut at = from;
        for _ in 0..count {
            rate.add(at, 1250);
            at += Duration::from_millis(20);
        }
        at
    }

    fn assert_reads(rate: &DeliveredRate, bps: f64) {
        let read = rate.bps().expect("a span of arrivals");
        assert!((read - bps).abs() < 1_000.0, "read {read} bit/s for {bps}");
    }

    #[test]
    fn a_steady_stream_reads_its_own_rate() {
        let mut rate = DeliveredRate::default();
        steady(&mut rate, Duration::from_secs(7), 100);
        assert_reads(&rate, 500_000.0);
    }

    /// Arrivals reported five at a time give the rate they arrived at as
    /// soon as their span allows one.
    #[test]
    fn arrivals_reported_in_batches_read_their_own_rate() {
        let mut rate = DeliveredRate::default();
        let mut at = Duration::from_secs(1);
        for batch in 0..20 {
            at = steady(&mut rate, at, 5);
            if batch > 0 {
                assert_reads(&rate, 500_000.0);
            }
        }
    }

    #[test]
    fn a_burst_shorter_than_the_span_measures_nothing() {
        let mut rate = DeliveredRate::default();
        for i in 0..10 {
            rate.add(Duration::from_millis(i), 1250);
        }
        assert_eq!(rate.bps(), None);
    }

    #[test]
    fn a_clock_that_goes_back_starts_anew() {
        let mut rate = DeliveredRate::default();
        steady(&mut rate, Duration::from_secs(1000), 50);
        steady(&mut rate, Duration::from_secs(1), 3);
        assert_eq!(rate.bps(), None, "40 ms of the new clock");
        steady(&mut rate, Duration::from_secs(2), 50);
        assert_reads(&rate, 500_000.0);
    }

    /// A link that narrows is followed within the window.
    #[test]
    fn a_slower_link_is_read_within_the_window() {
        let mut rate = DeliveredRate::default();
        let mut at = steady(&mut rate, Duration::ZERO, 100);
        for _ in 0..30 {
            rate.add(at, 1250);
            at += Duration::from_millis(40);
        }
        assert_reads(&rate, 250_000.0);
    }
}
