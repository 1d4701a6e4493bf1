//! Outgrowing the mesh: the camera publishes to a real SFU (Janus behind
//! simple-whip-server) over WHIP, and viewers the mesh turns away watch
//! there. Camera and broker live in one namespace, Janus and the viewers
//! in the other, joined by a veth pair with no routes but the link's.

mod common;

use std::time::{Duration, Instant};

use common::netns::{LineProcess, Net, NsBroker, NsCamera, Routes, observer};
use common::sfu::{ROOM, Sfu};
use common::{DEADLINE, SMALL_VIDEO, inbox, status_topic};
use serde_json::{Value, json};

/// A camera publishing (connection, DTLS, first key frame) and a viewer
/// connecting through Janus: seconds on a quiet machine.
const CONNECT: Duration = Duration::from_secs(45);
const TOKEN: &str = "sekrit";

fn camera_toml(endpoint: &str, token: &str, mode: &str, max_viewers: usize, sfu: &Sfu) -> String {
    format!(
        "rooms = [\"home\"]\n{SMALL_VIDEO}[webrtc]\nmax_viewers = {max_viewers}\n\
         [whip]\nmode = \"{mode}\"\nendpoint = \"{endpoint}\"\ntoken = \"{token}\"\nlinger_s = 2\n\
         [whip.watch]\nkind = \"janus-videoroom\"\nurl = \"{}\"\nroom = {ROOM}\n",
        sfu.janus_api()
    )
}

/// `meshcam view` in the viewer's namespace, decoding.
fn viewer(net: &Net, id: &str, dir: &std::path::Path) -> LineProcess {
    let mut command = net.viewer.command(common::BIN);
    command
        .args(["view", "--broker", &net.broker_url(), "--room", "home"])
        .args(["--bind", &net.viewer_addr.to_string(), "--id", id])
        .args(["--decode", "--report-interval", "0.25"])
        .env("RUST_LOG", "warn,rtc=error,rtc_ice=error,webrtc=error");
    LineProcess::spawn(&format!("meshcam view {id}"), command, dir)
}

/// Waits until `viewer` decoded `frames` frames, watching `via` the mesh
/// or the SFU.
fn wait_decoded(viewer: &mut LineProcess, via: &str, frames: u64) -> Value {
    viewer.wait_for(
        &format!("{frames} frames decoded via {via}"),
        CONNECT,
        |v| v["event"] == "report" && v["via"] == via && v["decoded"].as_u64() >= Some(frames),
    )
}

/// An observer in the camera's namespace, once the camera is online (it
/// takes commands from then on).
fn online_observer(net: &Net, camera: &str, id: &str) -> common::Observer {
    let status = status_topic(camera);
    let mut obs = observer(&net.cam, net, id, &[&status, &inbox(id)]);
    obs.seen_or_wait_json(&status, "the camera online", |v| v["state"] == "online");
    obs
}

fn whip_state(stats: &Value) -> &str {
    stats["whip"]["state"].as_str().unwrap_or_default()
}

#[test]
fn a_camera_publishes_to_janus_a_viewer_turned_away_watches_there_and_leave_frees_it() {
    let net = Net::new(Routes::ConnectedOnly);
    let _broker = NsBroker::start(&net);
    let sfu = Sfu::start(&net.viewer, net.viewer_addr);
    let endpoint = sfu.create_endpoint("cam-always", TOKEN);
    let cam = NsCamera::start(
        &net,
        "cam-always",
        &camera_toml(&endpoint, TOKEN, "always", 1, &sfu),
    );
    let mut obs = online_observer(&net, &cam.id, "obs-always");
    let stats = obs.stats_within(&cam.id, "a publication to Janus", CONNECT, |s| {
        whip_state(s) == "publishing"
    });
    assert!(
        stats["whip"]["resource"]
            .as_str()
            .is_some_and(|r| r.ends_with("/whip/resource/cam-always")),
        "{stats}"
    );
    sfu.wait_endpoint("cam-always", true, DEADLINE);

    let dir = common::temp_dir("sfu-always");
    let mut mesh = viewer(&net, "v-mesh", &dir);
    wait_decoded(&mut mesh, "mesh", 10);
    // The mesh is full: the next viewer is sent to Janus, and decodes there.
    let mut turned_away = viewer(&net, "v-sfu", &dir);
    let pointer = turned_away.wait_for("the SFU pointer", CONNECT, |v| v["event"] == "sfu");
    assert_eq!(pointer["kind"], "janus-videoroom", "{pointer}");
    assert_eq!(pointer["room"], ROOM, "{pointer}");
    assert_eq!(pointer["camera"], "cam-always", "{pointer}");
    wait_decoded(&mut turned_away, "sfu", 30);
    let stats = obs.stats(&cam.id);
    assert!(
        stats["whip"]["bytes_sent"].as_u64() > Some(10_000),
        "the publication carries the stream: {stats}"
    );
    assert_eq!(
        stats["connections"].as_array().map(Vec::len),
        Some(1),
        "only the mesh viewer is connected to the camera: {stats}"
    );

    // Leaving the room ends the publication and frees Janus's resource.
    let reply = obs.command(&cam.id, json!({"cmd": "leave", "room": "home"}));
    assert_eq!(reply["ok"], true, "{reply}");
    sfu.wait_endpoint("cam-always", false, DEADLINE);
    let stats = obs.stats_until(&cam.id, "the publication off", |s| whip_state(s) == "off");
    assert!(stats["whip"]["resource"].is_null(), "{stats}");
}
