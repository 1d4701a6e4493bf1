//! What the viewers ask of the camera's connections once media flows: a key
//! frame, a lost packet again, a new ICE session.

use std::time::Duration;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::net::*;
use crate::peer::feedback::is_keyframe_request;

/// A connected camera and viewer, with some frames sent.
fn flowing() -> Net {
    let mut net = Net::new(1, no_delay);
    net.run(Duration::from_secs(1));
    assert!(net.viewers[0].connected.is_some(), "connected");
    for frame in 0..10 {
        net.send_frame(frame * 3, 3, 1000);
        net.run(Duration::from_millis(33));
    }
    net
}

#[test]
fn a_viewers_key_frame_request_reaches_the_camera() {
    let mut net = flowing();
    let now = net.now;
    let viewer = &mut net.viewers[0];
    let receiver = viewer.core.get_receivers().next().expect("a receiver");
    let media_ssrc = SSRC;
    viewer
        .core
        .rtp_receiver(receiver)
        .expect("the receiver")
        .write_rtcp(
            now,
            vec![Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc,
            })],
        )
        .expect("PLI written");
    net.run(Duration::from_millis(50));
    assert!(
        net.rtcp_received
            .iter()
            .any(|p| is_keyframe_request(p.as_ref())),
        "the camera heard the PLI"
    );
}

#[test]
fn a_lost_packet_is_asked_for_and_sent_again() {
    let mut net = flowing();
    // Where `flowing` left off.
    let first = 30;
    net.lose = vec![first + 4];
    for frame in 0..10 {
        net.send_frame(first + frame * 3, 3, 1000);
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    assert!(net.lose.is_empty(), "the packet was lost");
    // The NACK is the camera's retransmission interceptor's: it never
    // reaches the application.
    assert!(
        !net.rtcp_received
            .iter()
            .any(|p| p.as_any().is::<TransportLayerNack>())
    );
    let received = &net.viewers[0].received;
    let repaired = received.iter().filter(|s| **s == first + 4).count();
    assert_eq!(repaired, 1, "sent again and received once");
    assert!((first..first + 30).all(|s| received.contains(&s)));
}

#[test]
fn an_ice_restart_keeps_the_media_flowing_under_new_credentials() {
    let mut net = flowing();
    net.renegotiate(
        0,
        Some(rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true }),
        |_| {},
    );
    net.run(Duration::from_secs(2));
    let before = net.viewers[0].received.len();
    for frame in 0..10 {
        net.send_frame(30 + frame * 3, 3, 1000);
        net.run(Duration::from_millis(33));
    }
    assert_eq!(net.viewers[0].received.len(), before + 30);
    assert_eq!(net.engine.counters().unrouted, 0, "the new ufrag routes");
}
