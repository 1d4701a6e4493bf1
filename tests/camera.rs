//! The camera daemon against real parts: Mosquitto, the GStreamer pipeline
//! on videotestsrc, and `meshcam view` processes as WebRTC viewers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn status_where(obs: &mut Observer, cam: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    obs.wait_json(&status_topic(cam), what, pred)
}

fn viewers_is(n: u64) -> impl Fn(&Value) -> bool {
    move |v| v["state"] == "online" && v["viewers"] == n
}

#[test]
fn three_viewers_each_decode_frames() {
    let broker = broker();
    let _cam = Camera::start(
        &broker,
        "cam-three",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut viewers = Viewer::start(
        &broker,
        "home",
        &["--count", "3", "--decode", "--frames", "30"],
    );
    let summary = viewers.wait_for("summary", |v| v["event"] == "summary");
    assert_eq!(summary["ok"], true, "{summary}");
    let decoded = summary["decoded"].as_array().unwrap();
    assert_eq!(decoded.len(), 3);
    assert!(
        decoded.iter().all(|d| d.as_u64().unwrap() >= 30),
        "{summary}"
    );
    let sizes: Vec<&Value> = viewers
        .seen
        .iter()
        .filter(|v| v["event"] == "report" && v["decoded"].as_u64() > Some(0))
        .collect();
    assert!(
        sizes
            .iter()
            .all(|v| v["width"] == 320 && v["height"] == 240)
    );
    assert_eq!(viewers.child().wait().unwrap().code(), Some(0));
}

#[test]
fn a_leaving_viewer_is_torn_down_and_the_others_keep_receiving() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-leave",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-leave",
        &[&status_topic(&cam.id), &stats_topic(&cam.id)],
    );
    let mut stays = Viewer::start(&broker, "home", &["--id", "stays"]);
    let mut leaves = Viewer::start(&broker, "home", &["--id", "leaves"]);
    stays.wait_frames(Some("stays"), 10);
    leaves.wait_frames(Some("leaves"), 10);
    status_where(&mut obs, &cam.id, "two viewers", viewers_is(2));

    kill(leaves.child(), libc::SIGTERM);
    assert_eq!(
        wait_exit(leaves.child(), DEADLINE).and_then(|s| s.code()),
        Some(0)
    );
    status_where(
        &mut obs,
        &cam.id,
        "one viewer after the leave",
        viewers_is(1),
    );
    let before = stays.frames_of("stays");
    stays.wait_frames(Some("stays"), before + 30);
    // The leaver's connection is closed, the other one held.
    let stats = obs.wait_json(&stats_topic(&cam.id), "no connection to the leaver", |v| {
        connection_to(v, "leaves").is_none()
    });
    assert_eq!(connection_peers(&stats), ["stays"], "{stats}");
}

#[test]
fn a_killed_viewer_is_cleaned_up_when_its_will_fires() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-kill",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut obs = Observer::connect(&broker, "obs-kill", &[&status_topic(&cam.id)]);
    let mut stays = Viewer::start(&broker, "home", &["--id", "stays"]);
    let mut victim = Viewer::start(&broker, "home", &["--id", "victim"]);
    victim.wait_frames(Some("victim"), 10);
    stays.wait_frames(Some("stays"), 10);
    status_where(&mut obs, &cam.id, "two viewers", viewers_is(2));
    kill(victim.child(), libc::SIGKILL);
    status_where(&mut obs, &cam.id, "the killed viewer gone", viewers_is(1));
    let before = stays.frames_of("stays");
    stays.wait_frames(Some("stays"), before + 30);
}

