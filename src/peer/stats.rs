//! A connection's statistics copied into its counters: round-trip time and
//! NACKs, for telemetry.
//!
//! Owns nothing but the reading. Must not touch the connection otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use webrtc::peer_connection::{PeerConnection, RTCStatsReportEntry, StatsSelector};

use super::SenderCounters;

/// How often a connection's statistics (RTT, NACKs) are read.
pub(super) const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Copies RTT and NACK counts from the connection's statistics.
pub(super) async fn read_stats(pc: &Arc<dyn PeerConnection>, counters: &SenderCounters) {
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    let mut rtt = None;
    let mut nacks = 0u64;
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::IceCandidatePair(pair)
                if pair.nominated && pair.current_round_trip_time > 0.0 =>
            {
                rtt = Some(pair.current_round_trip_time);
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
}
