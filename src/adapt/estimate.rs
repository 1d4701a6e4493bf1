//! One viewer's link, estimated from what the viewer reports.
//!
//! Three sources, best first: the TWCC estimator's target (delay and loss of
//! every packet, the WebRTC stack's Google congestion control), the
//! viewer's own REMB, and receiver-report loss. Whichever is used,
//! the estimate is capped to 1.5 × what the viewer acknowledged + 10 kbit/s:
//! an estimator that hears no complaint on a link that carries little would
//! otherwise climb without bound, and the controller would switch up into a
//! link it never measured.
//!
//! "Congested" means, within the last second, the estimate fell, the delay
//! of our packets grew, or loss rose: the one signal the controller goes
//! down on and a probe stops on. With TWCC the delay is seen per packet.
//! Two more signs of a queue come from receiver reports, with or without
//! TWCC: the packets that arrived between two reports (the highest
//! sequence number advanced by less than [`DELIVERED`] of what was sent
//! meanwhile) and the round trip rising [`QUEUE_DELAY`] above the lowest of
//! the last [`BASE_RTT_WINDOW`]. Many bottlenecks queue long before they
//! drop (a router's buffer, a sender's own socket): seeing only loss, a
//! link without TWCC would be found full a freeze late, and TWCC's estimate
//! at its floor after a lossy spell cannot fall to say so. Without TWCC the
//! arrivals are also what the link is said to have acknowledged.
//!
//! A receiver without TWCC may say nothing for seconds: one that follows
//! RFC 3550 reports every 5 s on average, and GStreamer's `webrtcbin` at
//! its defaults sends neither NACKs nor REMB. Judged on its reports alone,
//! a link that narrowed is seen full seconds late, each a freeze. Two
//! prompt signs come without its help:
//!
//! - our own ICE consent checks, every 150 to 300 ms on the selected pair,
//!   answered by every receiver: their round trip shows a queue building
//!   at the bottleneck ([`PING_QUEUE_DELAY`] above the lowest), and
//!   [`PINGS_UNANSWERED`] checks in a row unanswered show one that
//!   overflows. A viewer with TWCC times our media on its own clock: its
//!   late answers count only while the media, too, arrives short of what
//!   was sent or later and later (a receiver busy decoding answers late
//!   on a free link). Without
//!   TWCC or NACKs, a window whose checks show no queue is a window the
//!   link carried, and one whose checks show a queue carried at most
//!   [`QUEUED_SHARE`] of what was sent: that is what it acknowledged, so a
//!   probe climbs, and stops, on it without waiting for a report;
//! - NACKs, from receivers that send them, within a round trip of a loss:
//!   packets asked for again are loss seen at once ([`NACK_LOSS`] of what
//!   was sent is congestion, [`HIGH_LOSS`] sets the estimate to what got
//!   through), and once a receiver has shown that it NACKs, a window in
//!   which it asked for nothing is one it received.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Counters and latest values from a viewer's feedback, read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Heard {
    /// Feedback packets the TWCC estimator has taken.
    pub twcc_updates: u64,
    /// Its target after the latest, in bit/s.
    pub twcc_target_bps: f64,
    /// What the viewer acknowledged in its TWCC feedback (bit/s); 0 until known.
    pub twcc_acked_bps: f64,
    /// The delay between our packets grew in the latest TWCC feedback: a
    /// queue is building on the path.
    pub twcc_overusing: bool,
    pub remb_updates: u64,
    pub remb_bps: f64,
    /// Receiver reports about our stream, and the loss the latest one gave.
    pub reports: u64,
    pub fraction_lost: f64,
    /// The round trip the latest report gives (from its LSR and DLSR), in
    /// seconds; 0 until a report has one.
    pub report_rtt: f64,
    /// The extended highest sequence number the latest report says arrived.
    pub highest_seq: u64,
    /// Packets the viewer asked to have sent again.
    pub nacked_packets: u64,
    /// Our ICE consent checks it answered, and the round trip of the
    /// latest (seconds): a probe of the path's delay that needs nothing of
    /// the receiver but ICE.
    pub pings_sent: u64,
    pub pings_answered: u64,
    pub ping_rtt: f64,
    /// What we sent it, padding included.
    pub packets_sent: u64,
    pub bytes_sent: u64,
}

/// Where an estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Twcc,
    Remb,
    Loss,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Self::Twcc => "twcc",
            Self::Remb => "remb",
            Self::Loss => "loss",
        }
    }
}