#[test]
fn a_viewer_that_stops_answering_is_torn_down_when_ice_fails() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-stall",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let to_frozen = signal_topic("home", "frozen", &cam.id);
    let mut obs = Observer::connect(&broker, "obs-stall", &[&stats_topic(&cam.id), &to_frozen]);
    let mut stays = Viewer::start(&broker, "home", &["--id", "stays"]);
    let mut frozen = Viewer::start(&broker, "home", &["--id", "frozen"]);
    frozen.wait_frames(Some("frozen"), 10);
    stays.wait_frames(Some("stays"), 10);
    obs.wait_json(&stats_topic(&cam.id), "the frozen viewer connected", |v| {
        connection_to(v, "frozen").is_some_and(|c| c["state"] == "connected")
    });
    let offers = obs.count_seen(is_offer(&to_frozen));
    kill(frozen.child(), libc::SIGSTOP);
    // Its broker session is still alive (keepalive 10 s), so only ICE can
    // tell: disconnected (the same connection, which has sent packets, is
    // no longer connected), an ICE restart that is never answered, teardown
    // (the connection is gone, or is a new attempt that has sent nothing).
    obs.wait_json(
        &stats_topic(&cam.id),
        "the frozen viewer disconnected",
        |v| {
            connection_to(v, "frozen")
                .is_some_and(|c| c["state"] == "connecting" && c["packets_sent"].as_u64() > Some(0))
        },
    );
    // The ICE restart: an offer while the used connection is still held.
    let stats = stats_topic(&cam.id);
    while obs.count_seen(is_offer(&to_frozen)) == offers {
        let (topic, payload) =
            obs.wait_for("an ICE restart offer", |t, _| t == stats || t == to_frozen);
        if topic == stats {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            assert!(
                connection_to(&v, "frozen").is_some_and(|c| c["packets_sent"].as_u64() > Some(0)),
                "closed without an ICE restart: {v}"
            );
        }
    }
    obs.wait_json(&stats_topic(&cam.id), "the frozen connection closed", |v| {
        connection_to(v, "frozen").is_none_or(|c| c["packets_sent"] == 0)
    });
    let before = stays.frames_of("stays");
    stays.wait_frames(Some("stays"), before + 30);
    kill(frozen.child(), libc::SIGKILL);
}

#[test]
fn a_viewer_rejoining_with_a_new_session_gets_a_fresh_connection() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-rejoin",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-rejoin",
        &[
            &status_topic(&cam.id),
            "meshcam/rooms/home/peers/+",
            "meshcam/devices/cam-rejoin/stats",
        ],
    );
    let mut first = Viewer::start(&broker, "home", &["--id", "again"]);
    first.wait_frames(Some("again"), 10);
    let first_session = obs.wait_json("meshcam/rooms/home/peers/again", "first presence", |_| true)
        ["session"]
        .clone();
    kill(first.child(), libc::SIGKILL);
    let mut second = Viewer::start(&broker, "home", &["--id", "again"]);
    obs.wait_json("meshcam/rooms/home/peers/again", "second presence", |v| {
        v["session"] != first_session
    });
    second.wait_frames(Some("again"), 20);
    // The old connection was replaced, not kept: one viewer, and the
    // camera's telemetry lists exactly one connection for that peer.
    status_where(&mut obs, &cam.id, "one viewer", viewers_is(1));
    let stats = obs.wait_json(
        &format!("meshcam/devices/{}/stats", cam.id),
        "stats with one connection",
        |v| v["connections"].as_array().is_some_and(|c| c.len() == 1),
    );
    assert_eq!(stats["connections"][0]["peer"], "again");
}

#[test]
fn max_viewers_is_enforced_with_bye_full() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-full",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}[webrtc]\nmax_viewers = 2\n"),
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-full",
        &[
            &status_topic(&cam.id),
            "meshcam/rooms/home/signal/+/cam-full",
            "meshcam/clients/obs-full/#",
        ],
    );
    let mut a = Viewer::start(&broker, "home", &["--id", "a"]);
    let mut b = Viewer::start(&broker, "home", &["--id", "b"]);
    a.wait_frames(Some("a"), 5);
    b.wait_frames(Some("b"), 5);
    status_where(&mut obs, &cam.id, "two of two", |v| v["viewers"] == 2);
    let mut c = Viewer::start(&broker, "home", &["--id", "c"]);
    obs.wait_for("bye full to c", |topic, payload| {
        topic == "meshcam/rooms/home/signal/c/cam-full"
            && serde_json::from_slice::<Value>(payload)
                .is_ok_and(|v| v["type"] == "bye" && v["reason"] == "full")
    });
    // The served viewers keep receiving; the refused one gets nothing.
    let before = a.frames_of("a");
    a.wait_frames(Some("a"), before + 15);
    c.wait_for("a report from c", |v| {
        v["event"] == "report" && v["viewer"] == "c"
    });
    assert_eq!(c.frames_of("c"), 0);
    let status = obs.command(&cam.id, json!({"cmd": "status"}));
    assert_eq!(status["result"]["viewers"], 2);
    assert_eq!(status["result"]["max_viewers"], 2);
}

