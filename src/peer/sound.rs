//! One viewer's sound sender: the shared Opus packets, written as RTP to
//! that viewer's audio track at its own pace, counted in its
//! [`SenderCounters`] as sound. A viewer that falls behind
//! loses packets (Opus's FEC and the receiver's concealment cover them);
//! nothing waits for it.

use std::sync::Arc;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::SenderCounters;
use super::sender::{Packetwriter, RtpStream, Stamper};
use crate::media::AudioFeed;

/// Sends sound once `ready` gives the negotiated stream, until the
/// connection goes away or the feed closes.
pub async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    feed: AudioFeed,
    ready: oneshot::Receiver<RtpStream>,
    timestamp_base: u32,
    counters: Arc<SenderCounters>,
) {
    let mut packets = feed.subscribe();
    let Ok(stream) = ready.await else { return };
    let mut writer = Packetwriter {
        track,
        stamper: Stamper::new(RtpCodecKind::Audio, stream, timestamp_base, counters),
    };
    loop {
        match packets.recv().await {
            Ok(packet) => {
                if !writer.send(&packet, &[]).await {
                    return;
                }
            }
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}