/// The link as estimated now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub source: Source,
    /// What the link is believed to carry (bit/s), capped to `headroom_bps`.
    pub bps: f64,
    /// The estimate fell, or loss rose, within [`CONGESTION_MEMORY`].
    pub congested: bool,
    /// What the viewer received of what we sent (bit/s), once measured.
    pub acked_bps: Option<f64>,
    /// 1.5 × acked + 10 kbit/s: the most the link is trusted with.
    pub headroom_bps: Option<f64>,
    /// Loss fraction, from the latest receiver report.
    pub loss: f64,
    /// Packets the viewer asked for again, per packet sent, over the last
    /// [`RATE_WINDOW`]. Not a loss rate: a receiver asks for a missing
    /// packet again every round trip until it comes.
    pub nack_ratio: f64,
    /// What we sent (bit/s) over the last [`RATE_WINDOW`].
    pub sent_bps: f64,
}

/// The window sent rate and NACK rate are measured over.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// How long a fall of the estimate counts as congestion.
pub const CONGESTION_MEMORY: Duration = Duration::from_secs(1);
/// A source that said nothing for this long is not used.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Loss above this is congestion; below [`LOW_LOSS`] the link is clean.
pub const HIGH_LOSS: f64 = 0.10;
pub const LOW_LOSS: f64 = 0.02;
/// Loss below this is rounding in a receiver report (1/256 is 0.4 %).
pub const ANY_LOSS: f64 = 0.005;
/// Packets asked for again, per packet sent over [`RATE_WINDOW`], above
/// which a receiver without TWCC is losing packets. One packet in a window
/// of a low layer is about 5 %: any NACK at all ends a probe.
pub const NACK_LOSS: f64 = 0.02;
/// Consent checks sent since the last answer above which they are being
/// lost at a bottleneck that overflows (one may still be under way).
pub const PINGS_UNANSWERED: u64 = 3;
/// Two consent checks in a row whose round trip is this much above the
/// lowest are a queue building (one alone may be a busy receiver or a busy
/// camera), and so is one [`QUEUE_DELAY`] above. Lower than that: a check
/// comes several times a second, and a bottleneck that holds 100 ms is
/// half full at 50 ms.
pub const PING_QUEUE_DELAY: f64 = 0.025;
/// What a link whose queue grows is taken to carry, of what was sent.
pub const QUEUED_SHARE: f64 = 0.85;
/// Fewer arrivals than this share of what was sent is a queue building.
pub const DELIVERED: f64 = 0.9;
/// A round trip this much above the link's lowest is a queue building.
pub const QUEUE_DELAY: f64 = 0.05;
/// The lowest round trip is taken over this much recent history, so a
/// route that got longer is learnt again.
pub const BASE_RTT_WINDOW: Duration = Duration::from_secs(30);
/// A fall smaller than this fraction is noise, not congestion.
const FALL: f64 = 0.97;

/// The acknowledged-rate cap.
pub fn headroom(acked_bps: f64) -> f64 {
    1.5 * acked_bps + 10_000.0
}

/// Turns one viewer's feedback over time into [`Estimate`]s.
#[derive(Debug)]
pub struct LinkEstimator {
    last: Heard,
    /// (when, bytes sent, packets sent, packets nacked), oldest first.
    history: VecDeque<(Instant, u64, u64, u64)>,
    twcc_at: Option<Instant>,
    remb_at: Option<Instant>,
    /// The loss-based estimate, for viewers without TWCC or REMB.
    loss_bps: f64,
    /// The last raw estimate of the source in use, to see it fall.
    last_raw: Option<(Source, f64)>,
    fell_at: Option<Instant>,
    loss: f64,
    /// Without TWCC: what the latest receiver report says arrived. It is
    /// known once a report, so a probe steps up only after a report has
    /// seen the step before carried.
    reported_acked: Option<f64>,
    /// (when, round trip) of the recent reports, for the lowest one.
    round_trips: VecDeque<(Instant, f64)>,
    /// (when, highest sequence number, packets sent, bytes sent) at the
    /// latest report.
    last_report: Option<(Instant, u64, u64, u64)>,
    /// The receiver has asked for a packet again: it NACKs, so a window
    /// without NACKs is a window it received.
    nacks_heard: bool,
    /// What the consent checks said, once one was answered.
    pings: Option<Pings>,
}

