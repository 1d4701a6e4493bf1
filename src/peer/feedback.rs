//! What a viewer says back about our stream, gathered for telemetry and for
//! its layer choice ([`crate::adapt`]).
//!
//! An interceptor at the end of the chain sees every RTCP packet after the
//! stack's own interceptors (reports, NACK, congestion control) have: it
//! counts them (the viewer's sign of life, see [`super::liveness`]), takes
//! receiver-report loss, REMB and NACK counts into the viewer's
//! [`Feedback`], and hands PLI and FIR (key-frame requests) to the
//! application. webrtc 0.21 ends inbound RTCP at the end of its chain; only
//! packets marked `DeliverToApplication` reach `TrackLocal::poll`, so this
//! one marks the key-frame requests and lets the rest stop here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::SenderCounters;
use crate::adapt::Heard;

/// One viewer's feedback so far, written by the interceptors of its
/// connection and read by its sender. Rates are whole bit/s.
#[derive(Debug, Default)]
pub struct Feedback {
    pub twcc_updates: AtomicU64,
    pub twcc_target_bps: AtomicU64,
    pub twcc_acked_bps: AtomicU64,
    pub twcc_overusing: AtomicBool,
    pub remb_updates: AtomicU64,
    pub remb_bps: AtomicU64,
    pub reports: AtomicU64,
    /// Of the latest report, in 1/256 (RTCP's own unit).
    pub fraction_lost: AtomicU64,
    /// The round trip of the latest report that has one, in microseconds.
    pub report_rtt_us: AtomicU64,
    /// The extended highest sequence number of the latest report.
    pub highest_seq: AtomicU64,
    pub nacked_packets: AtomicU64,
    /// Our consent checks sent, those the viewer answered, and the round
    /// trip of the latest, in microseconds (written by the peer task, see
    /// [`super::stats`]).
    pub pings_sent: AtomicU64,
    pub pings_answered: AtomicU64,
    pub ping_rtt_us: AtomicU64,
    /// The SSRC of our video stream: the reports about it are the ones
    /// taken (0 until the track exists).
    pub video_ssrc: AtomicU32,
}

impl Feedback {
    /// What has been heard, with what was sent, as the estimator takes it.
    pub fn heard(&self, sent: &SenderCounters) -> Heard {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Heard {
            twcc_updates: load(&self.twcc_updates),
            twcc_target_bps: load(&self.twcc_target_bps) as f64,
            twcc_acked_bps: load(&self.twcc_acked_bps) as f64,
            twcc_overusing: self.twcc_overusing.load(Ordering::Relaxed),
            remb_updates: load(&self.remb_updates),
            remb_bps: load(&self.remb_bps) as f64,
            reports: load(&self.reports),
            fraction_lost: load(&self.fraction_lost) as f64 / 256.0,
            report_rtt: load(&self.report_rtt_us) as f64 / 1e6,
            highest_seq: load(&self.highest_seq),
            nacked_packets: load(&self.nacked_packets),
            pings_sent: load(&self.pings_sent),
            pings_answered: load(&self.pings_answered),
            ping_rtt: load(&self.ping_rtt_us) as f64 / 1e6,
            packets_sent: load(&sent.packets_sent),
            bytes_sent: load(&sent.bytes_sent),
        }
    }

    /// Takes the consent checks sent and answered so far and the latest
    /// one's round trip (seconds).
    pub fn take_consent(&self, sent: u64, answered: u64, rtt: f64) {
        self.ping_rtt_us
            .store((rtt * 1e6) as u64, Ordering::Relaxed);
        self.pings_sent.store(sent, Ordering::Relaxed);
        self.pings_answered.store(answered, Ordering::Relaxed);
    }

