//! Talking back, as the core carries it: the camera offers its sound
//! `sendrecv`; a viewer that says nothing answers `recvonly`, and one that
//! starts talking adds its microphone and answers the camera's next offer
//! (the same connection, no ICE restart) `sendrecv`. Its packets then
//! reach the camera's application.

use std::time::Duration;

use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;

use super::net::*;
use crate::peer::factory::OPUS_PAYLOAD_TYPE;

const VIEWER_SOUND_SSRC: u32 = 0x7a1c_0001;

/// The camera offers again on the running connection (no ICE restart);
/// the viewer adds its microphone before it answers.
fn start_talking(net: &mut Net) {
    net.renegotiate(0, None, |viewer| {
        viewer
            .add_track(opus_track("microphone", VIEWER_SOUND_SSRC))
            .expect("the microphone added");
    });
}

/// The viewer sends `count` Opus packets, 20 ms apart.
fn talk(net: &mut Net, first: u16, count: u16) {
    for i in 0..count {
        let now = net.now;
        let viewer = &mut net.viewers[0];
        let Some(sender) = viewer.core.get_senders().next() else {
            panic!("the viewer has no sender");
        };
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: OPUS_PAYLOAD_TYPE,
                sequence_number: first.wrapping_add(i),
                timestamp: u32::from(first.wrapping_add(i)) * 960,
                ssrc: VIEWER_SOUND_SSRC,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0xfc, 0xff, 0xfe]),
        };
        viewer
            .core
            .rtp_sender(sender)
            .expect("the sender")
            .write_rtp(now, packet)
            .expect("written");
        net.run(Duration::from_millis(20));
    }
}

fn sound_direction(net: &mut Net) -> RTCRtpTransceiverDirection {
    let now = net.now;
    let id = net.viewers[0].id;
    net.engine
        .with(id, now, |c| {
            let ids: Vec<_> = c.get_transceivers().collect();
            // Video is the first media section, sound the second.
            ids.into_iter()
                .find_map(|id| {
                    let t = c.rtp_transceiver(id)?;
                    (t.mid().as_deref() == Some("1")).then(|| t.current_direction())
                })
                .expect("a sound transceiver")
        })
        .expect("the connection")
}

#[test]
fn a_viewer_that_starts_talking_is_heard_after_the_cameras_next_offer() {
    let mut net = Net::with_sound(1);
    net.run(Duration::from_secs(1));
    assert!(net.viewers[0].connected.is_some(), "connected");
    assert_eq!(
        sound_direction(&mut net),
        RTCRtpTransceiverDirection::Sendonly
    );

    start_talking(&mut net);
    net.run(Duration::from_millis(200));
    assert_eq!(
        sound_direction(&mut net),
        RTCRtpTransceiverDirection::Sendrecv
    );
    talk(&mut net, 100, 25);
    let heard: Vec<u16> = net
        .rtp_received
        .iter()
        .filter(|(ssrc, _)| *ssrc == VIEWER_SOUND_SSRC)
        .map(|(_, seq)| *seq)
        .collect();
    assert_eq!(
        heard,
        (100..125).collect::<Vec<_>>(),
        "every packet, in order"
    );
    assert!(net.viewers[0].connected.is_some());
}
