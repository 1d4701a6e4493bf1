//! Probing padding: H.264 filler-data NAL units added to a viewer's frames,
//! so that its link is measured at a higher layer's rate before the viewer
//! is switched up.
//!
//! RTP padding (the P bit) would be the textbook tool, but an RTP packet can
//! carry at most 255 bytes of it, and a probe at a layer's rate would need
//! hundreds of packets a second. Filler data (NAL type 12) is what hardware
//! encoders pad constant-bitrate streams with: every decoder skips it, and
//! each packet carries a full payload. The filler packets go inside the
//! frame, before its last packet, so the marker bit stays where it was.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// The size of one filler payload, under the RTP payload budget.
pub const FILLER_SIZE: usize = 1100;
/// Padding owed for longer than this since the last frame is not made up.
const MAX_GAP: Duration = Duration::from_millis(100);

/// One filler-data NAL unit: its header, 0xFF bytes, the trailing bits.
static FILLER: LazyLock<Bytes> = LazyLock::new(|| {
    let mut nal = vec![0xFF; FILLER_SIZE];
    nal[0] = 0x0C;
    nal[FILLER_SIZE - 1] = 0x80;
    Bytes::from(nal)
});

/// How much to pad, spread over the frames.
#[derive(Debug, Default)]
pub struct Padding {
    rate_bps: f64,
    last: Option<Instant>,
    /// Bytes owed that did not make a whole filler payload yet.
    owed: f64,
}

impl Padding {
    pub fn set_rate(&mut self, bits_per_second: f64) {
        if bits_per_second <= 0.0 {
            self.owed = 0.0;
        }
        self.rate_bps = bits_per_second.max(0.0);
    }

    /// The filler payloads for a frame sent at `now`.
    pub fn filler(&mut self, now: Instant) -> Vec<Bytes> {
        let elapsed = self
            .last
            .replace(now)
            .map_or(Duration::ZERO, |last| now.duration_since(last).min(MAX_GAP));
        if self.rate_bps <= 0.0 {
            return Vec::new();
        }
        self.owed += self.rate_bps / 8.0 * elapsed.as_secs_f64();
        let count = (self.owed / FILLER_SIZE as f64) as usize;
        self.owed -= (count * FILLER_SIZE) as f64;
        vec![FILLER.clone(); count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_adds_up_to_the_rate_and_stops_with_it() {
        let start = Instant::now();
        let mut padding = Padding::default();
        padding.set_rate(880_000.0);
        let mut bytes = 0;
        for frame in 0..=30 {
            let at = start + Duration::from_millis(frame * 1000 / 30);
            bytes += padding.filler(at).iter().map(Bytes::len).sum::<usize>();
        }
        // One second at 880 kbit/s is 110 000 bytes, less what is still owed.
        assert!(
            (110_000 - FILLER_SIZE..=110_000).contains(&bytes),
            "{bytes}"
        );
        padding.set_rate(0.0);
        assert!(padding.filler(start + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn a_filler_payload_is_one_filler_data_nal_unit() {
        let filler = &*FILLER;
        assert_eq!(filler[0] & 0x1f, 12);
        assert_eq!(filler[0] & 0x80, 0, "forbidden bit clear");
        assert_eq!(*filler.last().unwrap(), 0x80, "RBSP trailing bits");
        assert!(filler[1..FILLER_SIZE - 1].iter().all(|b| *b == 0xFF));
    }
}
