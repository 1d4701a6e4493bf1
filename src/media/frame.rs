//! An encoded access unit (or Opus packet), packetized once and shared by
//! every viewer.
//!
//! Packetizing is the last step that is the same for all viewers: the RTP
//! payloads (single NAL units, STAP-A, FU-A) depend only on the frame. What
//! differs per viewer (SSRC, sequence numbers, payload type, timestamp base)
//! is a 12-byte header that each viewer's sender writes itself, so a frame is
//! never copied per viewer: the payloads are reference-counted [`Bytes`].

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

/// RTP payload size; leaves room for RTP, SRTP, UDP and IP headers under a
/// 1280-byte path MTU, the same budget browsers use.
pub const RTP_PAYLOAD_MTU: usize = 1200;

/// The RTP clock of H.264 (RFC 6184).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// One access unit, ready to be sent.
#[derive(Debug)]
pub struct EncodedFrame {
    /// RTP payloads in order; the last one carries the marker bit.
    pub payloads: Vec<Bytes>,
    /// Capture time on the track's RTP clock (90 kHz video, 48 kHz Opus).
    pub rtp_timestamp: u32,
    /// An IDR frame, where a new or recovering viewer can start decoding.
    pub keyframe: bool,
    /// Size of the encoded access unit in bytes.
    pub size: usize,
    /// The access unit itself (Annex B), shared with the payloads' owner;
    /// for snapshots.
    pub access_unit: Bytes,
}

/// Splits access units into RTP payloads. Remembers SPS/PPS so that every
/// key frame carries them (in a STAP-A) for viewers that join late.
#[derive(Debug, Default)]
pub struct FramePacketizer {
    payloader: H264Payloader,
}

impl FramePacketizer {
    /// Packetizes one Annex-B access unit captured `capture_ns` after the
    /// capture epoch ([`super::clock`]).
    pub fn packetize(
        &mut self,
        access_unit: &Bytes,
        capture_ns: u64,
        keyframe: bool,
    ) -> Result<EncodedFrame, rtc::shared::error::Error> {
        let payloads = self.payloader.payload(RTP_PAYLOAD_MTU, access_unit)?;
        Ok(EncodedFrame {
            payloads,
            rtp_timestamp: super::clock::rtp_ticks(capture_ns, VIDEO_CLOCK_RATE),
            keyframe,
            size: access_unit.len(),
            access_unit: access_unit.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_nal_units_are_fragmented_under_the_mtu() {
        let mut au = vec![0, 0, 0, 1, 0x65];
        au.extend(std::iter::repeat_n(0xAB, 5000));
        let frame = FramePacketizer::default()
            .packetize(&Bytes::from(au), 1_000_000_000, true)
            .unwrap();
        assert!(frame.payloads.len() >= 5);
        assert!(frame.payloads.iter().all(|p| p.len() <= RTP_PAYLOAD_MTU));
        assert_eq!(frame.rtp_timestamp, 90_000);
        // FU-A: type 28 with the original NAL type in the FU header.
        assert_eq!(frame.payloads[0][0] & 0x1f, 28);
        assert_eq!(frame.payloads[0][1] & 0x1f, 5);
    }
}
