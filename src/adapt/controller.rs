//! The layer one viewer gets, with hysteresis.
//!
//! Down is fast: the estimator says the link is congested, and both the
//! estimate and what the viewer acknowledges stay below what its layer needs
//! for [`DOWN_HOLD`] (less when far below, [`DOWN_HOLD_DEEP`]); the viewer
//! goes to the best layer that fits. Checking
//! the acknowledged rate too keeps a viewer whose link carries its layer
//! from dropping on a passing dip of the estimate.
//!
//! Up is slow: after [`QUIET`] without congestion, and once the viewer
//! acknowledges the current layer's rate (a link the lowest layer keeps
//! full shows a queue or loss, and is not probed: each probe would be a
//! freeze), the controller asks the sender to probe, padding the stream up
//! towards the next layer's rate in steps of [`PROBE_STEP`] (smaller at
//! first, [`PROBE_STEP_REPORTS`], unless TWCC's estimate vouches for the
//! current layer) every [`PROBE_STEP_EVERY`] (never above the
//! acknowledged-rate cap); once the viewer has acknowledged that rate for
//! [`UP_HOLD`], it switches up. Small steps keep a failed probe cheap: the
//! link is overrun by a quarter at most, and only until the estimator sees
//! the queue grow. A probe the link objects to ends at once, and the next
//! waits twice as long (up to [`PROBE_WAIT_MAX`], or
//! [`PROBE_WAIT_MAX_UNTIMED`] without TWCC).
//!
//! Layers are ordered best first; a layer's need is its rate in bit/s, or
//! `None` when it cannot be sent now (the pipeline could not encode it).

use std::time::{Duration, Instant};

use super::{Estimate, Source};

/// How long congestion must last before a viewer goes down…
pub const DOWN_HOLD: Duration = Duration::from_millis(500);
/// …or, when the viewer acknowledges less than [`DEEP_SHORTFALL`] of what
/// its layer needs, this long: the link has narrowed under it, not
/// dipped, and the picture is breaking up while the controller waits.
pub const DOWN_HOLD_DEEP: Duration = Duration::from_millis(200);
pub const DEEP_SHORTFALL: f64 = 0.5;
/// A layer needs this margin under the estimate to be kept or chosen.
pub const FIT: f64 = 0.9;
/// Clean link before a probe starts.
pub const QUIET: Duration = Duration::from_secs(3);
/// How long the higher layer's rate must have been acknowledged.
pub const UP_HOLD: Duration = Duration::from_secs(1);
/// The first wait before probing, and the longest with TWCC.
pub const PROBE_WAIT_MIN: Duration = Duration::from_secs(2);
pub const PROBE_WAIT_MAX: Duration = Duration::from_secs(6);
/// Without TWCC a probe climbs in steps of a second, twice as slow: it
/// waits less between probes, so that a link that widened just after one
/// failed is still climbed within 15 s.
pub const PROBE_WAIT_MAX_UNTIMED: Duration = Duration::from_secs(4);
/// A probe that has not shown the rate by then has failed.
pub const PROBE_MAX: Duration = Duration::from_secs(15);
/// A probe aims this much above the higher layer's need.
pub const PROBE_OVERSHOOT: f64 = 1.1;
/// A probe raises what is sent by this factor at each step. When only
/// receiver reports, one a second, tell how a step went, the first step is
/// smaller (a bottleneck's buffer of 200 ms takes longer than that to fill
/// 15 % above its rate: the report sees the queue before it overflows) and
/// each step carried raises the next by [`PROBE_STEP_GROWTH`], up to
/// [`PROBE_STEP`]: a narrow link is crossed in small steps, a free one
/// climbed in large ones…
pub const PROBE_STEP: f64 = 1.25;
pub const PROBE_STEP_REPORTS: f64 = 1.15;
pub const PROBE_STEP_GROWTH: f64 = 0.05;
/// …once the previous step has been carried for this long: TWCC sees every
/// packet's delay, and a step that overruns the link shows at once.
pub const PROBE_STEP_EVERY: Duration = Duration::from_millis(500);
/// Without TWCC, what tells of an overrun is the delay of our consent checks
/// (or NACKs, after a loss), and a bottleneck's token bucket lets a burst
/// through before any queue shows (16 kB: a quarter of a second at a 25 %
/// overrun of 500 kbit/s): each step is held for this long. So that the
/// climb is not slower for it, the steps grow faster, by
/// [`PROBE_STEP_GROWTH_UNTIMED`] up to [`PROBE_STEP_UNTIMED`].
///
/// Whatever the feedback, steps never pass [`CEILING_MARGIN`] of the level
/// at which the last probe failed, or of what the link delivered when the
/// viewer went down to this layer: from there on they are
/// [`PROBE_STEP_REPORTS`], so a link that has not widened is overrun by
/// that much at most (a token bucket hides even TWCC's delay signal until
/// it is spent, and GCC's estimate climbs past the link meanwhile), and
/// once a step past that level is carried the link has widened, and they
/// grow again. With TWCC, carried past the ceiling means that more than
/// the ceiling arrived, or that no queue showed for [`HOLD_MAX`]; a failed
/// probe's ceiling is what arrived as it failed, not the level that
/// overran.
pub const PROBE_STEP_EVERY_UNTIMED: Duration = Duration::from_secs(1);
pub const PROBE_STEP_UNTIMED: f64 = 1.5;
pub const PROBE_STEP_GROWTH_UNTIMED: f64 = 0.1;
pub const CEILING_MARGIN: f64 = 0.95;
/// The longest a TWCC probe is held past the ceiling while no queue shows.
/// An overrun shows within it: a token bucket of 16 kB is spent in under
/// 2 s by a step of 15 % past 500 kbit/s, and the queue it leaves grows
/// from then on.
pub const HOLD_MAX: Duration = Duration::from_secs(4);