#[test]
fn malformed_and_stale_signaling_is_dropped_and_counted_while_video_flows() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-junk",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let stats_topic = format!("meshcam/devices/{}/stats", cam.id);
    let mut obs = Observer::connect(&broker, "obs-junk", &[&stats_topic, &status_topic(&cam.id)]);
    let mut viewer = Viewer::start(&broker, "home", &["--id", "victim"]);
    viewer.wait_frames(Some("victim"), 10);
    let inbox = "meshcam/rooms/home/signal/cam-junk/victim";
    let junk: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{\"v\":2,\"type\":\"bye\",\"session\":\"aaaaaaaa\",\"to_session\":\"bbbbbbbb\"}".to_vec(),
        // Stale: sessions that are not the current ones; a bye would end the pair.
        json!({"v":1,"type":"bye","session":"stalestale","to_session":"stalestale","reason":"x"})
            .to_string()
            .into_bytes(),
        json!({"v":1,"type":"candidate","session":"stalestale","to_session":"stalestale","candidate":null})
            .to_string()
            .into_bytes(),
        vec![b'x'; 70 * 1024],
    ];
    for payload in &junk {
        obs.publish(inbox, payload.clone(), false);
    }
    // A stranger (not a peer of the room) speaking.
    obs.publish(
        "meshcam/rooms/home/signal/cam-junk/mallory",
        json!({"v":1,"type":"bye","session":"stalestale","to_session":"stalestale"}).to_string(),
        false,
    );
    let stats = obs.wait_json(&stats_topic, "six dropped signals", |v| {
        v["signal"]["dropped"].as_u64() >= Some(6)
    });
    assert_eq!(stats["signal"]["dropped"], 6, "{stats}");
    assert_eq!(stats["connections"].as_array().unwrap().len(), 1);
    let before = viewer.frames_of("victim");
    viewer.wait_frames(Some("victim"), before + 30);
    let later = obs.wait_json(&stats_topic, "later stats", |v| {
        v["uptime_s"].as_u64() > stats["uptime_s"].as_u64()
    });
    assert_eq!(later["connections"][0]["state"], "connected", "{later}");
    assert_eq!(later["signal"]["dropped"], 6, "nothing else was dropped");
}

#[test]
fn sigterm_says_bye_clears_presence_and_publishes_offline() {
    let broker = broker();
    let mut cam = Camera::start(
        &broker,
        "cam-term",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-term",
        &[
            &status_topic("cam-term"),
            "meshcam/rooms/home/peers/cam-term",
            "meshcam/rooms/home/signal/+/cam-term",
        ],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "watcher"]);
    viewer.wait_frames(Some("watcher"), 5);
    status_where(&mut obs, "cam-term", "online", viewers_is(1));
    let status = cam
        .terminate(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert_eq!(status.code(), Some(0), "{}", cam.log());
    obs.wait_for("bye shutdown", |t, p| {
        t == "meshcam/rooms/home/signal/watcher/cam-term"
            && serde_json::from_slice::<Value>(p).is_ok_and(|v| v["reason"] == "shutdown")
    });
    obs.wait_for("presence cleared", |t, p| {
        t == "meshcam/rooms/home/peers/cam-term" && p.is_empty()
    });
    status_where(&mut obs, "cam-term", "offline", |v| v["state"] == "offline");
}

