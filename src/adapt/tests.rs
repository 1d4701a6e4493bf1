//! The estimator and the controller driven by a simulated link, faster than
//! real time: a bottleneck of a given capacity, a viewer that reports as a
//! browser does (TWCC every 100 ms, or only a receiver report a second).

use std::time::{Duration, Instant};

use super::controller::UP_HOLD;
use super::estimate::{SOURCE_TIMEOUT, headroom};
use super::*;

const TOP: f64 = 2_000_000.0;
const LOW: f64 = 400_000.0;
const TICK: Duration = Duration::from_millis(100);

/// What the viewer sends back.
#[derive(Clone, Copy, PartialEq)]
enum Feedback {
    Twcc,
    ReportsOnly,
}

/// A camera sending one viewer through a bottleneck.
struct Link {
    start: Instant,
    now: Instant,
    capacity_bps: f64,
    feedback: Feedback,
    heard: Heard,
    /// A crude delay-based target: falls to 0.85 × what arrives when the
    /// link overflows, climbs 8 % a second otherwise.
    target_bps: f64,
    estimator: LinkEstimator,
    controller: LayerController,
    last_report: Instant,
    lost_since_report: f64,
    sent_since_report: f64,
    /// Bits waiting at the bottleneck: up to [`BUFFER`] of its capacity,
    /// what would wait longer is dropped.
    queued_bits: f64,
    /// Every bit sent and lost so far.
    sent_bits: f64,
    lost_bits: f64,
    /// Packets sent, and packets past the bottleneck (arrived or dropped):
    /// the highest sequence number a report gives.
    sent_packets: f64,
    passed_packets: f64,
}

/// The size of every packet, in bits.
const PACKET: f64 = 9600.0;

/// How long the bottleneck's buffer holds, and the round trip without it.
const BUFFER: f64 = 0.2;
const BASE_RTT: f64 = 0.01;

impl Link {
    fn new(capacity_bps: f64, feedback: Feedback) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            capacity_bps,
            feedback,
            heard: Heard::default(),
            target_bps: TOP,
            estimator: LinkEstimator::new(TOP),
            controller: LayerController::new(start, 0),
            last_report: start,
            lost_since_report: 0.0,
            sent_since_report: 0.0,
            queued_bits: 0.0,
            sent_bits: 0.0,
            lost_bits: 0.0,
            sent_packets: 0.0,
            passed_packets: 0.0,
        }
    }

    /// `send` bit/s offered for one tick: what arrives of it (bit/s).
    fn carry(&mut self, send: f64) -> f64 {
        let dt = TICK.as_secs_f64();
        let offered = self.queued_bits + send * dt;
        let delivered = offered.min(self.capacity_bps * dt);
        let kept = (offered - delivered).min(self.capacity_bps * BUFFER);
        self.lost_since_report += offered - delivered - kept;
        self.lost_bits += offered - delivered - kept;
        self.sent_bits += send * dt;
        self.sent_packets += send * dt / PACKET;
        self.passed_packets += (offered - kept) / PACKET;
        self.queued_bits = kept;
        delivered / dt
    }

    fn needs(&self) -> [Option<f64>; 2] {
        [Some(TOP), Some(LOW)]
    }

    /// Runs for `duration`; returns the layer at every tick.
    fn run(&mut self, duration: Duration) -> Vec<(Duration, usize)> {
        let mut layers = Vec::new();
        let mut padding = 0.0;
        let end = self.now + duration;
        while self.now < end {
            self.now += TICK;
            let dt = TICK.as_secs_f64();
            let send = self.needs()[self.controller.layer()].unwrap() + padding;
            let arrived = self.carry(send);
            self.heard.bytes_sent += (send * dt / 8.0) as u64;
            self.heard.packets_sent = self.sent_packets as u64;
            self.sent_since_report += send * dt;
            match self.feedback {
                Feedback::Twcc => {
                    if send > self.capacity_bps {
                        self.target_bps = self.target_bps.min(0.85 * arrived);
                    } else {
                        self.target_bps *= 1.0 + 0.08 * dt;
                    }
                    self.heard.twcc_updates += 1;
                    self.heard.twcc_target_bps = self.target_bps;
                    self.heard.twcc_acked_bps = arrived;
                    self.heard.twcc_overusing = self.queued_bits > 0.0;
                }
                Feedback::ReportsOnly => {}
            }
            if self.now.duration_since(self.last_report) >= Duration::from_secs(1) {
                self.last_report = self.now;
                self.heard.reports += 1;
                self.heard.fraction_lost = self.lost_since_report / self.sent_since_report;
                self.heard.report_rtt = BASE_RTT + self.queued_bits / self.capacity_bps;
                self.heard.highest_seq = self.passed_packets as u64;
                self.lost_since_report = 0.0;
                self.sent_since_report = 0.0;
            }
            let estimate = self.estimator.update(self.now, self.heard);
            let decision = self.controller.update(self.now, &estimate, &self.needs());
            padding = decision.padding_bps;
            layers.push((self.now.duration_since(self.start), decision.layer));
        }
        layers
    }
}

