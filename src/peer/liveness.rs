//! Whether a connected viewer is still there, judged by what a live
//! receiver cannot fail to do. Sans I/O: time and counters in, a verdict
//! out.
//!
//! ICE keeps asking for consent (RFC 7675): a STUN binding request on the
//! selected pair every [`crate::peer::factory::ICE_KEEPALIVE`], which the
//! viewer's ICE agent answers with a response that carries a
//! MESSAGE-INTEGRITY made with this connection's remote password. Every
//! WebRTC implementation answers them, whatever it does about RTCP, and a
//! peer connection rebuilt in place has new credentials and cannot. So a
//! connection whose consent checks have gone unanswered for
//! [`CONSENT_EXPIRY`] while we kept asking has lost consent, and is over.
//! RTCP decrypted on this connection (its SRTCP keys are this DTLS
//! association's) is evidence of life too, but never the only one: a
//! receiver that follows RFC 3550 reports every 5 s on average, drawn from
//! 0.5 to 1.5 times that, so long gaps are normal. A DTLS `close_notify`
//! from the viewer ends the connection at once.
//!
//! ICE's own timers (any packet from the viewer's address, see
//! [`crate::peer::factory::ICE_DISCONNECTED`]) notice a viewer that went
//! silent altogether sooner; consent catches one that still sends from its
//! address without being the peer we keyed.

use std::time::{Duration, Instant};

/// How long our consent checks may go unanswered. RFC 7675 lets consent
/// last 30 s; we ask several times a second, so this is dozens of checks in a row
/// lost or unanswered, which a saturated link that drops a share of them
/// does not produce, and a rebuilt or vanished peer always does.
pub const CONSENT_EXPIRY: Duration = Duration::from_secs(10);

/// Why a connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The viewer closed its DTLS association (`close_notify`).
    ClosedByPeer,
    /// Our consent checks went unanswered for [`CONSENT_EXPIRY`], and no
    /// RTCP came either.
    ConsentExpired,
}

/// What the peer task reads off its connection at each check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Consent checks (binding requests on the selected pair) sent.
    pub consent_requests: u64,
    /// Binding success responses that passed this connection's integrity
    /// check.
    pub consent_responses: u64,
    pub rtcp_received: u64,
    pub dtls_closed: bool,
}

/// Since when the viewer has given no evidence of life, and what it had
/// given by then.
#[derive(Debug, Clone, Copy)]
struct Watch {
    since: Instant,
    last: Observed,
}

#[derive(Debug, Default)]
pub struct Liveness {
    /// Set while the connection is up.
    watch: Option<Watch>,
}

impl Liveness {
    /// The connection is up (again): the watch starts now.
    pub fn connected(&mut self, now: Instant, observed: Observed) {
        self.watch = Some(Watch {
            since: now,
            last: observed,
        });
    }

    /// The connection is down: ICE's own timers judge it meanwhile.
    pub fn disconnected(&mut self) {
        self.watch = None;
    }

    pub fn check(&mut self, now: Instant, observed: Observed) -> Option<Gone> {
        let watch = self.watch.as_mut()?;
        if observed.dtls_closed {
            return Some(Gone::ClosedByPeer);
        }
        let answered = observed.consent_responses != watch.last.consent_responses;
        let reported = observed.rtcp_received != watch.last.rtcp_received;
        // A restart of ICE starts the pair's counts afresh: whatever changed
        // is news, not only what grew.
        let asked = observed.consent_requests != watch.last.consent_requests;
        if answered || reported {
            *watch = Watch {
                since: now,
                last: observed,
            };
            return None;
        }
        // Only checks sent since the last evidence can go unanswered.
        (asked && now >= watch.since + CONSENT_EXPIRY).then_some(Gone::ConsentExpired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(consent_requests: u64, consent_responses: u64, rtcp_received: u64) -> Observed {
        Observed {
            consent_requests,
            consent_responses,
            rtcp_received,
            dtls_closed: false,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// A receiver that answers every consent check and reports as RFC 3550
    /// lets it: every 5 s on average, at most 1.5 times that, and here
    /// never at all for a minute.
    #[test]
    fn a_viewer_that_answers_consent_is_alive_however_rarely_it_reports() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(0, 0, 0));
        for s in 1..=60 {
            let at = t0 + SECOND * s;
            assert_eq!(l.check(at, seen(s.into(), s.into(), 0)), None, "at {s} s");
        }
    }

    #[test]
    fn a_viewer_that_stops_answering_loses_consent_after_the_expiry() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(0, 0, 0));
        assert_eq!(l.check(t0 + SECOND, seen(1, 1, 3)), None);
        let last = t0 + SECOND;
        // Checks go on; nothing answers them, no RTCP.
        for s in 1..10 {
            let at = last + SECOND * s;
            assert_eq!(l.check(at, seen(1 + u64::from(s), 1, 3)), None, "at +{s} s");
        }
        assert_eq!(
            l.check(last + CONSENT_EXPIRY, seen(11, 1, 3)),
            Some(Gone::ConsentExpired)
        );
    }

    /// On a link the stream saturates some checks are lost: a response now
    /// and then keeps consent.
    #[test]
    fn lost_checks_with_some_answered_keep_consent() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(0, 0, 0));
        let mut answered = 0;
        for s in 1..=120u64 {
            // Four of every five checks lost.
            if s % 5 == 0 {
                answered += 1;
            }
            let at = t0 + SECOND * s as u32;
            assert_eq!(l.check(at, seen(s, answered, 0)), None, "at {s} s");
        }
    }

    #[test]
    fn rtcp_is_evidence_too_but_silence_without_checks_is_not_judged() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(5, 5, 0));
        // No response, but RTCP on this connection's keys.
        assert_eq!(l.check(t0 + SECOND * 9, seen(14, 5, 1)), None);
        assert_eq!(l.check(t0 + SECOND * 18, seen(23, 5, 2)), None);
        // Nothing at all, but no check was sent either (ICE keepalives off):
        // there was nothing to answer.
        assert_eq!(l.check(t0 + SECOND * 60, seen(23, 5, 2)), None);
    }

    /// An ICE restart makes a new pair whose counts start at zero.
    #[test]
    fn counts_that_start_afresh_are_evidence() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(40, 40, 0));
        assert_eq!(l.check(t0 + SECOND * 9, seen(2, 1, 0)), None);
        assert_eq!(l.check(t0 + SECOND * 18, seen(11, 10, 0)), None);
    }

    #[test]
    fn nothing_is_judged_while_disconnected() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        assert_eq!(l.check(t0 + CONSENT_EXPIRY * 9, seen(9, 0, 0)), None);
        l.connected(t0, seen(0, 0, 0));
        l.disconnected();
        assert_eq!(l.check(t0 + CONSENT_EXPIRY * 3, seen(30, 0, 0)), None);
    }

    #[test]
    fn a_close_notify_ends_it_at_once() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(0, 0, 0));
        let closed = Observed {
            dtls_closed: true,
            ..seen(1, 1, 1)
        };
        assert_eq!(l.check(t0, closed), Some(Gone::ClosedByPeer));
    }
}
