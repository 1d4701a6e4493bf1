//! A simulated bottleneck and the viewer behind it, for the tests of the
//! estimator and the controller: faster than real time, no sockets.
//!
//! The camera sends its layer (and the controller's padding) into a
//! bottleneck of a given capacity whose buffer holds [`BUFFER`] of it; what
//! would wait longer is dropped, as `tbf` does. The viewer answers as one
//! of three kinds of receiver does at its defaults: a browser (TWCC every
//! 100 ms), one that sends a receiver report a second and a NACK for every
//! packet it misses, or GStreamer's `webrtcbin` (receiver reports at
//! RFC 3550's randomised pace, 2.5 to 7.5 s apart, nothing else). Each
//! answers our consent checks, every [`PING_EVERY`], through the same
//! bottleneck.

use std::time::{Duration, Instant};

use super::*;

pub const TOP: f64 = 2_000_000.0;
pub const LOW: f64 = 400_000.0;
pub const TICK: Duration = Duration::from_millis(100);

/// What the viewer sends back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    Twcc,
    /// A receiver report a second, and NACKs.
    ReportsAndNacks,
    /// Receiver reports at RFC 3550's pace, nothing else.
    Rfc3550,
}

/// How often a consent check goes out.
const PING_EVERY: Duration = Duration::from_millis(200);

/// Gaps between RFC 3550 reports: 5 s on average, from 0.5 to 1.5 times
/// that, in a fixed order so that runs repeat.
const RFC3550_GAPS: [f64; 8] = [5.2, 2.6, 7.4, 4.1, 6.6, 3.3, 7.1, 3.7];

/// One tick of a run.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Since the link was made.
    pub at: Duration,
    pub layer: usize,
    /// Bits the bottleneck dropped in this tick.
    pub lost: f64,
    pub padding: f64,
}

/// A camera sending one viewer through a bottleneck.
pub struct Link {
    pub start: Instant,
    pub now: Instant,
    pub capacity_bps: f64,
    feedback: Feedback,
    pub heard: Heard,
    /// A crude delay-based target: falls to 0.85 × what arrives when the
    /// link overflows, climbs 8 % a second otherwise.
    pub target_bps: f64,
    pub estimator: LinkEstimator,
    pub controller: LayerController,
    last_report: Instant,
    reports_made: usize,
    last_ping: Instant,
    lost_since_report: f64,
    sent_since_report: f64,
    /// Bits waiting at the bottleneck: up to [`BUFFER`] of its capacity,
    /// what would wait longer is dropped.
    queued_bits: f64,
    /// Every bit sent and lost so far.
    pub sent_bits: f64,
    pub lost_bits: f64,
    /// Packets sent, and packets past the bottleneck (arrived or dropped):
    /// the highest sequence number a report gives.
    sent_packets: f64,
    passed_packets: f64,
    lost_packets: f64,
    padding: f64,
    /// Bits the token bucket has saved up.
    tokens: f64,
    /// The viewer answers some consent checks late, as a receiver busy
    /// decoding does: see [`BUSY_EVERY`].
    pub busy: bool,
    pings_made: usize,
}

/// The size of every packet, in bits.
const PACKET: f64 = 9600.0;

/// How long the bottleneck's buffer holds, and the round trip without it.
pub const BUFFER: f64 = 0.1;
/// The token bucket's depth, in bits: 16 kB, as the namespace tests shape.
pub const BURST: f64 = 128_000.0;
const BASE_RTT: f64 = 0.01;
/// A busy viewer answers two checks in a row [`BUSY_LATE`] late, every
/// this many checks (every 2 s), whatever the link.
const BUSY_EVERY: usize = 10;
const BUSY_LATE: f64 = 0.06;

