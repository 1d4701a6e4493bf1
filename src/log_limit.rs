//! At most a few lines a window from each log statement of the libraries
//! beneath us. The WebRTC stack logs an error for every packet it cannot
//! send: with the network gone, hundreds of lines a second, written to a
//! Raspberry Pi's SD card by journald. The first lines of a window say what
//! happens; the rest say it again.
//!
//! Owns: the count of each call site's lines in its window. Must not read
//! the clock: the time of each line is an argument. Our own statements are
//! not limited: they are written to be read (counted drops, state changes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;

/// Lines one call site may write per [`WINDOW`].
pub const MOST: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(10);

/// Targets whose lines are never limited.
const OWN_TARGET: &str = "meshcam";

#[derive(Debug, Default)]
pub struct Repeats {
    /// Per call site: when its window began, lines written in it.
    seen: HashMap<Identifier, (Instant, u32)>,
}

impl Repeats {
    /// Whether lines of `target` are never limited (ours): then the count,
    /// and its lock, are not needed.
    pub fn exempt(target: &str) -> bool {
        target == OWN_TARGET || target.starts_with("meshcam::")
    }

    /// Whether a line of `callsite` (of `target`) at `now` is written.
    pub fn allow(&mut self, callsite: Identifier, target: &str, now: Instant) -> bool {
        if Self::exempt(target) {
            return true;
        }
        let (start, count) = self.seen.entry(callsite).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= MOST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &'static str) -> Identifier {
        // Two statics stand for two log statements (not zero-sized: they
        // must have addresses of their own).
        struct Site(#[allow(dead_code)] u8);
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static A: Site = Site(0);
        static B: Site = Site(1);
        match name {
            "a" => Identifier(&A),
            _ => Identifier(&B),
        }
    }

    #[test]
    fn a_flood_is_cut_to_a_few_lines_a_window_per_statement() {
        let t0 = Instant::now();
        let mut repeats = Repeats::default();
        let written = (0..300)
            .filter(|i| repeats.allow(site("a"), "webrtc::driver", t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(written, MOST as usize);
        // Another statement has a window of its own.
        assert!(repeats.allow(site("b"), "webrtc::driver", t0));
        // The next window writes again.
        assert!(repeats.allow(site("a"), "webrtc::driver", t0 + WINDOW));
        // Ours are never cut.
        assert!((0..100).all(|_| repeats.allow(site("a"), "meshcam::daemon", t0)));
    }
}
