//! The soak's verdict, from its samples: every receiver at full rate in
//! every window, no re-offer, no drop, and a camera whose memory and open
//! files stay flat. Pure: samples in, verdict out.
//!
//! Flat means: the camera's mean RSS over the last quarter-span is at most
//! [`RSS_SLACK`] above its mean over the baseline span, and its most open
//! files in the last span are no more than in the baseline's. The span is
//! a minute, or a quarter of the run when that is shorter; the baseline is
//! the second span (the first holds what a camera allocates once for its
//! first viewers: buffers, codec state, connections) and the last is the
//! run's end. On a 10-minute soak: minute 2 against minute 10.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::tools::receivers::Outcome;

/// The least frame rate a receiver may have in any window.
pub const MIN_FPS: f64 = 29.0;
/// How far the camera's mean RSS may rise from the baseline to the end.
pub const RSS_SLACK: u64 = 4 * 1024 * 1024;
const SPAN: Duration = Duration::from_secs(60);

/// One window of the run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The end of the window, from the start of the run.
    pub at: Duration,
    pub receivers: Vec<Outcome>,
    pub rss_bytes: u64,
    pub open_fds: u64,
}

/// The spans flatness compares, by the ends of the windows in them.
#[derive(Debug, Clone, PartialEq)]
pub struct Spans {
    pub baseline: RangeInclusive<Duration>,
    pub last: RangeInclusive<Duration>,
}

impl Spans {
    pub fn of(run: Duration) -> Self {
        let span = SPAN.min(run / 4);
        // Exclusive starts, as windows are named by their ends.
        let after = |d: Duration| d + Duration::from_millis(1);
        Self {
            baseline: after(span)..=span * 2,
            last: after(run.saturating_sub(span))..=run,
        }
    }
}

/// A resource over the baseline span and the last one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    pub baseline: f64,
    pub last: f64,
    pub flat: bool,
}

/// A receiver over the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub kind: &'static str,
    pub min_fps: f64,
    pub mean_fps: f64,
    pub longest_gap: Duration,
    pub reoffers: u64,
    pub drops: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub receivers: Vec<Run>,
    /// Windows below [`MIN_FPS`]: receiver, window end, fps.
    pub slow: Vec<(String, Duration, f64)>,
    /// `None` when a span holds no sample (a run too short to judge).
    pub rss: Option<Flatness>,
    pub fds: Option<Flatness>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.slow.is_empty()
            && self
                .receivers
                .iter()
                .all(|r| r.reoffers == 0 && r.drops == 0)
            && self.rss.is_some_and(|f| f.flat)
            && self.fds.is_some_and(|f| f.flat)
    }
}

pub fn judge(samples: &[Sample], run: Duration) -> Verdict {
    let spans = Spans::of(run);
    let within = |span: &RangeInclusive<Duration>| -> Vec<&Sample> {
        samples.iter().filter(|s| span.contains(&s.at)).collect()
    };
    let (baseline, last) = (within(&spans.baseline), within(&spans.last));
    let both = |f: &dyn Fn(&[&Sample]) -> f64, limit: &dyn Fn(f64, f64) -> bool| {
        (!baseline.is_empty() && !last.is_empty()).then(|| {
            let (b, l) = (f(&baseline), f(&last));
            Flatness {
                baseline: b,
                last: l,
                flat: limit(b, l),
            }
        })
    };
    let mean_rss =
        |s: &[&Sample]| s.iter().map(|s| s.rss_bytes as f64).sum::<f64>() / s.len() as f64;
    let most_fds = |s: &[&Sample]| s.iter().map(|s| s.open_fds).max().unwrap_or(0) as f64;
    Verdict {
        receivers: runs(samples),
        slow: samples
            .iter()
            .flat_map(|s| {
                s.receivers
                    .iter()
                    .filter(|o| o.fps < MIN_FPS)
                    .map(|o| (o.id.clone(), s.at, o.fps))
            })
            .collect(),
        rss: both(&mean_rss, &|b, l| l - b <= RSS_SLACK as f64),
        fds: both(&most_fds, &|b, l| l <= b),
    }
}

