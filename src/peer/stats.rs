//! A connection's statistics: round-trip time and NACKs copied into its
//! counters for telemetry, and the consent checks of its selected pair for
//! the liveness watch.
//!
//! Owns nothing but the reading. Must not touch the connection otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use webrtc::peer_connection::{PeerConnection, RTCStatsReport, RTCStatsReportEntry, StatsSelector};

use super::SenderCounters;

/// How often a connection's statistics are read and its liveness judged:
/// about as often as ICE asks for consent
/// ([`super::factory::ICE_KEEPALIVE`]), so that the checks' round trips
/// reach the link estimate within a fifth of a second.
pub(super) const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// The consent checks of the selected pair (RFC 7675), as counted by ICE.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Consent {
    pub requests: u64,
    /// Responses that passed the connection's integrity check.
    pub responses: u64,
    /// The round trip of the latest response, in seconds.
    pub rtt: f64,
}

/// Copies RTT and NACK counts from the connection's statistics into its
/// counters, and returns its consent checks.
pub(super) async fn read_stats(pc: &Arc<dyn PeerConnection>, counters: &SenderCounters) -> Consent {
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    take_stats(&report, counters)
}

/// The kind of our candidate in the pair media goes on, as telemetry's
/// `path` names it: `host` (straight from the camera's address), `srflx` or
/// `prflx` (through its NAT), `relay` (through a TURN server). Stored as a
/// number in [`SenderCounters::path`]; 0 while unknown.
const PATHS: [&str; 5] = ["", "host", "srflx", "prflx", "relay"];

/// The name of a stored path, once known.
pub fn path_name(stored: u8) -> Option<&'static str> {
    PATHS
        .get(usize::from(stored))
        .copied()
        .filter(|p| !p.is_empty())
}

/// The stored number of our candidate `candidate_id` (as a pair names it)
/// in `report`, whose own entry for it is `RTCLocalIceCandidate_{id}`: its
/// kind's place in [`PATHS`], 0 when not found.
fn path_of(report: &RTCStatsReport, candidate_id: &str) -> u8 {
    let kind = report.iter().find_map(|e| match e {
        RTCStatsReportEntry::LocalCandidate(c)
            if c.stats.id.strip_prefix("RTCLocalIceCandidate_") == Some(candidate_id) =>
        {
            Some(c.candidate_type.to_string())
        }
        _ => None,
    });
    kind.and_then(|kind| PATHS.iter().skip(1).position(|p| *p == kind))
        .map_or(0, |i| i as u8 + 1)
}

/// [`read_stats`] of a report already read.
pub(super) fn take_stats(report: &RTCStatsReport, counters: &SenderCounters) -> Consent {
    let mut rtt = None;
    let mut nacks = 0u64;
    let mut consent = Consent::default();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::IceCandidatePair(pair) => {
                // The stack fills in the STUN counts of the selected pair
                // alone; the others' stay 0.
                consent.requests += pair.consent_requests_sent;
                consent.responses += pair.responses_received;
                if pair.responses_received > 0 {
                    consent.rtt = pair.current_round_trip_time;
                }
                if pair.nominated && pair.current_round_trip_time > 0.0 {
                    rtt = Some(pair.current_round_trip_time);
                }
                if pair.nominated {
                    counters
                        .path
                        .store(path_of(report, &pair.local_candidate_id), Ordering::Relaxed);
                }
            }
            RTCStatsReportEntry::RemoteInboundRtp(remote)
                if rtt.is_none() && remote.round_trip_time > 0.0 =>
            {
                rtt = Some(remote.round_trip_time);
            }
            RTCStatsReportEntry::OutboundRtp(out) => nacks += u64::from(out.nack_count),
            _ => {}
        }
    }
    if let Some(rtt) = rtt {
        counters
            .rtt_us
            .store((rtt * 1_000_000.0) as u64, Ordering::Relaxed);
    }
    counters.nacks.store(nacks, Ordering::Relaxed);
    consent
}
