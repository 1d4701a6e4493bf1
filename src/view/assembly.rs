//! H.264 access units from a camera's RTP packets, in arrival order.
//!
//! The camera sends more than the encoder's packets: padding-only packets
//! (an empty payload once RTP padding is stripped), filler-data NAL units
//! (type 12) inside a frame while it probes a viewer's link, and
//! retransmissions of packets already received or given up on. None of
//! them may cost the frame being assembled: an empty payload is skipped
//! before the depacketizer (which would reject it), a filler NAL unit is
//! appended like any other (decoders skip it), and a packet whose sequence
//! number is not newer than the last one is dropped. A layer switch is no
//! event here: it arrives on the same stream as an IDR with new parameter
//! sets, which the decoder handles.
//!
//! A frame ends at the packet with the marker bit. Pure: no clock, no I/O.

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// A jump in sequence numbers larger than this is a restarted stream, not
/// loss.
const MAX_GAP: u16 = 1000;

/// One track's reassembly.
#[derive(Debug, Default)]
pub struct Assembler {
    depacketizer: H264Packet,
    access_unit: BytesMut,
    last_sequence: Option<u16>,
    lost: u64,
    stale: u64,
}

impl Assembler {
    /// Takes one packet; the access unit it completes, if it does.
    pub fn push(&mut self, packet: &rtp::Packet) -> Option<Bytes> {
        let seq = packet.header.sequence_number;
        if let Some(last) = self.last_sequence {
            let ahead = seq.wrapping_sub(last);
            if ahead == 0 || ahead >= 0x8000 {
                self.stale += 1;
                return None;
            }
            if ahead - 1 < MAX_GAP {
                self.lost += u64::from(ahead - 1);
            }
        }
        self.last_sequence = Some(seq);
        if packet.payload.is_empty() {
            return None;
        }
        match self.depacketizer.depacketize(&packet.payload) {
            Ok(data) => self.access_unit.extend_from_slice(&data),
            Err(_) => {
                self.access_unit.clear();
                return None;
            }
        }
        if !packet.header.marker || self.access_unit.is_empty() {
            return None;
        }
        Some(self.access_unit.split().freeze())
    }

    /// Packets never received, from the gaps in sequence numbers.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Packets dropped as duplicates or older than one already taken.
    pub fn stale(&self) -> u64 {
        self.stale
    }
}

/// Whether an Annex-B access unit holds an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    access_unit
        .windows(4)
        .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0x8c];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02, 0x03];
    const FILLER: &[u8] = &[0x0c, 0xff, 0xff, 0xff, 0x80];

    fn packet(seq: u16, marker: bool, payload: &[u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                sequence_number: seq,
                marker,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
            .collect()
    }

    #[test]
    fn idr_slices_mark_key_frames() {
        assert!(is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 9]));
        assert!(!is_keyframe(&[0, 0, 0, 1, 0x41, 9, 9]));
    }

    #[test]
    fn a_frame_ends_at_the_marker() {
        let mut a = Assembler::default();
        assert_eq!(a.push(&packet(1, false, SPS)), None);
        assert_eq!(a.push(&packet(2, false, PPS)), None);
        let frame = a.push(&packet(3, true, IDR)).unwrap();
        assert_eq!(&frame[..], annex_b(&[SPS, PPS, IDR]));
        assert!(is_keyframe(&frame));
        let next = a.push(&packet(4, true, SLICE)).unwrap();
        assert_eq!(&next[..], annex_b(&[SLICE]));
        assert_eq!((a.lost(), a.stale()), (0, 0));
    }

    #[test]
    fn padding_only_packets_are_skipped_inside_and_between_frames() {
        let mut a = Assembler::default();
        assert_eq!(a.push(&packet(1, false, SPS)), None);
        assert_eq!(a.push(&packet(2, false, &[])), None);
        assert_eq!(a.push(&packet(3, false, PPS)), None);
        let frame = a.push(&packet(4, true, IDR)).unwrap();
        assert_eq!(&frame[..], annex_b(&[SPS, PPS, IDR]));
        assert_eq!(a.push(&packet(5, false, &[])), None);
        assert_eq!(a.push(&packet(6, false, &[])), None);
        let next = a.push(&packet(7, true, SLICE)).unwrap();
        assert_eq!(&next[..], annex_b(&[SLICE]));
        assert_eq!(a.lost(), 0, "padding is not loss");
    }

    #[test]
    fn filler_inside_a_frame_is_kept_in_it() {
        let mut a = Assembler::default();
        a.push(&packet(10, false, SLICE));
        a.push(&packet(11, false, FILLER));
        a.push(&packet(12, false, FILLER));
        let frame = a.push(&packet(13, true, SLICE)).unwrap();
        assert_eq!(&frame[..], annex_b(&[SLICE, FILLER, FILLER, SLICE]));
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let mut a = Assembler::default();
        a.push(&packet(100, false, SPS));
        // A retransmission of what came already, and one from before.
        assert_eq!(a.push(&packet(100, false, SPS)), None);
        assert_eq!(a.push(&packet(99, true, SLICE)), None);
        a.push(&packet(101, false, PPS));
        let frame = a.push(&packet(102, true, IDR)).unwrap();
        assert_eq!(&frame[..], annex_b(&[SPS, PPS, IDR]));
        assert_eq!((a.lost(), a.stale()), (0, 2));
    }

    #[test]
    fn gaps_count_as_loss_across_the_wrap() {
        let mut a = Assembler::default();
        a.push(&packet(65_534, true, SLICE));
        let frame = a.push(&packet(2, true, SLICE));
        assert!(frame.is_some());
        assert_eq!(a.lost(), 3, "65535, 0 and 1");
        // Packets from before the wrap are old now.
        assert_eq!(a.push(&packet(65_535, true, SLICE)), None);
        assert_eq!(a.stale(), 1);
    }

    #[test]
    fn a_new_resolution_at_an_idr_is_just_the_next_frame() {
        let sps_720: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0x8d, 0x68];
        let mut a = Assembler::default();
        a.push(&packet(1, false, SPS));
        a.push(&packet(2, false, PPS));
        assert!(a.push(&packet(3, true, IDR)).is_some());
        assert!(a.push(&packet(4, true, SLICE)).is_some());
        a.push(&packet(5, false, sps_720));
        a.push(&packet(6, false, PPS));
        let switched = a.push(&packet(7, true, IDR)).unwrap();
        assert_eq!(&switched[..], annex_b(&[sps_720, PPS, IDR]));
    }
}
