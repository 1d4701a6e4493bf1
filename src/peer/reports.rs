//! Sender reports on the capture clock, for lip sync.
//!
//! A receiver plays video and sound in sync by mapping each track's RTP
//! time to NTP time through that track's sender reports. The stack's own
//! reports map the time a packet was *written*, which trails its capture by
//! the encoder's delay, different for H.264 and Opus: the tracks would
//! drift apart by the difference. Our RTP time is the capture clock
//! ([`crate::media::clock`]) plus a random base per stream, so this
//! interceptor reports, for each stream, "now" on that same clock: the
//! same mapping for both tracks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;
use rtc::shared::time::SystemInstant;

use crate::media::clock;

/// How often each stream is reported.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The RTP timestamp base of each local stream (by SSRC), set by its sender.
#[derive(Debug, Default)]
pub struct StreamClocks(Mutex<HashMap<u32, u32>>);

impl StreamClocks {
    pub fn set(&self, ssrc: u32, base: u32) {
        self.0
            .lock()
            .expect("stream clock lock is never poisoned")
            .insert(ssrc, base);
    }

    fn base(&self, ssrc: u32) -> Option<u32> {
        self.0
            .lock()
            .expect("stream clock lock is never poisoned")
            .get(&ssrc)
            .copied()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    clock_rate: u32,
    packets: u32,
    octets: u32,
}

pub struct CaptureClockReports {
    clocks: Arc<StreamClocks>,
    streams: HashMap<u32, Counts>,
    next: Option<Instant>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl CaptureClockReports {
    pub fn new(clocks: Arc<StreamClocks>) -> Self {
        Self {
            clocks,
            streams: HashMap::new(),
            next: None,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

/// The report of stream `ssrc` at `now`: NTP wall time, and the RTP time
/// a sample captured now would carry.
fn report(ssrc: u32, base: u32, counts: &Counts, now: Instant, wall: SystemTime) -> SenderReport {
    let unix = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    SenderReport {
        ssrc,
        ntp_time: SystemInstant::unix2ntp(unix),
        rtp_time: base.wrapping_add(clock::rtp_ticks(clock::since_epoch(now), counts.clock_rate)),
        packet_count: counts.packets,
        octet_count: counts.octets,
        ..Default::default()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for CaptureClockReports {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(counts) = self.streams.get_mut(&packet.header.ssrc)
        {
            counts.packets = counts.packets.wrapping_add(1);
            counts.octets = counts.octets.wrapping_add(packet.payload.len() as u32);
            if self.next.is_none() {
                self.next = Some(msg.now + INTERVAL);
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let Some(next) = self.next else { return Ok(()) };
        if now < next {
            return Ok(());
        }
        self.next = Some(now + INTERVAL);
        let wall = SystemTime::now();
        for (ssrc, counts) in &self.streams {
            if counts.packets == 0 {
                continue;
            }
            let Some(base) = self.clocks.base(*ssrc) else {
                continue;
            };
            let sr = report(*ssrc, base, counts, now, wall);
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(sr)])),
            });
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next
    }
}

impl Interceptor for CaptureClockReports {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.insert(
            info.ssrc,
            Counts {
                clock_rate: info.clock_rate,
                ..Default::default()
            },
        );
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tracks_report_the_same_instant_of_the_capture_clock() {
        let now = clock::epoch() + Duration::from_secs(2);
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let counts = |clock_rate| Counts {
            clock_rate,
            packets: 3,
            octets: 300,
        };
        let video = report(1, 500, &counts(90_000), now, wall);
        let audio = report(2, 7, &counts(48_000), now, wall);
        assert_eq!(video.ntp_time, audio.ntp_time);
        assert_eq!(video.rtp_time, 500 + 180_000);
        assert_eq!(audio.rtp_time, 7 + 96_000);
        assert_eq!((audio.packet_count, audio.octet_count), (3, 300));
    }
}