impl Link {
    pub fn new(capacity_bps: f64, feedback: Feedback) -> Self {
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
            reports_made: 0,
            last_ping: start,
            lost_since_report: 0.0,
            sent_since_report: 0.0,
            queued_bits: 0.0,
            sent_bits: 0.0,
            lost_bits: 0.0,
            sent_packets: 0.0,
            passed_packets: 0.0,
            lost_packets: 0.0,
            padding: 0.0,
            tokens: BURST,
            busy: false,
            pings_made: 0,
        }
    }

    /// `send` bit/s offered for one tick: what arrives of it (bit/s), and
    /// the bits dropped.
    pub fn carry(&mut self, send: f64) -> (f64, f64) {
        let dt = TICK.as_secs_f64();
        let offered = self.queued_bits + send * dt;
        // What the token bucket saved up passes at once, as `tbf` lets a
        // burst through: an overrun shows only once it is spent.
        let allowed = self.capacity_bps * dt + self.tokens;
        let delivered = offered.min(allowed);
        self.tokens = (allowed - delivered).min(BURST);
        let kept = (offered - delivered).min(self.capacity_bps * BUFFER);
        let lost = offered - delivered - kept;
        self.lost_since_report += lost;
        self.lost_bits += lost;
        // A packet the bottleneck cut short is missing too.
        self.lost_packets += (lost / PACKET).ceil();
        self.sent_bits += send * dt;
        self.sent_packets += send * dt / PACKET;
        self.passed_packets += (offered - kept) / PACKET;
        self.queued_bits = kept;
        (delivered / dt, lost)
    }

    pub fn needs(&self) -> [Option<f64>; 2] {
        [Some(TOP), Some(LOW)]
    }

    fn report_due(&self) -> bool {
        let gap = match self.feedback {
            Feedback::Twcc | Feedback::ReportsAndNacks => 1.0,
            Feedback::Rfc3550 => RFC3550_GAPS[self.reports_made % RFC3550_GAPS.len()],
        };
        self.now.duration_since(self.last_report).as_secs_f64() >= gap
    }

    /// Runs for `duration`; returns every tick.
    pub fn run(&mut self, duration: Duration) -> Vec<Tick> {
        let mut ticks = Vec::new();
        let end = self.now + duration;
        while self.now < end {
            self.now += TICK;
            let dt = TICK.as_secs_f64();
            let layer = self.controller.layer();
            let send = self.needs()[layer].unwrap() + self.padding;
            let (arrived, lost) = self.carry(send);
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
                // Every missing packet is asked for within a round trip.
                Feedback::ReportsAndNacks => self.heard.nacked_packets = self.lost_packets as u64,
                Feedback::Rfc3550 => {}
            }
            // A check waits in the queue like the media; one that comes
            // when the bottleneck drops is dropped.
            if self.now.duration_since(self.last_ping) >= PING_EVERY {
                self.last_ping = self.now;
                self.pings_made += 1;
                self.heard.pings_sent += 1;
                let late = self.busy && self.pings_made % BUSY_EVERY < 2;
                if lost == 0.0 {
                    self.heard.pings_answered += 1;
                    self.heard.ping_rtt = BASE_RTT
                        + self.queued_bits / self.capacity_bps
                        + if late { BUSY_LATE } else { 0.0 };
                }
            }
            if self.report_due() {
                self.last_report = self.now;
                self.reports_made += 1;
                self.heard.reports += 1;
                self.heard.fraction_lost = self.lost_since_report / self.sent_since_report;
                self.heard.report_rtt = BASE_RTT + self.queued_bits / self.capacity_bps;
                self.heard.highest_seq = self.passed_packets as u64;
                self.lost_since_report = 0.0;
                self.sent_since_report = 0.0;
            }
            let estimate = self.estimator.update(self.now, self.heard);
            let decision = self.controller.update(self.now, &estimate, &self.needs());
            self.padding = decision.padding_bps;
            ticks.push(Tick {
                at: self.now.duration_since(self.start),
                layer,
                lost,
                padding: decision.padding_bps,
            });
        }
        ticks
    }
}

pub fn first_on(ticks: &[Tick], layer: usize) -> Option<Duration> {
    ticks.iter().find(|t| t.layer == layer).map(|t| t.at)
}