/// The consent checks as of the latest answer.
#[derive(Debug, Clone, Copy)]
struct Pings {
    /// Checks sent when it came.
    sent_then: u64,
    /// Its round trip was [`PING_QUEUE_DELAY`] above the lowest.
    rising: bool,
    /// A queue: it was [`QUEUE_DELAY`] above, or rising after one that was.
    queued: bool,
}

/// What arrived between two receiver reports.
struct Arrivals {
    /// Of what was sent meanwhile, the share that arrived or was lost
    /// (the highest sequence number's advance per packet sent).
    share: f64,
    /// What arrived, in bit/s.
    bps: f64,
}

impl LinkEstimator {
    /// Starts believing the link carries `initial_bps`.
    pub fn new(initial_bps: f64) -> Self {
        Self {
            last: Heard::default(),
            history: VecDeque::new(),
            twcc_at: None,
            remb_at: None,
            loss_bps: initial_bps,
            last_raw: None,
            fell_at: None,
            loss: 0.0,
            reported_acked: None,
            round_trips: VecDeque::new(),
            last_report: None,
            nacks_heard: false,
            pings: None,
        }
    }

    pub fn update(&mut self, now: Instant, heard: Heard) -> Estimate {
        let new_report = heard.reports > self.last.reports;
        // Counted anew after an ICE restart: any change is an answer.
        let new_ping = heard.pings_answered != self.last.pings_answered && heard.ping_rtt > 0.0;
        if heard.twcc_updates > self.last.twcc_updates {
            self.twcc_at = Some(now);
        }
        if heard.remb_updates > self.last.remb_updates {
            self.remb_at = Some(now);
        }
        self.last = heard;

        self.history.push_back((
            now,
            heard.bytes_sent,
            heard.packets_sent,
            heard.nacked_packets,
        ));
        while self
            .history
            .get(1)
            .is_some_and(|(at, ..)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.history.pop_front();
        }
        let (since, bytes0, packets0, nacked0) = *self.history.front().expect("just pushed");
        let span = now.duration_since(since).as_secs_f64();
        let sent_bps = if span > 0.0 {
            (heard.bytes_sent - bytes0) as f64 * 8.0 / span
        } else {
            0.0
        };
        let packets = heard.packets_sent - packets0;
        let nack_ratio = if packets > 0 {
            ((heard.nacked_packets - nacked0) as f64 / packets as f64).min(1.0)
        } else {
            0.0
        };
        if new_report {
            self.loss = heard.fraction_lost;
        }
        let loss = self.loss;
        let measured = span >= RATE_WINDOW.as_secs_f64() / 2.0;
        self.nacks_heard |= heard.nacked_packets > 0;

        let fresh =
            |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) < SOURCE_TIMEOUT);
        let source = if fresh(self.twcc_at) {
            Source::Twcc
        } else if fresh(self.remb_at) {
            Source::Remb
        } else {
            Source::Loss
        };
        let arrivals = if new_report {
            self.arrivals(now, &heard, loss)
        } else {
            None
        };
        if let Some(arrivals) = &arrivals {
            self.reported_acked = Some(arrivals.bps);
        } else if new_report && measured && self.reported_acked.is_none() {
            self.reported_acked = Some(sent_bps * (1.0 - loss));
        }
        let rtt_rising = new_report && self.queue_delay(now, heard.report_rtt) > QUEUE_DELAY;
        if new_ping {
            let delay = self.queue_delay(now, heard.ping_rtt);
            let rising = delay > PING_QUEUE_DELAY;
            let was_rising = self.pings.is_some_and(|p| p.rising);
            self.pings = Some(Pings {
                sent_then: heard.pings_sent,
                rising,
                queued: rising && (was_rising || delay > QUEUE_DELAY),
            });
        }
        // With TWCC the media's own packets time the path on the viewer's
        // clock: while they arrive as fast as they are sent and their delay
        // does not grow, a late answer to a check is a receiver busy with
        // something else (decoding, on a loaded machine), not a queue.
        let media_delayed = source != Source::Twcc
            || heard.twcc_overusing
            || heard.twcc_acked_bps < sent_bps * DELIVERED;
        // The latest consent checks show a queue (or were lost in one;
        // counts start anew after an ICE restart).
        let pings_queued = self.pings.is_some_and(|p| {
            (p.queued && media_delayed)
                || heard.pings_sent.saturating_sub(p.sent_then) >= PINGS_UNANSWERED
        });
        let queued = rtt_rising || pings_queued || arrivals.is_some_and(|a| a.share < DELIVERED);
        // Without TWCC, NACKs tell of loss within a round trip.
        let nacking = source != Source::Twcc && measured && nack_ratio > NACK_LOSS;
        let carried = if pings_queued { QUEUED_SHARE } else { 1.0 };
        let acked_bps = match source {
            Source::Twcc if heard.twcc_acked_bps > 0.0 => Some(heard.twcc_acked_bps),
            Source::Twcc => None,
            _ if self.nacks_heard && measured => Some(sent_bps * (1.0 - nack_ratio) * carried),
            _ if self.pings.is_some() && measured => Some(sent_bps * carried),
            _ => self.reported_acked,
        };
        let headroom_bps = acked_bps.map(headroom);

        if source == Source::Loss && nacking && nack_ratio > HIGH_LOSS {
            self.loss_bps = sent_bps * (1.0 - nack_ratio) * 0.9;
        } else if source == Source::Loss && pings_queued && measured {
            self.loss_bps = self.loss_bps.min(sent_bps * QUEUED_SHARE);
        } else if source == Source::Loss && new_report && measured {
            if loss > HIGH_LOSS || queued {
                // What got through, with a margin below it.
                self.loss_bps = sent_bps * (1.0 - loss) * 0.9;
            } else if loss < LOW_LOSS
                && let Some(h) = headroom_bps
            {
                self.loss_bps = self.loss_bps.max(h);
            }
        }
        let raw = match source {
            Source::Twcc => heard.twcc_target_bps,
            Source::Remb => heard.remb_bps,
            Source::Loss => self.loss_bps,
        };
        // The loss-based estimate falls only on loss, which is seen directly.
        let fell = match self.last_raw {
            Some((previous, value)) if previous == source && source != Source::Loss => {
                raw < value * FALL
            }
            _ => false,
        };
        // The reports' signs of a queue count whatever the source: TWCC's
        // estimate can sit at its floor after a lossy spell, and then it
        // cannot fall. Without TWCC any loss at all counts too, so a link
        // the stream already fills is not probed.
        let overusing = (source == Source::Twcc && heard.twcc_overusing) || queued;
        let lossy = nacking
            || (new_report && (loss >= LOW_LOSS || (source != Source::Twcc && loss > ANY_LOSS)));
        if fell || overusing || lossy {
            self.fell_at = Some(now);
        }
        self.last_raw = Some((source, raw));
        Estimate {
            source,
            bps: headroom_bps.map_or(raw, |h| raw.min(h)),
            congested: self
                .fell_at
                .is_some_and(|at| now.duration_since(at) < CONGESTION_MEMORY),
            acked_bps,
            headroom_bps,
            loss,
            nack_ratio,
            sent_bps,
        }
    }

    /// What arrived since the previous report, once there is one.
    fn arrivals(&mut self, now: Instant, heard: &Heard, loss: f64) -> Option<Arrivals> {
        let this = (now, heard.highest_seq, heard.packets_sent, heard.bytes_sent);
        let (at, seq, packets, bytes) = self.last_report.replace(this)?;
        let span = now.duration_since(at).as_secs_f64();
        let sent = heard.packets_sent.checked_sub(packets)?;
        if sent == 0 || span <= 0.0 || heard.highest_seq < seq {
            return None;
        }
        let share = ((heard.highest_seq - seq) as f64 / sent as f64).min(1.0);
        let sent_bps = (heard.bytes_sent - bytes) as f64 * 8.0 / span;
        Some(Arrivals {
            share,
            bps: sent_bps * share * (1.0 - loss),
        })
    }

    /// Takes a round trip; how far (seconds) it is above the lowest of the
    /// last [`BASE_RTT_WINDOW`].
    fn queue_delay(&mut self, now: Instant, rtt: f64) -> f64 {
        if rtt <= 0.0 {
            return 0.0;
        }
        while self
            .round_trips
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > BASE_RTT_WINDOW)
        {
            self.round_trips.pop_front();
        }
        self.round_trips.push_back((now, rtt));
        let base = self
            .round_trips
            .iter()
            .map(|(_, rtt)| *rtt)
            .fold(f64::INFINITY, f64::min);
        rtt - base
    }
}
