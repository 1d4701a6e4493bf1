//! A camera behind a home router and a viewer behind a mobile one
//! (tests/common/nat.rs), with coturn between them: the camera's send
//! loop gathers its mapped address and a relay from the configured
//! servers, and a viewer that is not ours (GStreamer's webrtcbin, at its
//! defaults but for the STUN server it is given) decodes the picture
//! through hole punching, or through the relay where the NATs leave no
//! other way. With a TURN server that takes credentials minted from a
//! shared secret, the camera mints its own and each viewer's, and a viewer
//! configured with nothing relays with what the camera's offer gave it.

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

/// The camera at home behind a port-restricted NAT, the mobile side behind
/// `viewer_nat`, coturn between them (its users: [`TURN_USER`], or
/// credentials minted from `secret`), and the camera configured with
/// `servers` (given the public side's address towards home). Fields drop
/// in order: the processes before their namespaces.
struct Site {
    cam: NsCamera,
    _coturn: Coturn,
    _broker: NsBroker,
    nat: Nat,
}

impl Site {
    fn start(
        viewer_nat: NatKind,
        id: &str,
        secret: Option<&str>,
        servers: impl FnOnce(Ipv4Addr) -> String,
    ) -> Self {
        let nat = Nat::new(NatKind::PortRestricted, viewer_nat);
        let broker = NsBroker::start(&nat.broker_site());
        let coturn = match secret {
            Some(secret) => Coturn::with_secret(&nat, secret),
            None => Coturn::start(&nat),
        };
        let cam = NsCamera::start(
            &nat,
            &format!("cam-{id}"),
            &camera_toml(&servers(nat.home.server_addr)),
        );
        Self {
            cam,
            _coturn: coturn,
            _broker: broker,
            nat,
        }
    }

    /// A webrtcbin viewer `wbin-{id}` on the mobile side, with `args`.
    fn viewer(&self, id: &str, args: &[&str]) -> WebrtcbinViewer {
        WebrtcbinViewer::start(
            &self.nat.mobile.lan,
            &self.nat.broker_url_mobile(),
            self.nat.mobile.addr,
            "home",
            &format!("wbin-{id}"),
            args,
        )
    }
}

/// A webrtcbin viewer on mobile with its own STUN server, decoding once
/// its first frames came, and its site.
struct Watching {
    _viewer: WebrtcbinViewer,
    site: Site,
}

fn watch(viewer_nat: NatKind, id: &str, servers: fn(Ipv4Addr) -> String) -> Watching {
    let site = Site::start(viewer_nat, id, None, servers);
    let stun = format!("stun://{}:{TURN_PORT}", site.nat.mobile.server_addr);
    let mut viewer = site.viewer(id, &["--stun", &stun]);
    viewer.wait_frames(30, 1, FIRST_FRAMES);
    Watching {
        _viewer: viewer,
        site,
    }
}

#[test]
fn behind_two_home_routers_the_camera_and_a_webrtcbin_viewer_punch_through_with_stun() {
    let w = watch(NatKind::PortRestricted, "nat-stun", stun_server);
    // The camera learned the address its router maps it to.
    let mapped_by_router = format!("{}:", w.site.nat.home.public_addr);
    let stats = loop_stats(&w.site.nat, &w.site.cam, "the mapped address", |servers| {
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
    let relay_on_server = format!("{}:", w.site.nat.home.server_addr);
    let stats = loop_stats(&w.site.nat, &w.site.cam, "a relay", |servers| {
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

/// The TURN server's shared secret, known to it and to the camera alone.
const SECRET: &str = "north-wind";

/// The camera's one ICE server entry: STUN and TURN on coturn, credentials
/// minted from `secret`.
fn minted_server(at: Ipv4Addr, secret: &str) -> String {
    format!(
        "[[webrtc.ice_servers]]\nurls = [\"stun:{at}:{TURN_PORT}\", \"turn:{at}:{TURN_PORT}?transport=udp\"]\n\
         secret = \"{secret}\"\nttl_s = 600\n"
    )
}

#[test]
fn a_viewer_configured_with_nothing_relays_with_credentials_the_camera_minted_for_it() {
    let site = Site::start(NatKind::Symmetric, "minted", Some(SECRET), |at| {
        minted_server(at, SECRET)
    });
    // What the viewer says to the camera: its candidates.
    let to_camera = format!("meshcam/rooms/home/signal/{}/wbin-minted", site.cam.id);
    let mut signals = observer_at(
        &site.nat.mobile.lan,
        site.nat.mobile.server_addr,
        "obs-minted-signals",
        &[&to_camera],
    );
    let mut viewer = site.viewer("minted", &[]);
    let offer = viewer.wait("the camera's offer", FIRST_FRAMES, |v| {
        v["event"] == "offer"
    });
    assert_eq!(offer["ice_servers"], 1, "{offer}");
    // coturn gave the viewer a relay: it took the credentials minted for it.
    signals.wait_for("a relay candidate from the viewer", |topic, payload| {
        topic == to_camera && String::from_utf8_lossy(payload).contains("typ relay")
    });
    viewer.wait_frames(30, 1, FIRST_FRAMES);
    // And the camera's own: its relay is allocated, no server failed.
    let stats = loop_stats(&site.nat, &site.cam, "the camera's relay", |servers| {
        servers.iter().any(|s| s["relay"].is_string())
    });
    let servers = stats["send_loop"]["ice_servers"].as_array().unwrap();
    assert!(servers.iter().all(|s| s["error"].is_null()), "{stats}");
}

/// A wrong secret: coturn refuses the camera's minted credentials, and
/// telemetry names the refusal (the log shows it asked again, 1 s, 2 s,
/// 4 s… apart; the backoff itself is `engine::gather`'s unit tests').
#[test]
fn a_camera_with_the_wrong_secret_names_the_refusal_in_telemetry() {
    let site = Site::start(
        NatKind::PortRestricted,
        "wrong-secret",
        Some(SECRET),
        |at| minted_server(at, "south-wind"),
    );
    let mut obs = observer_at(
        &site.nat.mobile.lan,
        site.nat.mobile.server_addr,
        "obs-wrong-secret",
        &[&stats_topic(&site.cam.id)],
    );
    // The loop starts with the first viewer.
    let _viewer = site.viewer("wrong-secret", &[]);
    let stats = obs.wait_json(&stats_topic(&site.cam.id), "the refusal named", |v| {
        v["send_loop"]["ice_servers"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["error"].as_str().is_some_and(|e| e.contains("401")))
        })
    });
    let server = &stats["send_loop"]["ice_servers"][0];
    assert_eq!(server["relay"], Value::Null, "{server}");
    assert!(
        server["error"].as_str().unwrap().contains("Unauthorized"),
        "{server}"
    );
}