fn first_on(layers: &[(Duration, usize)], layer: usize) -> Option<Duration> {
    layers.iter().find(|(_, l)| *l == layer).map(|(t, _)| *t)
}

#[test]
fn a_viewer_whose_link_carries_the_top_layer_stays_on_it() {
    for feedback in [Feedback::Twcc, Feedback::ReportsOnly] {
        let mut link = Link::new(10_000_000.0, feedback);
        let layers = link.run(Duration::from_secs(30));
        assert!(layers.iter().all(|(_, l)| *l == 0));
        assert_eq!(link.controller.switches(), 0);
    }
}

#[test]
fn a_shaped_viewer_goes_down_fast_and_climbs_back_when_the_shaping_ends() {
    for feedback in [Feedback::Twcc, Feedback::ReportsOnly] {
        let mut link = Link::new(500_000.0, feedback);
        let layers = link.run(Duration::from_secs(20));
        let down = first_on(&layers, 1).expect("went down");
        assert!(down <= Duration::from_secs(3), "down after {down:?}");
        let after: Vec<_> = layers.iter().filter(|(t, _)| *t > down).collect();
        assert!(
            after.iter().all(|(_, l)| *l == 1),
            "no switch up into a link that cannot carry it"
        );

        link.capacity_bps = 10_000_000.0;
        let lifted = link.now.duration_since(link.start);
        let layers = link.run(Duration::from_secs(20));
        let up = first_on(&layers, 0).expect("climbed back") - lifted;
        assert!(up <= Duration::from_secs(15), "up after {up:?}");
        assert!(up >= UP_HOLD, "not before the rate was carried");
        assert!(
            layers
                .iter()
                .skip_while(|(_, l)| *l == 1)
                .all(|(_, l)| *l == 0)
        );
    }
}

#[test]
fn probes_on_a_link_that_cannot_carry_more_back_off() {
    let mut link = Link::new(500_000.0, Feedback::Twcc);
    link.run(Duration::from_secs(5));
    assert_eq!(link.controller.layer(), 1);
    let mut padded = Vec::new();
    let mut padding = 0.0;
    for _ in 0..600 {
        link.now += TICK;
        let send = LOW + padding;
        let arrived = send.min(link.capacity_bps);
        link.heard.bytes_sent += (send * TICK.as_secs_f64() / 8.0) as u64;
        if send > link.capacity_bps {
            link.target_bps = 0.85 * arrived;
        }
        link.heard.twcc_updates += 1;
        link.heard.twcc_target_bps = link.target_bps;
        link.heard.twcc_acked_bps = arrived;
        link.heard.twcc_overusing = send > link.capacity_bps;
        let estimate = link.estimator.update(link.now, link.heard);
        padding = link
            .controller
            .update(link.now, &estimate, &link.needs())
            .padding_bps;
        padded.push(padding > 0.0);
    }
    let share = padded.iter().filter(|p| **p).count() as f64 / padded.len() as f64;
    assert!(share < 0.1, "padded {:.0} % of the time", share * 100.0);
    assert_eq!(link.controller.layer(), 1);
}

#[test]
fn a_pinned_viewer_keeps_its_layer_whatever_the_link() {
    let mut link = Link::new(300_000.0, Feedback::Twcc);
    link.controller.pin(Some(0));
    link.run(Duration::from_secs(10));
    assert_eq!(link.controller.layer(), 0);
    link.controller.pin(None);
    link.run(Duration::from_secs(5));
    assert_eq!(link.controller.layer(), 1);
}

