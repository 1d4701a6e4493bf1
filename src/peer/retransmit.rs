//! A budget for retransmissions, so that a viewer's NACKs cannot flood its
//! own link.
//!
//! The stack's NACK responder sends again every packet a NACK names, every
//! time it is named. Receivers ask again every round trip until a packet
//! comes (webrtc-rs's generator without limit, every 100 ms, over 512
//! packets), so on a link that already drops, retransmissions of
//! retransmissions took thirty times the stream's own rate and the link
//! delivered almost nothing. This interceptor sits just wire-ward of the
//! responder and thins each NACK before the responder reads it: a packet is
//! sent again at most once per [`RETRY_AFTER`], and retransmissions stay
//! within [`SHARE`] of the packets sent (at least [`FLOOR`] a second).
//! Packets sent before the latest key frame are never sent again: the
//! receiver decodes that key frame without them, and on a link that has
//! just narrowed (a layer switch starts at a key frame) they would take
//! the room the key frame needs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::sender::SenderCounters;

/// The position in the chain: wire-ward of the NACK responder (4 000).
pub const SLOT: usize = 3_500;
/// One packet is sent again at most this often.
pub const RETRY_AFTER: Duration = Duration::from_millis(250);
/// Retransmissions may be this share of the packets sent.
pub const SHARE: f64 = 0.1;
/// And at least this many a second.
pub const FLOOR: f64 = 10.0;
/// Packets sent are counted over this window.
const WINDOW: Duration = Duration::from_secs(1);

/// The first packet of a key frame: its SSRC and sequence number, packed
/// into one word so that the retransmission budget reads both at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeMark {
    pub ssrc: u32,
    pub sequence: u16,
}

impl KeyframeMark {
    const SET: u64 = 1 << 48;

    pub fn store(self, at: &AtomicU64) {
        let word = Self::SET | (u64::from(self.ssrc) << 16) | u64::from(self.sequence);
        at.store(word, Ordering::Relaxed);
    }

    pub fn load(at: &AtomicU64) -> Option<Self> {
        let word = at.load(Ordering::Relaxed);
        (word & Self::SET != 0).then_some(Self {
            ssrc: (word >> 16) as u32,
            sequence: word as u16,
        })
    }

    /// Whether packet `sequence` of `ssrc` was sent before this key frame,
    /// which a receiver decodes without it.
    pub fn supersedes(self, ssrc: u32, sequence: u16) -> bool {
        ssrc == self.ssrc && (sequence.wrapping_sub(self.sequence) as i16) < 0
    }
}