    /// Takes what one RTCP packet says about our stream.
    fn take(&self, packet: &dyn rtc::rtcp::Packet) {
        let any = packet.as_any();
        let blocks: &[ReceptionReport] = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            &rr.reports
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            &sr.reports
        } else {
            &[]
        };
        // The sound's own report block says nothing about the video's link
        // budget, which is what these feed.
        let video = self.video_ssrc.load(Ordering::Relaxed);
        if let Some(block) = blocks.iter().find(|b| b.ssrc == video) {
            self.fraction_lost
                .store(u64::from(block.fraction_lost), Ordering::Relaxed);
            self.highest_seq
                .store(u64::from(block.last_sequence_number), Ordering::Relaxed);
            if let Some(rtt) = round_trip(block, SystemTime::now()) {
                self.report_rtt_us
                    .store(rtt.as_micros() as u64, Ordering::Relaxed);
            }
            self.reports.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            self.remb_bps.store(remb.bitrate as u64, Ordering::Relaxed);
            self.remb_updates.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            let lost: usize = nack.nacks.iter().map(|pair| pair.packet_list().len()).sum();
            self.nacked_packets
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
    }
}

/// The round trip a reception report gives (RFC 3550 §6.4.1): now, less
/// when the sender report it answers was sent (LSR), less how long the
/// viewer held it (DLSR), all in the middle 32 bits of NTP time. The stack
/// stamps its sender reports with the wall clock, so `now` is too. None
/// before the viewer has had a sender report, and for a value no link has
/// (a clock step).
fn round_trip(block: &ReceptionReport, now: SystemTime) -> Option<Duration> {
    if block.last_sender_report == 0 {
        return None;
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).ok()?;
    let ntp_seconds = since_epoch.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    let middle = (((ntp_seconds << 32) | fraction) >> 16) as u32;
    let rtt = middle
        .wrapping_sub(block.last_sender_report)
        .wrapping_sub(block.delay);
    let rtt = Duration::from_secs_f64(f64::from(rtt) / 65536.0);
    (rtt < MAX_ROUND_TRIP).then_some(rtt)
}

/// Seconds from 1900 (NTP's epoch) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Longer than any round trip: a longer one is a clock step.
const MAX_ROUND_TRIP: Duration = Duration::from_secs(10);

/// The position in the chain: after every default interceptor.
pub const SLOT: usize = 14_000;

pub struct FeedbackInterceptor {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    counters: Arc<SenderCounters>,
    feedback: Arc<Feedback>,
}

impl FeedbackInterceptor {
    pub fn new(counters: Arc<SenderCounters>, feedback: Arc<Feedback>) -> Self {
        Self {
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
            counters,
            feedback,
        }
    }
}

/// Whether an RTCP packet asks for a key frame.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            self.counters
                .rtcp_received
                .fetch_add(packets.len() as u64, Ordering::Relaxed);
            for packet in packets {
                self.feedback.take(packet.as_ref());
            }
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for FeedbackInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(lsr: u32, dlsr: u32) -> ReceptionReport {
        ReceptionReport {
            last_sender_report: lsr,
            delay: dlsr,
            ..Default::default()
        }
    }

    #[test]
    fn the_round_trip_is_now_less_the_report_it_answers_and_the_hold() {
        // 1 s after the epoch: NTP 2208988801.0, middle bits 0x83AA7E81_0000 >> 16.
        let now = UNIX_EPOCH + Duration::from_secs(1);
        let middle = ((NTP_UNIX_OFFSET + 1) << 16) as u32;
        // The report answered was sent 250 ms ago, held 200 ms: 50 ms.
        let lsr = middle.wrapping_sub(65536 / 4);
        let rtt = round_trip(&block(lsr, 65536 / 5), now).expect("a round trip");
        assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
    }

    #[test]
    fn no_round_trip_before_a_sender_report_or_across_a_clock_step() {
        let now = UNIX_EPOCH + Duration::from_secs(1);
        assert_eq!(round_trip(&block(0, 0), now), None);
        let middle = ((NTP_UNIX_OFFSET + 1) << 16) as u32;
        // An answer to a report "from the future": the clock went back.
        assert_eq!(round_trip(&block(middle.wrapping_add(65536), 0), now), None);
    }
}