#[test]
fn a_configured_room_left_by_command_stays_left_after_a_restart() {
    let broker = broker();
    let dir = temp_dir("cam-left");
    let toml = format!("rooms = [\"home\", \"door\"]\n{SMALL_VIDEO}");
    let mut cam = Camera::start_in(&broker, "cam-left", &toml, dir.to_path_buf());
    let mut obs = Observer::connect(
        &broker,
        "ctl-left",
        &[&status_topic("cam-left"), "meshcam/clients/ctl-left/#"],
    );
    status_where(&mut obs, "cam-left", "online", |v| v["state"] == "online");
    let reply = obs.command("cam-left", json!({"cmd": "leave", "room": "door"}));
    assert_eq!(reply["result"]["rooms"], json!(["home"]), "{reply}");
    assert_eq!(cam.terminate(DEADLINE).and_then(|s| s.code()), Some(0));
    drop(cam);

    let _again = Camera::start_in(&broker, "cam-left", &toml, dir.to_path_buf());
    let mut obs2 = Observer::connect(
        &broker,
        "ctl-left2",
        &[&status_topic("cam-left"), "meshcam/clients/ctl-left2/#"],
    );
    status_where(&mut obs2, "cam-left", "online again", |v| {
        v["state"] == "online"
    });
    let reply = obs2.command("cam-left", json!({"cmd": "status"}));
    assert_eq!(reply["result"]["rooms"], json!(["home"]), "{reply}");
    // Joined by command again, it is a room of the camera's again.
    let reply = obs2.command("cam-left", json!({"cmd": "join", "room": "door"}));
    assert_eq!(reply["result"]["rooms"], json!(["door", "home"]), "{reply}");
}

#[test]
fn joined_rooms_survive_a_restart() {
    let broker = broker();
    let dir = temp_dir("cam-durable");
    let mut cam = Camera::start_in(&broker, "cam-durable", SMALL_VIDEO, dir.to_path_buf());
    let mut obs = Observer::connect(
        &broker,
        "ctl-1",
        &[&status_topic("cam-durable"), "meshcam/clients/ctl-1/#"],
    );
    status_where(&mut obs, "cam-durable", "online", |v| {
        v["state"] == "online"
    });
    let reply = obs.command("cam-durable", json!({"cmd": "join", "room": "garage"}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["rooms"], json!(["garage"]));
    assert_eq!(cam.terminate(DEADLINE).and_then(|s| s.code()), Some(0));
    drop(cam);

    let _again = Camera::start_in(&broker, "cam-durable", SMALL_VIDEO, dir.to_path_buf());
    let mut obs2 = Observer::connect(
        &broker,
        "ctl-2",
        &[
            &status_topic("cam-durable"),
            "meshcam/rooms/garage/peers/cam-durable",
        ],
    );
    status_where(&mut obs2, "cam-durable", "back in garage", |v| {
        v["state"] == "online" && v["rooms"] == json!(["garage"])
    });
    obs2.wait_for("presence in garage", |t, p| {
        t == "meshcam/rooms/garage/peers/cam-durable" && !p.is_empty()
    });
    let mut viewer = Viewer::start(&broker, "garage", &["--frames", "10"]);
    viewer.wait_for("summary", |v| v["event"] == "summary" && v["ok"] == true);
}

#[test]
fn commands_get_exactly_one_reply_with_the_spec_error_codes() {
    let broker = broker();
    let _cam = Camera::start(&broker, "cam-cmd", SMALL_VIDEO);
    let mut obs = Observer::connect(
        &broker,
        "ctl-cmd",
        &[
            &status_topic("cam-cmd"),
            "meshcam/clients/ctl-cmd/#",
            "meshcam/devices/cam-cmd/reply",
        ],
    );
    status_where(&mut obs, "cam-cmd", "online", |v| v["state"] == "online");
    let status = obs.command("cam-cmd", json!({"cmd": "status"}));
    assert_eq!(status["result"]["id"], "cam-cmd");
    assert_eq!(status["result"]["video"]["width"], 320);
    let bad = obs.command("cam-cmd", json!({"cmd": "join", "room": "a/b"}));
    assert_eq!(bad["error"]["code"], "bad_request");
    let missing = obs.command("cam-cmd", json!({"cmd": "leave", "room": "nowhere"}));
    assert_eq!(missing["error"]["code"], "not_found");
    let unknown = obs.command("cam-cmd", json!({"cmd": "fly"}));
    assert_eq!(unknown["error"]["code"], "unknown_command");
    obs.publish("meshcam/devices/cam-cmd/cmd", "{nope", false);
    let reply = obs.wait_json("meshcam/devices/cam-cmd/reply", "null-id reply", |v| {
        v["id"].is_null()
    });
    assert_eq!(reply["error"]["code"], "bad_request");
    obs.publish(
        "meshcam/devices/cam-cmd/cmd",
        vec![b' '; 65 * 1024 + 1],
        false,
    );
    let reply = obs.wait_json("meshcam/devices/cam-cmd/reply", "too_large reply", |v| {
        v["error"]["code"] == "too_large"
    });
    assert!(reply["id"].is_null());
}

#[test]
fn an_invalid_configuration_exits_2_naming_the_key() {
    let dir = temp_dir("badconf");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[video]\nfps = 500\n").unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The message is the interface here: it names the key and its range.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("video.fps") && stderr.contains("1 to 60"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_in_the_file_exits_2_naming_it() {
    let dir = temp_dir("typo");
    let path = dir.join("typo.toml");
    std::fs::write(&path, "[video]\nwidht = 640\n").unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The message is the interface here: it names the unknown key.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("widht"), "{stderr}");
}