/// Each receiver over all windows; its re-offers and drops are the last
/// window's (they count from its join).
fn runs(samples: &[Sample]) -> Vec<Run> {
    let Some(last) = samples.last() else {
        return Vec::new();
    };
    last.receivers
        .iter()
        .map(|final_| {
            let windows: Vec<&Outcome> = samples
                .iter()
                .filter_map(|s| s.receivers.iter().find(|o| o.id == final_.id))
                .collect();
            Run {
                id: final_.id.clone(),
                kind: final_.kind.name(),
                min_fps: windows.iter().map(|o| o.fps).fold(f64::INFINITY, f64::min),
                mean_fps: windows.iter().map(|o| o.fps).sum::<f64>() / windows.len() as f64,
                longest_gap: windows
                    .iter()
                    .map(|o| o.longest_gap)
                    .max()
                    .unwrap_or_default(),
                reoffers: final_.reoffers,
                drops: final_.drops,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::receivers::Kind;

    const S: Duration = Duration::from_secs(1);
    const MIB: u64 = 1024 * 1024;

    fn outcome(id: &str, fps: f64, gap_ms: u64, reoffers: u64, drops: u64) -> Outcome {
        Outcome {
            id: id.into(),
            kind: Kind::Webrtcbin,
            fps,
            longest_gap: Duration::from_millis(gap_ms),
            reoffers,
            drops,
            first_frame_ms: None,
        }
    }

    /// A run of `minutes` with 10 s windows, a steady receiver, and the
    /// camera's RSS (MiB) and fds from `camera(at)`.
    fn steady(minutes: u64, camera: impl Fn(Duration) -> (u64, u64)) -> Vec<Sample> {
        (1..=minutes * 6)
            .map(|i| {
                let at = 10 * S * i as u32;
                let (rss_mib, open_fds) = camera(at);
                Sample {
                    at,
                    receivers: vec![outcome("a", 30.0, 40, 0, 0)],
                    rss_bytes: rss_mib * MIB,
                    open_fds,
                }
            })
            .collect()
    }

    #[test]
    fn spans_are_the_second_minute_and_the_last_or_quarters_of_a_short_run() {
        let ten = Spans::of(600 * S);
        assert!(!ten.baseline.contains(&(60 * S)) && ten.baseline.contains(&(70 * S)));
        assert!(ten.baseline.contains(&(120 * S)) && !ten.baseline.contains(&(130 * S)));
        assert!(!ten.last.contains(&(540 * S)) && ten.last.contains(&(550 * S)));
        assert!(ten.last.contains(&(600 * S)));
        let two = Spans::of(120 * S);
        assert!(two.baseline.contains(&(40 * S)) && two.baseline.contains(&(60 * S)));
        assert!(!two.baseline.contains(&(30 * S)));
        assert!(two.last.contains(&(100 * S)) && !two.last.contains(&(90 * S)));
    }

    #[test]
    fn a_steady_camera_and_receivers_pass() {
        let verdict = judge(&steady(10, |_| (60, 40)), 600 * S);
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.receivers[0].min_fps, 30.0);
        assert_eq!(verdict.receivers[0].longest_gap, Duration::from_millis(40));
    }

    #[test]
    fn memory_growing_past_the_slack_fails_and_noise_within_it_does_not() {
        // 1 MiB a minute: 8 MiB from minute 2 to minute 10.
        let growing = judge(&steady(10, |at| (60 + at.as_secs() / 60, 40)), 600 * S);
        assert!(!growing.rss.unwrap().flat && !growing.passed());
        // A first-minute climb and ±1 MiB of noise after it.
        let settled = judge(
            &steady(10, |at| match at.as_secs() {
                0..=60 => (50, 40),
                s => (60 + (s / 10) % 2, 40),
            }),
            600 * S,
        );
        assert!(settled.rss.unwrap().flat, "{settled:?}");
    }

    #[test]
    fn one_more_open_file_at_the_end_fails() {
        let verdict = judge(
            &steady(10, |at| (60, if at > 580 * S { 41 } else { 40 })),
            600 * S,
        );
        assert!(!verdict.fds.unwrap().flat);
        assert!(!verdict.passed());
    }

    #[test]
    fn a_slow_window_a_reoffer_or_a_drop_fails() {
        let mut samples = steady(3, |_| (60, 40));
        samples[5].receivers[0].fps = 27.5;
        let slow = judge(&samples, 180 * S);
        assert_eq!(slow.slow, [("a".to_owned(), 60 * S, 27.5)]);
        assert!(!slow.passed());
        assert_eq!(slow.receivers[0].min_fps, 27.5);

        let mut samples = steady(3, |_| (60, 40));
        samples.last_mut().unwrap().receivers[0] = outcome("a", 30.0, 7000, 1, 0);
        let reoffered = judge(&samples, 180 * S);
        assert_eq!(reoffered.receivers[0].reoffers, 1);
        assert_eq!(reoffered.receivers[0].longest_gap, 7 * S);
        assert!(!reoffered.passed());

        let mut samples = steady(3, |_| (60, 40));
        samples.last_mut().unwrap().receivers[0].drops = 3;
        assert!(!judge(&samples, 180 * S).passed());
    }

    #[test]
    fn a_run_too_short_for_both_spans_is_not_judged_flat() {
        let samples = steady(1, |_| (60, 40));
        let verdict = judge(&samples[..1], 10 * S);
        assert_eq!(verdict.rss, None);
        assert!(!verdict.passed());
    }
}