#[test]
fn a_layer_that_cannot_be_sent_is_skipped() {
    let now = Instant::now();
    let mut controller = LayerController::new(now, 1);
    let estimate = Estimate {
        source: Source::Twcc,
        bps: 300_000.0,
        congested: false,
        acked_bps: Some(300_000.0),
        headroom_bps: Some(headroom(300_000.0)),
        loss: 0.0,
        nack_ratio: 0.0,
        sent_bps: 300_000.0,
    };
    let decision = controller.update(now, &estimate, &[Some(TOP), None]);
    assert_eq!(decision.layer, 0, "the only layer there is");
    assert_eq!(decision.padding_bps, 0.0);
}

#[test]
fn the_estimate_is_capped_to_what_was_acknowledged() {
    let start = Instant::now();
    let mut estimator = LinkEstimator::new(TOP);
    let mut heard = Heard::default();
    let mut estimate = None;
    for i in 1..=20 {
        heard.twcc_updates = i;
        heard.twcc_target_bps = 50_000_000.0;
        heard.twcc_acked_bps = 200_000.0;
        heard.bytes_sent += 2_500;
        estimate = Some(estimator.update(start + TICK * i as u32, heard));
    }
    let estimate = estimate.unwrap();
    assert_eq!(estimate.source, Source::Twcc);
    assert_eq!(estimate.bps, headroom(200_000.0));
    assert!(!estimate.congested);
}

#[test]
fn a_viewer_without_twcc_is_estimated_from_remb_then_from_loss() {
    let start = Instant::now();
    let mut estimator = LinkEstimator::new(TOP);
    let mut heard = Heard {
        remb_updates: 1,
        remb_bps: 700_000.0,
        ..Heard::default()
    };
    let mut at = start;
    for _ in 0..10 {
        at += TICK;
        heard.bytes_sent += 25_000;
        heard.packets_sent += 20;
        let e = estimator.update(at, heard);
        assert_eq!(e.source, Source::Remb);
        assert_eq!(e.bps, 700_000.0);
    }
    // REMB stops; receiver reports with heavy loss remain.
    for _ in 0..30 {
        at += TICK;
        heard.bytes_sent += 25_000;
        heard.packets_sent += 20;
        heard.reports += 1;
        heard.fraction_lost = 0.5;
        let e = estimator.update(at, heard);
        if at.duration_since(start) > SOURCE_TIMEOUT + Duration::from_secs(1) {
            assert_eq!(e.source, Source::Loss);
            assert!(e.congested);
            assert!(e.bps < 1_000_000.0, "{}", e.bps);
        }
    }
}

#[test]
fn without_twcc_a_queue_building_ends_a_probe_before_the_buffer_overflows() {
    let mut link = Link::new(500_000.0, Feedback::ReportsOnly);
    link.run(Duration::from_secs(5));
    assert_eq!(link.controller.layer(), 1);
    let (sent, lost) = (link.sent_bits, link.lost_bits);
    link.run(Duration::from_secs(60));
    let (sent, lost) = (link.sent_bits - sent, link.lost_bits - lost);
    assert_eq!(link.controller.layer(), 1);
    assert!(lost / sent < 0.01, "lost {:.2} %", lost / sent * 100.0);
}

#[test]
fn a_twcc_viewer_whose_estimate_sits_at_its_floor_climbs_back_on_what_it_acknowledges() {
    let mut link = Link::new(500_000.0, Feedback::Twcc);
    link.run(Duration::from_secs(10));
    assert_eq!(link.controller.layer(), 1);
    // A lossy spell left the estimator at its floor; it climbs 8 % a
    // second from there, which alone would take ~45 s to vouch for the top
    // layer.
    link.target_bps = 50_000.0;
    link.capacity_bps = 10_000_000.0;
    let lifted = link.now.duration_since(link.start);
    let layers = link.run(Duration::from_secs(20));
    let up = first_on(&layers, 0).expect("climbed back") - lifted;
    assert!(up <= Duration::from_secs(15), "up after {up:?}");
}