#[test]
fn documented_variables_configure_and_stray_ones_are_ignored() {
    let broker = broker();
    let dir = temp_dir("cam-envfile");
    // The file says one id; the documented variable of scripts/demo wins,
    // a key variable sets the width, and stray MESHCAM_* variables (a
    // script's own, a typo) do not stop the camera.
    let _cam = Camera::start_with(
        std::path::Path::new(BIN),
        &broker,
        "cam-envfile",
        SMALL_VIDEO,
        dir.to_path_buf(),
        &[
            ("MESHCAM_DEVICE_ID", "kitchen"),
            ("MESHCAM_VIDEO__WIDTH", "352"),
            ("MESHCAM_HELPER_FLAG", "1"),
            ("MESHCAM_VIDEO__WIDHT", "640"),
        ],
    );
    let mut obs = Observer::connect(&broker, "obs-env", &[&status_topic("kitchen")]);
    let status = obs.seen_or_wait_json(&status_topic("kitchen"), "kitchen online", |v| {
        v["state"] == "online"
    });
    assert_eq!(status["id"], "kitchen", "{status}");
    assert_eq!(status["video"]["width"], 352, "{status}");
}

#[test]
fn a_broker_restart_keeps_the_stream_and_the_session() {
    let mut broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-outage",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "loyal"]);
    viewer.wait_frames(Some("loyal"), 10);
    let presence_topic = "meshcam/rooms/home/peers/cam-outage";
    let session = {
        let mut obs = Observer::connect(&broker, "obs-outage-1", &[presence_topic]);
        obs.wait_json(presence_topic, "presence", |_| true)["session"].clone()
    };
    broker.stop();
    // Media is peer to peer: frames keep coming while the broker is down.
    let before = viewer.frames_of("loyal");
    viewer.wait_frames(Some("loyal"), before + 30);
    broker.restart().unwrap();
    // The camera reconnects and republishes the same presence (retained
    // messages were lost with the broker).
    let mut obs = Observer::connect(
        &broker,
        "obs-outage-2",
        &[presence_topic, &status_topic(&cam.id)],
    );
    let again = obs.wait_json(presence_topic, "presence again", |_| true);
    assert_eq!(again["session"], session, "the same session resumes");
    obs.seen_or_wait_json(&status_topic(&cam.id), "online again", |v| {
        v["state"] == "online"
    });
    let before = viewer.frames_of("loyal");
    viewer.wait_frames(Some("loyal"), before + 30);
    // A viewer arriving after the outage is served.
    let mut late = Viewer::start(&broker, "home", &["--frames", "10"]);
    late.wait_for("summary", |v| v["event"] == "summary" && v["ok"] == true);
}

