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

/// The two namespaces (connected routes only), the broker in the camera's,
/// Janus and simple-whip-server in the viewers', and a WHIP endpoint for
/// `camera` (its URL). Bound in this order, they are dropped in the
/// reverse: the namespaces last.
fn sfu_lan(camera: &str) -> (Net, NsBroker, Sfu, String) {
    let net = Net::new(Routes::ConnectedOnly);
    let broker = NsBroker::start(&net);
    let sfu = Sfu::start(&net.viewer, net.viewer_addr);
    let endpoint = sfu.create_endpoint(camera, TOKEN);
    (net, broker, sfu, endpoint)
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
    let (net, _broker, sfu, endpoint) = sfu_lan("cam-always");
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

/// The frames `viewer` decoded by its latest report.
fn decoded(viewer: &LineProcess) -> u64 {
    viewer
        .seen
        .iter()
        .rev()
        .find(|v| v["event"] == "report")
        .and_then(|v| v["decoded"].as_u64())
        .unwrap_or(0)
}

#[test]
fn overflow_publishes_for_the_viewer_beyond_the_mesh_and_stops_after_it_left() {
    let (net, _broker, sfu, endpoint) = sfu_lan("cam-overflow");
    let cam = NsCamera::start(
        &net,
        "cam-overflow",
        &camera_toml(&endpoint, TOKEN, "overflow", 2, &sfu),
    );
    let mut obs = online_observer(&net, &cam.id, "obs-overflow");
    let dir = common::temp_dir("sfu-overflow");
    let mut first = viewer(&net, "v-first", &dir);
    let mut second = viewer(&net, "v-second", &dir);
    wait_decoded(&mut first, "mesh", 10);
    wait_decoded(&mut second, "mesh", 10);
    let stats = obs.stats(&cam.id);
    assert_eq!(whip_state(&stats), "off", "the mesh takes two: {stats}");
    assert_eq!(stats["whip"]["attempts"], 0, "{stats}");

    let mut third = viewer(&net, "v-third", &dir);
    let pointer = third.wait_for("the SFU pointer", CONNECT, |v| v["event"] == "sfu");
    assert_eq!(pointer["url"], sfu.janus_api(), "{pointer}");
    let first_frame = third.wait_for("the first frame via Janus", CONNECT, |v| {
        v["event"] == "first_frame"
    });
    wait_decoded(&mut third, "sfu", 30);
    eprintln!(
        "third viewer, join to first frame via the SFU: {} ms",
        first_frame["ms"]
    );
    let stats = obs.stats_until(&cam.id, "the publication up", |s| {
        whip_state(s) == "publishing"
    });
    assert_eq!(
        stats["connections"].as_array().map(Vec::len),
        Some(2),
        "the first two stay on the mesh: {stats}"
    );
    // The first two go on decoding from the mesh.
    let (a, b) = (decoded(&first), decoded(&second));
    wait_decoded(&mut first, "mesh", a + 15);
    wait_decoded(&mut second, "mesh", b + 15);

    // The third viewer vanishes: once its will clears its presence and the
    // linger is over, the publication ends and Janus's resource is freed.
    third.child.kill().unwrap();
    let stats = obs.stats_within(
        &cam.id,
        "the publication over",
        Duration::from_secs(60),
        |s| whip_state(s) == "off",
    );
    assert!(stats["whip"]["resource"].is_null(), "{stats}");
    sfu.wait_endpoint("cam-overflow", false, DEADLINE);
}

#[test]
fn janus_killed_and_restarted_is_published_to_again_and_mesh_viewers_go_on() {
    let (net, _broker, mut sfu, endpoint) = sfu_lan("cam-restart");
    let cam = NsCamera::start(
        &net,
        "cam-restart",
        &camera_toml(&endpoint, TOKEN, "always", 4, &sfu),
    );
    let mut obs = online_observer(&net, &cam.id, "obs-restart");
    let dir = common::temp_dir("sfu-restart");
    let mut mesh = viewer(&net, "v-mesh", &dir);
    wait_decoded(&mut mesh, "mesh", 10);
    let before = obs.stats_within(&cam.id, "a publication to Janus", CONNECT, |s| {
        whip_state(s) == "publishing"
    });
    let attempts_before = before["whip"]["attempts"].as_u64().unwrap();

    sfu.kill_janus();
    let killed = Instant::now();
    let down = obs.stats_within(&cam.id, "the publication lost", CONNECT, |s| {
        whip_state(s) != "publishing"
    });
    eprintln!("after Janus was killed: {}", down["whip"]);
    // The mesh does not depend on the SFU: the viewer goes on decoding.
    let frames = decoded(&mesh);
    wait_decoded(&mut mesh, "mesh", frames + 30);
    sfu.start_janus();
    let after = obs.stats_within(&cam.id, "a publication again", CONNECT, |s| {
        whip_state(s) == "publishing"
    });
    let outage = killed.elapsed().as_secs_f64();
    let retries = after["whip"]["attempts"].as_u64().unwrap() - attempts_before;
    // Backoff: attempts 1 s, 2 s, 4 s, … apart fit log2(outage) + 2 times
    // at most into the outage; a retry storm would not.
    let most = outage.log2().ceil() as u64 + 2;
    assert!(
        (1..=most).contains(&retries),
        "{retries} attempts in {outage:.1} s of outage (at most {most}): {after}"
    );
    sfu.wait_endpoint("cam-restart", true, DEADLINE);
    let frames = decoded(&mesh);
    wait_decoded(&mut mesh, "mesh", frames + 15);
    let connection = common::connection_to(&after, "v-mesh").expect("the mesh viewer");
    assert_eq!(connection["state"], "connected", "{after}");
}

/// A WHIP server that answers every POST with 201 and an answer that is no
/// SDP, and counts the DELETEs of its resource: in the viewer's namespace,
/// port 7081.
const GARBAGE_SERVER: &str = r#"
import http.server, sys
deletes = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"v=0\r\nthis is not an answer\r\n"
        self.send_response(201)
        self.send_header("Location", "/resource/1")
        self.send_header("Content-Type", "application/sdp")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_DELETE(self):
        global deletes
        deletes += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        body = str(deletes).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], 7081), H).serve_forever()