pub struct RetransmitBudget {
    /// The sender's, for where its latest key frame starts.
    counters: Arc<SenderCounters>,
    /// When each recently named packet was last let through, per SSRC.
    granted: HashMap<(u32, u16), Instant>,
    /// When our own (original) packets left, over the last [`WINDOW`].
    sent: VecDeque<Instant>,
    tokens: f64,
    refilled: Option<Instant>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RetransmitBudget {
    pub fn new(counters: Arc<SenderCounters>) -> Self {
        Self {
            counters,
            granted: HashMap::new(),
            sent: VecDeque::new(),
            tokens: 0.0,
            refilled: None,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn allowance(&self) -> f64 {
        (self.sent.len() as f64 / WINDOW.as_secs_f64() * SHARE).max(FLOOR)
    }

    fn refill(&mut self, now: Instant) {
        let allowance = self.allowance();
        let elapsed = self
            .refilled
            .replace(now)
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        self.tokens = (self.tokens + elapsed * allowance).min(allowance);
        self.granted
            .retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
    }

    /// The NACK with only what may be sent again, or `None` for nothing.
    fn thin(&mut self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let mut allowed = Vec::new();
        let keyframe = KeyframeMark::load(&self.counters.keyframe_mark);
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                let key = (nack.media_ssrc, seq);
                if self.tokens < 1.0
                    || self.granted.contains_key(&key)
                    || keyframe.is_some_and(|k| k.supersedes(nack.media_ssrc, seq))
                {
                    continue;
                }
                self.tokens -= 1.0;
                self.granted.insert(key, now);
                allowed.push(seq);
            }
        }
        (!allowed.is_empty()).then(|| TransportLayerNack {
            nacks: nack_pairs_from_sequence_numbers(&allowed),
            ..nack.clone()
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RetransmitBudget {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets
                .iter()
                .any(|p| p.as_any().is::<TransportLayerNack>())
        {
            self.refill(msg.now);
            let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
            for packet in packets {
                match packet.as_any().downcast_ref::<TransportLayerNack>() {
                    Some(nack) => {
                        if let Some(thinned) = self.thin(msg.now, nack) {
                            kept.push(Box::new(thinned));
                        }
                    }
                    None => kept.push(packet.clone()),
                }
            }
            msg.message.packet = Packet::Rtcp(kept);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtp(_))
            && !msg.message.has(&Attribute::Retransmission)
        {
            self.sent.push_back(msg.now);
            while self
                .sent
                .front()
                .is_some_and(|at| msg.now.duration_since(*at) > WINDOW)
            {
                self.sent.pop_front();
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RetransmitBudget {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nack(seqs: &[u16]) -> TransportLayerNack {
        TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        }
    }

    fn granted(n: &Option<TransportLayerNack>) -> Vec<u16> {
        n.iter()
            .flat_map(|n| n.nacks.iter().flat_map(|p| p.packet_list()))
            .collect()
    }

    #[test]
    fn a_packet_named_again_and_again_is_sent_once_per_retry_interval() {
        let start = Instant::now();
        let mut budget = RetransmitBudget::new(Arc::default());
        budget.refill(start);
        budget.tokens = FLOOR;
        let first = budget.thin(start, &nack(&[10, 11, 12]));
        assert_eq!(granted(&first), [10, 11, 12]);
        let at = start + Duration::from_millis(100);
        budget.refill(at);
        assert_eq!(granted(&budget.thin(at, &nack(&[10, 11, 12, 13]))), [13]);
        let later = start + RETRY_AFTER + Duration::from_millis(10);
        budget.refill(later);
        assert_eq!(granted(&budget.thin(later, &nack(&[10]))), [10]);
    }

    #[test]
    fn retransmissions_stay_within_their_share_of_what_is_sent() {
        let start = Instant::now();
        let mut budget = RetransmitBudget::new(Arc::default());
        // 200 packets a second: 20 retransmissions a second.
        for i in 0..200 {
            budget.sent.push_back(start + Duration::from_millis(i * 5));
        }
        let mut total = 0;
        for step in 1..=10u16 {
            let at = start + Duration::from_millis(u64::from(step) * 100);
            budget.refill(at);
            let seqs: Vec<u16> = (step * 100..step * 100 + 100).collect();
            total += granted(&budget.thin(at, &nack(&seqs))).len();
        }
        assert!((15..=25).contains(&total), "{total} in one second");
    }

    #[test]
    fn packets_before_the_latest_key_frame_are_not_sent_again() {
        let start = Instant::now();
        let mut budget = RetransmitBudget::new(Arc::default());
        budget.refill(start);
        budget.tokens = FLOOR;
        KeyframeMark {
            ssrc: 7,
            sequence: 2,
        }
        .store(&budget.counters.keyframe_mark);
        // Sequence numbers wrap: 65 535 comes before 2, 3 after it.
        assert_eq!(
            granted(&budget.thin(start, &nack(&[65_535, 1, 2, 3]))),
            [2, 3]
        );
        let other = TransportLayerNack {
            media_ssrc: 8,
            ..nack(&[1])
        };
        assert_eq!(
            granted(&budget.thin(start, &other)),
            [1],
            "another stream's"
        );
    }
}
