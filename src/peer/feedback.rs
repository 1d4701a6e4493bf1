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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

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
    pub nacked_packets: AtomicU64,
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
            nacked_packets: load(&self.nacked_packets),
            packets_sent: load(&sent.packets_sent),
            bytes_sent: load(&sent.bytes_sent),
        }
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
        // A camera sends one stream per connection: any block is about it.
        if let Some(block) = blocks.first() {
            self.fraction_lost
                .store(u64::from(block.fraction_lost), Ordering::Relaxed);
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