#[test]
fn a_viewer_without_h264_is_told_why_and_not_offered_again() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-codec",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let inbox = "meshcam/rooms/home/signal/vp8only/cam-codec";
    let mut obs = Observer::connect(&broker, "vp8only", &[inbox, &stats_topic(&cam.id)]);
    obs.publish(
        "meshcam/rooms/home/peers/vp8only",
        json!({"v":1,"id":"vp8only","session":"vp8session","role":"viewer"}).to_string(),
        true,
    );
    let offer = obs.wait_json(inbox, "the camera's offer", |v| v["type"] == "offer");
    let camera_session = offer["session"].as_str().unwrap().to_string();
    // What a browser without H.264 answers: its own codecs only.
    let answer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                  m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\nc=IN IP4 0.0.0.0\r\n\
                  a=rtpmap:96 VP8/90000\r\na=rtpmap:98 VP9/90000\r\n";
    obs.publish(
        "meshcam/rooms/home/signal/cam-codec/vp8only",
        json!({"v":1,"type":"answer","session":"vp8session","to_session":camera_session,"sdp":answer})
            .to_string(),
        false,
    );
    let bye = obs.wait_json(inbox, "a bye", |v| v["type"] == "bye");
    assert_eq!(
        bye["reason"], "no H.264: the viewer decodes only VP8, VP9",
        "{bye}"
    );
    // Not offered again: three seconds on (a retry would come after one),
    // the camera holds no connection to it and has sent no other offer.
    let at_bye = obs.wait_json(&stats_topic(&cam.id), "telemetry after the bye", |_| true);
    let later = obs.wait_json(&stats_topic(&cam.id), "telemetry 3 s later", |v| {
        v["uptime_s"].as_u64() >= at_bye["uptime_s"].as_u64().map(|s| s + 3)
    });
    assert!(connection_to(&later, "vp8only").is_none(), "{later}");
    assert_eq!(obs.count_seen(is_offer(inbox)), 1, "offered once");
}

#[test]
fn a_flood_of_signals_is_rate_limited_while_video_flows() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-flood",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let stats_topic = format!("meshcam/devices/{}/stats", cam.id);
    let mut obs = Observer::connect(
        &broker,
        "obs-flood",
        &[&stats_topic, "meshcam/rooms/home/peers/+"],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "flooded"]);
    viewer.wait_frames(Some("flooded"), 10);
    let session_of = |obs: &mut Observer, id: &str| {
        let topic = format!("meshcam/rooms/home/peers/{id}");
        obs.seen_or_wait_json(&topic, "a presence", |v| v["session"].is_string())["session"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (viewer_session, cam_session) = (
        session_of(&mut obs, "flooded"),
        session_of(&mut obs, "cam-flood"),
    );
    // Well-formed, current signals in the viewer's name, far beyond its budget.
    let burst = meshcam::room::SIGNAL_BURST as u64;
    let flood = 3 * burst;
    let before = obs.wait_json(&stats_topic, "telemetry before the flood", |_| true);
    let counted = |v: &Value, key: &str| v["signal"][key].as_u64().unwrap_or(0);
    let candidate = json!({"v":1,"type":"candidate","session":viewer_session,"to_session":cam_session,"candidate":null});
    for _ in 0..flood {
        obs.publish(
            "meshcam/rooms/home/signal/cam-flood/flooded",
            candidate.to_string(),
            false,
        );
    }
    let stats = obs.wait_json(&stats_topic, "the whole flood received", |v| {
        counted(v, "received") >= counted(&before, "received") + flood
    });
    // The signals are well-formed and current: the first burst passes, and
    // what is dropped (most of the rest) is over the sender's rate.
    let dropped = counted(&stats, "dropped") - counted(&before, "dropped");
    assert!(
        (flood / 2..=flood - burst).contains(&dropped),
        "{dropped} of {flood} dropped: {stats}"
    );
    assert_eq!(stats["connections"].as_array().unwrap().len(), 1, "{stats}");
    let before = viewer.frames_of("flooded");
    viewer.wait_frames(Some("flooded"), before + 30);
}