/// How a probe goes, by what the viewer's feedback can tell of it: TWCC
/// times every packet, the other kinds tell of a step a second or more
/// later.
#[derive(Debug, Clone, Copy)]
struct Pace {
    timed: bool,
    step_every: Duration,
    step_max: f64,
    growth: f64,
    wait_max: Duration,
}

impl Pace {
    fn of(source: Source) -> Self {
        if source == Source::Twcc {
            Self {
                timed: true,
                step_every: PROBE_STEP_EVERY,
                step_max: PROBE_STEP,
                growth: PROBE_STEP_GROWTH,
                wait_max: PROBE_WAIT_MAX,
            }
        } else {
            Self {
                timed: false,
                step_every: PROBE_STEP_EVERY_UNTIMED,
                step_max: PROBE_STEP_UNTIMED,
                growth: PROBE_STEP_GROWTH_UNTIMED,
                wait_max: PROBE_WAIT_MAX_UNTIMED,
            }
        }
    }
}

/// What the sender should do for this viewer now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The layer to send; a change is made at that layer's next key frame.
    pub layer: usize,
    /// Padding to add on top of the layer, in bit/s (0 when not probing).
    pub padding_bps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    Waiting {
        until: Instant,
    },
    Active {
        since: Instant,
        /// What is sent now, layer and padding, in bit/s.
        level: f64,
        stepped: Instant,
        /// The factor of the next step.
        step: f64,
        /// Since when the level has been held past the ceiling.
        held: Option<Instant>,
    },
}

/// One viewer's layer choice.
#[derive(Debug)]
pub struct LayerController {
    layer: usize,
    pinned: Option<usize>,
    below_since: Option<Instant>,
    quiet_since: Instant,
    fit_since: Option<Instant>,
    probe: Probe,
    backoff: Duration,
    /// Where probes on this layer slow down (bit/s): what the link
    /// delivered when the viewer came down to it, or where the last probe
    /// failed (with TWCC, what arrived then).
    ceiling: Option<f64>,
    switches: u64,
}

impl LayerController {
    /// Starts on `layer` at `now`.
    pub fn new(now: Instant, layer: usize) -> Self {
        Self {
            layer,
            pinned: None,
            below_since: None,
            quiet_since: now,
            fit_since: None,
            probe: Probe::Waiting {
                until: now + PROBE_WAIT_MIN,
            },
            backoff: PROBE_WAIT_MIN,
            ceiling: None,
            switches: 0,
        }
    }

    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Times the layer changed.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    pub fn pinned(&self) -> Option<usize> {
        self.pinned
    }

    /// Holds the viewer on `layer` (when it can be sent), or lets it adapt.
    pub fn pin(&mut self, layer: Option<usize>) {
        self.pinned = layer;
    }

