//! The WebRTC stack's Google congestion control, run on one viewer's TWCC
//! feedback, with its results handed to that viewer's [`Feedback`].
//!
//! The stack's congestion-control interceptor records every packet that
//! leaves and resolves the viewer's transport-wide feedback against it; it
//! drives any [`BandwidthEstimator`]. This one is its `Gcc` plus what the
//! layer choice needs besides the target: the rate the viewer acknowledged
//! (the cap of [`crate::adapt::estimate`], on the viewer's clock:
//! [`crate::adapt::delivered`]) and whether the delay of our
//! packets is growing, from the stack's own slope estimator and overuse
//! detector, so that a probe stops as soon as a queue builds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, Gcc, OveruseDetector, PacketReport, SlopeEstimator, Usage,
};

use super::feedback::Feedback;
use crate::adapt::DeliveredRate;

/// The estimate never goes below this (bit/s): the lowest layer still fits.
pub const MIN_BPS: f64 = 50_000.0;

pub struct ViewerEstimator {
    gcc: Gcc,
    acked: DeliveredRate,
    slope: SlopeEstimator,
    detector: OveruseDetector,
    feedback: Arc<Feedback>,
}

impl ViewerEstimator {
    /// Starts at `initial_bps` (the top layer: a new viewer gets it unless
    /// its link objects), at most `max_bps`.
    pub fn new(initial_bps: f64, max_bps: f64, feedback: Arc<Feedback>) -> Self {
        Self {
            gcc: Gcc::new(initial_bps, MIN_BPS, max_bps.max(initial_bps)),
            acked: DeliveredRate::default(),
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            feedback,
        }
    }
}

impl BandwidthEstimator for ViewerEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        let mut usage = self.detector.usage();
        for report in reports {
            if let (true, Some(arrival)) = (report.arrived, report.arrival) {
                self.acked.add(arrival, report.size);
            }
            if let Some(trend) = self.slope.accumulate(report) {
                usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        let f = &self.feedback;
        f.twcc_target_bps
            .store(self.gcc.target_bitrate() as u64, Ordering::Relaxed);
        if let Some(acked) = self.acked.bps() {
            f.twcc_acked_bps.store(acked as u64, Ordering::Relaxed);
        }
        f.twcc_overusing
            .store(usage == Usage::Over, Ordering::Relaxed);
        f.twcc_updates.fetch_add(1, Ordering::Relaxed);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}
