//! A token bucket per peer for inbound signals. A peer that floods us has
//! the excess dropped and counted, instead of making us parse SDP and run
//! ICE work for it at the expense of everyone else. The burst covers a
//! browser's offer with its trickled candidates many times over.
//!
//! Owns one peer's tokens. Must not read the clock: the time of every
//! signal is an argument.

use std::time::{Duration, Instant};

/// Signals a peer may send at once.
pub const SIGNAL_BURST: u32 = 100;
/// Signals a peer may send per second, sustained.
pub const SIGNALS_PER_SECOND: u32 = 20;

const TOKEN_TIME: Duration = Duration::from_millis(1000 / SIGNALS_PER_SECOND as u64);

#[derive(Debug, Clone)]
pub struct SignalBudget {
    tokens: u32,
    /// When the tokens were last counted.
    at: Instant,
}

impl SignalBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: SIGNAL_BURST,
            at: now,
        }
    }

    /// Spends one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_millis() / TOKEN_TIME.as_millis();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(SIGNAL_BURST);
            self.at += TOKEN_TIME * earned.min(SIGNAL_BURST);
        }
        if self.tokens == SIGNAL_BURST {
            self.at = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut budget = SignalBudget::new(t0);
        assert!((0..SIGNAL_BURST).all(|_| budget.take(t0)));
        assert!(!budget.take(t0), "the burst is spent");
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..SIGNAL_BURST).filter(|_| budget.take(t1)).count();
        assert_eq!(passed, SIGNALS_PER_SECOND as usize);
        // A quiet minute refills the burst, not more.
        let t2 = t1 + Duration::from_secs(60);
        let passed = (0..2 * SIGNAL_BURST).filter(|_| budget.take(t2)).count();
        assert_eq!(passed, SIGNAL_BURST as usize);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut budget = SignalBudget::new(t0);
        assert!((0..SIGNAL_BURST).all(|_| budget.take(t0)));
        assert!(!budget.take(t0 - Duration::from_secs(5)));
    }
}
