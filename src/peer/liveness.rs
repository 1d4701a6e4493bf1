//! Whether a connected viewer is still there, judged from what it sends
//! back. Sans I/O: time and counters in, a verdict out.
//!
//! ICE alone can say `connected` for a connection whose other end is gone:
//! a viewer that rebuilt its peer connection in place answers our checks
//! from the new one, while the DTLS association and the SRTP keys of ours
//! are dead. A receiving browser sends RTCP (receiver reports, feedback)
//! about every second, so a connection we send on that has heard no RTCP for
//! [`RTCP_SILENCE`] has failed. A DTLS `close_notify` from the viewer ends
//! the connection at once.

use std::time::{Duration, Instant};

/// How long a connection we send on may go without RTCP from the viewer.
/// Browsers report about every second and GStreamer's `webrtcbin` every
/// few seconds; five seconds of silence is no hiccup.
pub const RTCP_SILENCE: Duration = Duration::from_secs(5);

/// How often the peer task asks.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Why a connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The viewer closed its DTLS association (`close_notify`).
    ClosedByPeer,
    /// No RTCP for [`RTCP_SILENCE`] while we were sending.
    Silent,
}

/// What the peer task reads off its connection at each check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed {
    pub rtcp_received: u64,
    pub packets_sent: u64,
    pub dtls_closed: bool,
}

#[derive(Debug, Default)]
pub struct Liveness {
    /// Set while the connection is up: since when the viewer is silent, and
    /// the RTCP count it had then.
    watch: Option<(Instant, u64)>,
}

impl Liveness {
    /// The connection is up (again): the watch starts now.
    pub fn connected(&mut self, now: Instant, observed: Observed) {
        self.watch = Some((now, observed.rtcp_received));
    }

    /// The connection is down: ICE's own timers judge it meanwhile.
    pub fn disconnected(&mut self) {
        self.watch = None;
    }

    pub fn check(&mut self, now: Instant, observed: Observed) -> Option<Gone> {
        let (since, rtcp) = self.watch.as_mut()?;
        if observed.dtls_closed {
            return Some(Gone::ClosedByPeer);
        }
        // Nothing sent yet (no picture): nothing to report on.
        if observed.rtcp_received != *rtcp || observed.packets_sent == 0 {
            *since = now;
            *rtcp = observed.rtcp_received;
            return None;
        }
        (now >= *since + RTCP_SILENCE).then_some(Gone::Silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(rtcp_received: u64, packets_sent: u64) -> Observed {
        Observed {
            rtcp_received,
            packets_sent,
            dtls_closed: false,
        }
    }

    #[test]
    fn a_viewer_that_reports_is_alive_and_one_that_falls_silent_is_gone() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(0, 0));
        let mut rtcp = 0;
        for s in 1..=20 {
            rtcp += 1;
            let at = t0 + Duration::from_secs(s);
            assert_eq!(l.check(at, seen(rtcp, 100 * s)), None, "at {s} s");
        }
        let last = t0 + Duration::from_secs(20);
        assert_eq!(
            l.check(
                last + RTCP_SILENCE - Duration::from_millis(1),
                seen(rtcp, 9999)
            ),
            None
        );
        assert_eq!(
            l.check(last + RTCP_SILENCE, seen(rtcp, 9999)),
            Some(Gone::Silent)
        );
    }

    #[test]
    fn a_viewer_that_never_reports_is_gone_after_the_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(7, 0));
        assert_eq!(l.check(t0, seen(7, 10)), None);
        assert_eq!(l.check(t0 + RTCP_SILENCE, seen(7, 500)), Some(Gone::Silent));
    }

    #[test]
    fn nothing_is_judged_before_we_send_or_while_disconnected() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        assert_eq!(l.check(t0 + RTCP_SILENCE * 9, seen(0, 100)), None);
        l.connected(t0, seen(0, 0));
        // No picture yet: silence is expected.
        assert_eq!(l.check(t0 + RTCP_SILENCE * 2, seen(0, 0)), None);
        // The clock starts with the first packet sent.
        let first = t0 + RTCP_SILENCE * 2;
        assert_eq!(l.check(first + RTCP_SILENCE / 2, seen(0, 3)), None);
        l.disconnected();
        assert_eq!(l.check(first + RTCP_SILENCE * 3, seen(0, 3)), None);
    }

    #[test]
    fn a_close_notify_ends_it_at_once() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.connected(t0, seen(0, 0));
        let closed = Observed {
            dtls_closed: true,
            ..seen(1, 1)
        };
        assert_eq!(l.check(t0, closed), Some(Gone::ClosedByPeer));
    }
}