"#;

#[test]
fn a_bad_token_a_missing_endpoint_and_a_garbage_answer_say_why_and_do_not_storm() {
    let (net, _broker, sfu, endpoint) = sfu_lan("cam-token");
    let dir = common::temp_dir("sfu-errors");
    let script = dir.join("garbage.py");
    std::fs::write(&script, GARBAGE_SERVER).unwrap();
    let _garbage = KillOnDrop(
        net.viewer
            .command("python3")
            .arg(&script)
            .arg(net.viewer_addr.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    let deletes = || {
        let out = net
            .viewer
            .command("curl")
            .args(["-sf", &format!("http://{}:7081/deletes", net.viewer_addr)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .ok()
    };
    let end = Instant::now() + DEADLINE;
    while deletes().is_none() {
        assert!(Instant::now() < end, "the garbage server does not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let missing = endpoint.replace("cam-token", "no-such-endpoint");
    let garbage_url = format!("http://{}:7081/whip", net.viewer_addr);
    let cams = [
        ("cam-token", endpoint.as_str(), "wrong-token", "403"),
        ("cam-missing", missing.as_str(), TOKEN, "404"),
        ("cam-garbage", garbage_url.as_str(), TOKEN, "answer"),
    ];
    let cameras: Vec<NsCamera> = cams
        .iter()
        .map(|(id, url, token, _)| {
            NsCamera::start(&net, id, &camera_toml(url, token, "always", 4, &sfu))
        })
        .collect();
    let mut obs = online_observer(&net, "cam-garbage", "obs-errors");
    for (id, _, _, why) in cams {
        let stats = obs.stats_until(id, "a WHIP error", |s| whip_state(s) == "error");
        let error = stats["whip"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{id}: {error:?} does not say {why}");
        assert_eq!(stats["pipeline"]["state"], "playing", "{id}: {stats}");
    }
    // A refusal is not repeated; a garbage answer is retried with backoff.
    let settle = Instant::now();
    for _ in 0..4 {
        let reply = obs.command("cam-token", json!({"cmd": "status"}));
        assert_eq!(reply["ok"], true, "{reply}");
        std::thread::sleep(Duration::from_secs(1));
    }
    for (id, _, _, why) in &cams[..2] {
        let stats = obs.stats(id);
        assert_eq!(
            stats["whip"]["attempts"], 1,
            "{id} ({why}) tried again: {stats}"
        );
        assert_eq!(whip_state(&stats), "error", "{stats}");
    }
    let stats = obs.stats("cam-garbage");
    let attempts = stats["whip"]["attempts"].as_u64().unwrap();
    let elapsed = settle.elapsed().as_secs_f64() + 5.0;
    let most = elapsed.log2().ceil() as u64 + 2;
    assert!(
        (1..=most).contains(&attempts),
        "{attempts} attempts on a garbage answer (at most {most}): {stats}"
    );
    // Naming the mode tries a refused endpoint again at once; a mode that
    // does not exist is refused with the accepted ones.
    let reply = obs.command("cam-token", json!({"cmd": "set", "whip_mode": "always"}));
    assert_eq!(reply["result"]["whip_mode"], "always", "{reply}");
    obs.stats_until("cam-token", "a second attempt", |s| {
        s["whip"]["attempts"] == 2
    });
    let reply = obs.command("cam-token", json!({"cmd": "set", "whip_mode": "sometimes"}));
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("overflow"),
        "{reply}"
    );
    // Each created resource whose answer could not be used was deleted.
    let deleted = deletes().unwrap_or(0);
    assert!(deleted >= 1, "the garbage server saw {deleted} DELETEs");
    drop(cameras);
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_page_turned_away_plays_through_janus_and_its_tile_says_via_sfu() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "the browser test needs web/node_modules: (cd web && npm ci), as scripts/test does"
    );
    let (net, _broker, sfu, endpoint) = sfu_lan("cam-page");
    let page_toml = format!(
        "[web]\nlisten = \"{0}:8080\"\nbroker_url = \"ws://{0}:{1}\"\n",
        net.cam_addr,
        common::netns::BROKER_WS_PORT
    );
    let cam = NsCamera::start(
        &net,
        "cam-page",
        &format!(
            "{}{page_toml}",
            camera_toml(&endpoint, TOKEN, "always", 1, &sfu)
        ),
    );
    let mut obs = online_observer(&net, &cam.id, "obs-page");
    obs.stats_within(&cam.id, "a publication to Janus", CONNECT, |s| {
        whip_state(s) == "publishing"
    });
    let dir = common::temp_dir("sfu-page");
    let mut mesh = viewer(&net, "v-mesh", &dir);
    wait_decoded(&mut mesh, "mesh", 10);

    let url = format!("http://{}:8080/?room=home&id=web-sfu", net.cam_addr);
    let mut command = net.viewer.command("node");
    command
        .arg(web.join("tests/sfu-page.mjs"))
        .args([&url, &cam.id, "30"])
        .current_dir(&web);
    let mut page = LineProcess::spawn("chromium page", command, &dir);
    let seen = page.wait_for("the page's verdict", Duration::from_secs(90), |v| {
        v["event"] == "decoded" || v["event"] == "error"
    });
    assert_eq!(seen["event"], "decoded", "{seen}");
    assert_eq!(seen["state"]["via"], "sfu", "{seen}");
    assert_eq!(seen["badge"], "live via SFU", "{seen}");
    let stats = obs.stats(&cam.id);
    assert!(
        common::connection_to(&stats, "web-sfu").is_none(),
        "the page is not on the mesh: {stats}"
    );
}

/// The camera's CPU (% of a core) and the bytes it sends per second, each
/// averaged over `samples` periodic telemetry messages.
fn measure(obs: &mut common::Observer, camera: &str, samples: usize) -> (f64, f64) {
    let topic = common::stats_topic(camera);
    let mut cpu = Vec::new();
    let mut whip_kbps = Vec::new();
    for _ in 0..samples {
        let t = obs.wait_json(&topic, "telemetry", |_| true);
        cpu.push(t["cpu_percent"].as_f64().unwrap_or(0.0));
        whip_kbps.push(t["whip"]["bitrate_kbps"].as_f64().unwrap_or(0.0));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&cpu), mean(&whip_kbps))
}

/// Not a test: the figures of docs/BENCHMARKS.md, "Publishing to an SFU".
/// `cargo test --release --features tools --test sfu -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_whip_publication_cost_and_first_frame_via_the_sfu() {
    const VIDEO: &str = "[video]\nwidth = 1280\nheight = 720\nfps = 30\nbitrate_kbps = 2000\n";
    let (net, _broker, sfu, endpoint) = sfu_lan("cam-bench");
    let toml = camera_toml(&endpoint, TOKEN, "overflow", 2, &sfu).replace(SMALL_VIDEO, VIDEO);
    let cam = NsCamera::start(&net, "cam-bench", &toml);
    let mut obs = online_observer(&net, &cam.id, "obs-bench");
    let stats = common::stats_topic(&cam.id);
    let mut obs_stats = observer(&net.cam, &net, "obs-bench-stats", &[&stats]);
    obs_stats.wait_json(&stats, "telemetry", |_| true);
    const WARM: usize = 3;
    const WINDOW: usize = 10;
    measure(&mut obs_stats, &cam.id, WARM);
    let (idle, _) = measure(&mut obs_stats, &cam.id, WINDOW);

    let dir = common::temp_dir("sfu-bench");
    let mut mesh = viewer(&net, "v-mesh", &dir);
    wait_decoded(&mut mesh, "mesh", 10);
    measure(&mut obs_stats, &cam.id, WARM);
    let (one_viewer, _) = measure(&mut obs_stats, &cam.id, WINDOW);
    drop(mesh);
    obs.stats_until(&cam.id, "no viewer", |s| s["connections"] == json!([]));

    let reply = obs.command(&cam.id, json!({"cmd": "set", "whip_mode": "always"}));
    assert_eq!(reply["ok"], true, "{reply}");
    obs.stats_within(&cam.id, "publishing", CONNECT, |s| {
        whip_state(s) == "publishing"
    });
    measure(&mut obs_stats, &cam.id, WARM);
    let (publishing, whip_kbps) = measure(&mut obs_stats, &cam.id, WINDOW);
    println!(
        "camera CPU % of a core: idle {idle:.1}, one mesh viewer {one_viewer:.1} \
         (+{:.1}), publishing to Janus {publishing:.1} (+{:.1}) at {whip_kbps:.0} kbit/s",
        one_viewer - idle,
        publishing - idle
    );

    // The third viewer's join → first frame via the SFU, from a camera
    // that does not publish yet (overflow) each time.
    let reply = obs.command(&cam.id, json!({"cmd": "set", "whip_mode": "overflow"}));
    assert_eq!(reply["ok"], true, "{reply}");
    let mut first = viewer(&net, "v-first", &dir);
    let mut second = viewer(&net, "v-second", &dir);
    wait_decoded(&mut first, "mesh", 10);
    wait_decoded(&mut second, "mesh", 10);
    let mut times = Vec::new();
    for round in 0..5 {
        obs.stats_within(
            &cam.id,
            "the publication off",
            Duration::from_secs(60),
            |s| whip_state(s) == "off",
        );
        let mut third = viewer(&net, &format!("v-third-{round}"), &dir);
        let v = third.wait_for("first frame", CONNECT, |v| v["event"] == "first_frame");
        times.push(v["ms"].as_f64().unwrap());
        wait_decoded(&mut third, "sfu", 10);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "third viewer, join → first frame via Janus (camera not yet publishing): \
         median {:.0} ms, max {:.0} ms, all {times:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn a_link_lost_for_seconds_is_restarted_over_patch_on_the_same_resource() {
    let (net, _broker, sfu, endpoint) = sfu_lan("cam-ice");
    let mut cam = NsCamera::start(
        &net,
        "cam-ice",
        &camera_toml(&endpoint, TOKEN, "always", 4, &sfu),
    );
    let mut obs = online_observer(&net, &cam.id, "obs-ice");
    let before = obs.stats_within(&cam.id, "a publication to Janus", CONNECT, |s| {
        whip_state(s) == "publishing"
    });
    // The camera's broker is in its own namespace: only the path to the
    // SFU goes down.
    net.set_link(false);
    obs.stats_until(&cam.id, "an ICE restart under way", |s| {
        s["whip"]["restarting"] == true
    });
    net.set_link(true);
    let after = obs.stats_within(&cam.id, "the restart taken", CONNECT, |s| {
        s["whip"]["ice_restarts"].as_u64() >= Some(1)
            && s["whip"]["restarting"] == false
            && whip_state(s) == "publishing"
    });
    assert_eq!(
        after["whip"]["attempts"], before["whip"]["attempts"],
        "no new POST: {after}"
    );
    assert_eq!(
        after["whip"]["resource"], before["whip"]["resource"],
        "{after}"
    );
    let sent = after["whip"]["bytes_sent"].as_u64().unwrap();
    obs.stats_until(&cam.id, "media flowing again", |s| {
        s["whip"]["bytes_sent"].as_u64() > Some(sent + 100_000)
    });
    sfu.wait_endpoint("cam-ice", true, DEADLINE);
    // A camera that stops deletes its resource on the way out.
    let status = cam.terminate(DEADLINE).expect("the camera stops");
    assert!(status.success(), "{status}");
    sfu.wait_endpoint("cam-ice", false, DEADLINE);
}
