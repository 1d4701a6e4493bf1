//! A camera behind a home router and a viewer behind a mobile one
//! (tests/common/nat.rs), with coturn between them: the camera's send
//! loop gathers its mapped address and a relay from the configured
//! servers, and a viewer that is not ours (GStreamer's webrtcbin, at its
//! defaults but for the STUN server it is given) decodes the picture
//! through hole punching, or through the relay where the NATs leave no
//! other way.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

use common::nat::{Coturn, Nat, NatKind, TURN_PASSWORD, TURN_PORT, TURN_USER};
use common::netns::{NsBroker, NsCamera, observer_at};
use common::webrtcbin::WebrtcbinViewer;
use common::{SMALL_VIDEO, stats_topic};

/// Through two routers and a STUN exchange: longer than on a LAN.
const FIRST_FRAMES: Duration = Duration::from_secs(40);

fn camera_toml(ice_servers: &str) -> String {
    format!("rooms = [\"home\"]\n{SMALL_VIDEO}[webrtc]\n{ice_servers}")
}

fn stun_server(at: Ipv4Addr) -> String {
    format!("[[webrtc.ice_servers]]\nurls = [\"stun:{at}:{TURN_PORT}\"]\n")
}

fn turn_server(at: Ipv4Addr) -> String {
    format!(
        "[[webrtc.ice_servers]]\nurls = [\"turn:{at}:{TURN_PORT}?transport=udp\"]\n\
         username = \"{TURN_USER}\"\ncredential = \"{TURN_PASSWORD}\"\n"
    )
}

/// The camera's telemetry once its one connection is on the send loop
/// and `pred` holds for the loop's servers.
fn loop_stats(nat: &Nat, cam: &NsCamera, what: &str, pred: impl Fn(&[Value]) -> bool) -> Value {
    let mut obs = observer_at(
        &nat.mobile.lan,
        nat.mobile.server_addr,
        &format!("obs-{}", cam.id),
        &[&stats_topic(&cam.id)],
    );
    obs.wait_json(&stats_topic(&cam.id), what, |v| {
        v["connections"]
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["send_path"] == "loop-gso")
            && !v["connections"][0]["path"].is_null()
            && v["send_loop"]["ice_servers"]
                .as_array()
                .is_some_and(|s| pred(s))
    })
}

/// The camera at home and a webrtcbin viewer on mobile, with `viewer`'s
/// kind of NAT, the camera configured with `servers` (given the public
/// side's address towards home), decoding once its first frames came.
/// Fields drop in order: the processes before their namespaces.
struct Watching {
    _viewer: WebrtcbinViewer,
    cam: NsCamera,
    _coturn: Coturn,
    _broker: NsBroker,
    nat: Nat,
}

fn watch(viewer_nat: NatKind, id: &str, servers: fn(Ipv4Addr) -> String) -> Watching {
    let nat = Nat::new(NatKind::PortRestricted, viewer_nat);
    let broker = NsBroker::start(&nat.broker_site());
    let coturn = Coturn::start(&nat);
    let cam = NsCamera::start(
        &nat,
        &format!("cam-{id}"),
        &camera_toml(&servers(nat.home.server_addr)),
    );
    let stun = format!("stun://{}:{TURN_PORT}", nat.mobile.server_addr);
    let mut viewer = WebrtcbinViewer::start(
        &nat.mobile.lan,
        &nat.broker_url_mobile(),
        nat.mobile.addr,
        "home",
        &format!("wbin-{id}"),
        &["--stun", &stun],
    );
    viewer.wait_frames(30, 1, FIRST_FRAMES);
    Watching {
        _viewer: viewer,
        cam,
        _coturn: coturn,
        _broker: broker,
        nat,
    }
}

#[test]
fn behind_two_home_routers_the_camera_and_a_webrtcbin_viewer_punch_through_with_stun() {
    let w = watch(NatKind::PortRestricted, "nat-stun", stun_server);
    // The camera learned the address its router maps it to.
    let mapped_by_router = format!("{}:", w.nat.home.public_addr);
    let stats = loop_stats(&w.nat, &w.cam, "the mapped address", |servers| {
        servers.len() == 1
            && servers[0]["mapped"]
                .as_str()
                .is_some_and(|m| m.starts_with(&mapped_by_router))
    });
    assert_eq!(stats["send_loop"]["ice_servers"][0]["error"], Value::Null);
    assert_eq!(stats["send_loop"]["unrouted"], 0, "{stats}");
    // Straight through both routers, from the camera's own socket.
    assert_eq!(stats["connections"][0]["path"], "host", "{stats}");
}

#[test]
fn a_viewer_behind_a_symmetric_nat_watches_through_the_cameras_turn_relay() {
    let w = watch(NatKind::Symmetric, "nat-turn", |at| {
        stun_server(at) + &turn_server(at)
    });
    let relay_on_server = format!("{}:", w.nat.home.server_addr);
    let stats = loop_stats(&w.nat, &w.cam, "a relay", |servers| {
        servers.iter().any(|s| {
            s["relay"]
                .as_str()
                .is_some_and(|r| r.starts_with(&relay_on_server))
        })
    });
    let servers = stats["send_loop"]["ice_servers"].as_array().unwrap();
    assert!(servers.iter().all(|s| s["error"].is_null()), "{stats}");
    // Telemetry says the viewer is reached through the relay.
    assert_eq!(stats["connections"][0]["path"], "relay", "{stats}");
}