    pub fn update(&mut self, now: Instant, estimate: &Estimate, needs: &[Option<f64>]) -> Decision {
        let available = |i: usize| needs.get(i).copied().flatten();
        if let Some(pin) = self.pinned.filter(|p| available(*p).is_some()) {
            self.switch(now, pin);
            return self.steady();
        }
        if available(self.layer).is_none() {
            let Some(nearest) = (0..needs.len()).find(|i| available(*i).is_some()) else {
                return self.steady();
            };
            self.switch(now, nearest);
        }
        let need = available(self.layer).expect("made available above");
        let lower = (self.layer + 1..needs.len()).filter(|i| available(*i).is_some());

        let short = |rate: f64| rate < need * FIT;
        if estimate.congested
            && short(estimate.bps)
            && estimate.acked_bps.is_none_or(short)
            && lower.clone().next().is_some()
        {
            let since = *self.below_since.get_or_insert(now);
            let deep = estimate
                .acked_bps
                .is_some_and(|acked| acked < need * DEEP_SHORTFALL);
            let hold = if deep { DOWN_HOLD_DEEP } else { DOWN_HOLD };
            if now.duration_since(since) >= hold {
                let fits = |i: &usize| available(*i).is_some_and(|n| n <= estimate.bps * FIT);
                let target = lower
                    .clone()
                    .find(fits)
                    .or_else(|| lower.clone().next_back())
                    .expect("checked non-empty");
                self.switch(now, target);
                // What the link delivered as it overflowed: where a probe
                // back up slows down.
                self.ceiling = estimate.acked_bps;
                self.backoff = PROBE_WAIT_MIN;
                self.probe = Probe::Waiting {
                    until: now + PROBE_WAIT_MIN,
                };
                return self.steady();
            }
        } else {
            self.below_since = None;
        }

        if estimate.congested {
            self.quiet_since = now;
            self.fit_since = None;
            if let Probe::Active { .. } = self.probe {
                self.fail_probe(now, estimate);
            }
        }
        let Some(up) = (0..self.layer).rev().find(|i| available(*i).is_some()) else {
            return self.steady();
        };
        let want = available(up).expect("found available");
        if !estimate.congested && estimate.acked_bps.is_some_and(|a| a >= want) {
            let since = *self.fit_since.get_or_insert(now);
            if now.duration_since(since) >= UP_HOLD {
                self.switch(now, up);
                self.backoff = PROBE_WAIT_MIN;
                self.probe = Probe::Waiting {
                    until: now + PROBE_WAIT_MIN,
                };
                return self.steady();
            }
        } else {
            self.fit_since = None;
        }
        let top = want * PROBE_OVERSHOOT;
        let pace = Pace::of(estimate.source);
        let ceiling = self.ceiling;
        let mut widened = false;
        // Large steps only while TWCC's estimate vouches for the link.
        let first_step = if pace.timed && estimate.bps >= need * FIT {
            PROBE_STEP
        } else {
            PROBE_STEP_REPORTS
        };
        match &mut self.probe {
            Probe::Waiting { until }
                if now >= *until
                    && now.duration_since(self.quiet_since) >= QUIET
                    && estimate.acked_bps.is_some_and(|a| a >= need * FIT) =>
            {
                self.probe = Probe::Active {
                    since: now,
                    level: (need * first_step).min(top),
                    stepped: now,
                    step: (first_step + pace.growth).min(pace.step_max),
                    held: None,
                };
            }
            Probe::Active { since, .. } if now.duration_since(*since) >= PROBE_MAX => {
                self.fail_probe(now, estimate);
            }
            Probe::Active {
                level,
                stepped,
                step,
                held,
                ..
            } if now.duration_since(*stepped) >= pace.step_every
                && estimate.acked_bps.is_some_and(|a| a >= *level * FIT) =>
            {
                let acked = estimate.acked_bps.unwrap_or_default();
                // Past the ceiling, with TWCC telling what arrived, the
                // level is held until more than the ceiling arrives: a step
                // that the margin of the carried test lets through is an
                // overrun, not a wider link. (Without TWCC what is
                // acknowledged is what was sent, less what is known lost:
                // no such proof.) But not for longer than [`HOLD_MAX`]: a
                // ceiling read a little high would hold a link that has
                // widened until the probe's end.
                let past = pace.timed && ceiling.is_some_and(|c| *level > c && acked <= c);
                *held = past.then(|| held.unwrap_or(now));
                let holding = held.is_some_and(|since| now.duration_since(since) < HOLD_MAX);
                let next = match ceiling {
                    _ if holding => *level,
                    Some(c) if *level < c * CEILING_MARGIN => {
                        (*level * *step).min(c * CEILING_MARGIN)
                    }
                    Some(c) if *level <= c => *level * PROBE_STEP_REPORTS,
                    _ => {
                        widened = ceiling.is_some();
                        *level * *step
                    }
                };
                *level = next.min(top);
                *stepped = now;
                *step = (*step + pace.growth).min(pace.step_max);
            }
            _ => {}
        }
        if widened {
            self.ceiling = None;
        }
        let padding_bps = match (self.probe, estimate.headroom_bps) {
            (Probe::Active { level, .. }, Some(headroom)) => (level.min(headroom) - need).max(0.0),
            _ => 0.0,
        };
        Decision {
            layer: self.layer,
            padding_bps,
        }
    }

    fn steady(&self) -> Decision {
        Decision {
            layer: self.layer,
            padding_bps: 0.0,
        }
    }

    fn switch(&mut self, now: Instant, layer: usize) {
        if layer != self.layer {
            self.layer = layer;
            self.switches += 1;
            self.ceiling = None;
            self.below_since = None;
            self.fit_since = None;
            self.quiet_since = now;
        }
    }

    /// Ends a probe the link objected to. Its ceiling is the level, or,
    /// when TWCC tells what arrived and that was less, what arrived: the
    /// level itself overran the link.
    fn fail_probe(&mut self, now: Instant, estimate: &Estimate) {
        let pace = Pace::of(estimate.source);
        if let Probe::Active { level, .. } = self.probe {
            let arrived = estimate.acked_bps.filter(|_| pace.timed);
            self.ceiling = Some(arrived.map_or(level, |a| a.min(level)));
        }
        self.backoff = (self.backoff * 2).min(pace.wait_max);
        self.probe = Probe::Waiting {
            until: now + self.backoff,
        };
    }
}
