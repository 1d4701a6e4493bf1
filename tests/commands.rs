//! The remote commands of PROTOCOL.md against a running camera.

mod common;

use common::*;
use serde_json::{Value, json};

fn online(obs: &mut Observer, cam: &str) {
    obs.seen_or_wait_json(&status_topic(cam), "online", |v| v["state"] == "online");
}

/// A controller `ctl` subscribed to `cam`'s status, its own inbox and
/// `extra`, once the camera is online.
fn controller(broker: &Mosquitto, cam: &str, ctl: &str, extra: &[&str]) -> Observer {
    let (status, inbox) = (status_topic(cam), inbox(ctl));
    let mut filters = vec![status.as_str(), inbox.as_str()];
    filters.extend_from_slice(extra);
    let mut obs = Observer::connect(broker, ctl, &filters);
    online(&mut obs, cam);
    obs
}

#[test]
fn keyframe_forces_a_key_frame() {
    let broker = broker();
    // Natural key frames only every 60 s, so a new one is the command's.
    let _cam = Camera::start(
        &broker,
        "cam-key",
        &format!("{SMALL_VIDEO}keyframe_interval_s = 60\n"),
    );
    let mut obs = controller(&broker, "cam-key", "ctl-key", &[]);
    let before = obs.command("cam-key", json!({"cmd": "stats"}));
    let keyframes = before["result"]["pipeline"]["keyframes"].as_u64().unwrap();
    let reply = obs.command("cam-key", json!({"cmd": "keyframe"}));
    assert_eq!(reply["ok"], true, "{reply}");
    obs.stats_until("cam-key", "key frame after the command", |stats| {
        stats["pipeline"]["keyframes"].as_u64().unwrap() > keyframes
    });
}

#[test]
fn stats_reply_follows_the_telemetry_shape() {
    let broker = broker();
    let _cam = Camera::start(
        &broker,
        "cam-stats",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut obs = controller(&broker, "cam-stats", "ctl-stats", &[]);
    let mut viewer = Viewer::start(&broker, "home", &["--id", "measured"]);
    viewer.wait_frames(Some("measured"), 10);
    let stats = obs.stats_until("cam-stats", "playing pipeline with an RTT", |stats| {
        stats["pipeline"]["state"] == "playing" && stats["connections"][0]["rtt_ms"].is_number()
    });
    assert_eq!(stats["v"], 1);
    assert_eq!(stats["id"], "cam-stats");
    for key in ["uptime_s", "cpu_percent", "rss_bytes"] {
        assert!(stats[key].is_number(), "{key}: {stats}");
    }
    assert_eq!(stats["pipeline"]["state"], "playing");
    let connection = &stats["connections"][0];
    assert_eq!(connection["peer"], "measured");
    assert_eq!(connection["state"], "connected");
    // Measured (null until then), in milliseconds: a loopback round trip
    // is far below a second.
    let rtt = connection["rtt_ms"].as_f64().unwrap();
    assert!((0.0..1000.0).contains(&rtt), "{stats}");
    assert!(connection["packets_sent"].as_u64().unwrap() > 0);
    assert!(connection["bytes_sent"].as_u64().unwrap() > 0);
    assert!(connection["nacks"].is_u64() && connection["plis"].is_u64());
    // The viewer's answer at least.
    assert!(stats["signal"]["received"].as_u64() >= Some(1), "{stats}");
    assert!(stats["commands"]["received"].as_u64() >= Some(1));
}

#[test]
fn set_changes_the_bitrate_live_and_the_size_with_a_rebuild() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-set",
        "rooms = [\"home\"]\n[video]\nwidth = 640\nheight = 360\nfps = 15\nbitrate_kbps = 1500\n",
    );
    let to_watch = signal_topic("home", "watch", &cam.id);
    let mut obs = Observer::connect(
        &broker,
        "ctl-set",
        &[&status_topic(&cam.id), &inbox("ctl-set"), &to_watch],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "watch", "--decode"]);
    viewer.wait_for("640 wide pictures", |v| {
        v["event"] == "report" && v["width"] == 640
    });
    viewer.wait_for("a high bitrate", |v| {
        v["event"] == "report" && v["kbps"].as_f64() > Some(800.0)
    });

    let reply = obs.command(&cam.id, json!({"cmd": "set", "bitrate_kbps": 150}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["bitrate_kbps"], 150);
    // The viewer's own measurement drops, on the same connection.
    viewer.wait_for("a low bitrate", |v| {
        v["event"] == "report" && v["kbps"].as_f64().is_some_and(|k| k > 0.0 && k < 400.0)
    });

    let reply = obs.command(&cam.id, json!({"cmd": "set", "width": 320, "height": 180}));
    assert_eq!(reply["ok"], true, "{reply}");
    viewer.wait_for("320 wide pictures", |v| {
        v["event"] == "report" && v["width"] == 320
    });
    let reply = obs.command(&cam.id, json!({"cmd": "set", "max_viewers": 3}));
    assert_eq!(reply["result"]["max_viewers"], 3);
    // A reply comes after every signal the camera sent before it.
    let status = obs.command(&cam.id, json!({"cmd": "status"}));
    assert_eq!(
        obs.count_seen(is_offer(&to_watch)),
        1,
        "the viewer kept its connection"
    );
    assert_eq!(status["result"]["max_viewers"], 3);
    assert_eq!(status["result"]["video"]["width"], 320);

    for bad in [
        json!({"cmd": "set"}),
        json!({"cmd": "set", "fps": 0}),
        json!({"cmd": "set", "width": 100000}),
        json!({"cmd": "set", "bitrate_kbps": "fast"}),
    ] {
        let reply = obs.command(&cam.id, bad.clone());
        assert_eq!(reply["error"]["code"], "bad_request", "{bad} → {reply}");
    }
}

#[test]
fn set_values_are_durable() {
    let broker = broker();
    let dir = temp_dir("cam-setdur");
    let mut cam = Camera::start_in(&broker, "cam-setdur", SMALL_VIDEO, dir.to_path_buf());
    let mut obs = controller(&broker, "cam-setdur", "ctl-dur", &[]);
    let reply = obs.command(
        "cam-setdur",
        json!({"cmd": "set", "fps": 10, "max_viewers": 5}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(cam.terminate(DEADLINE).and_then(|s| s.code()), Some(0));
    drop(cam);
    let _again = Camera::start_in(&broker, "cam-setdur", SMALL_VIDEO, dir.to_path_buf());
    let mut obs = Observer::connect(
        &broker,
        "ctl-dur2",
        &[&status_topic("cam-setdur"), &inbox("ctl-dur2")],
    );
    let status = obs.seen_or_wait_json(&status_topic("cam-setdur"), "online after restart", |v| {
        v["state"] == "online"
    });
    assert_eq!(status["video"]["fps"], 10);
    assert_eq!(status["max_viewers"], 5);
}

#[test]
fn restart_rebuilds_the_pipeline_and_keeps_viewers() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-restart",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let to_stays = signal_topic("home", "stays", &cam.id);
    let mut obs = Observer::connect(
        &broker,
        "ctl-restart",
        &[&status_topic(&cam.id), &inbox("ctl-restart"), &to_stays],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "stays", "--decode"]);
    viewer.wait_frames(Some("stays"), 10);
    let reply = obs.command(&cam.id, json!({"cmd": "restart"}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["restarts"], 1);
    let before = viewer.frames_of("stays");
    viewer.wait_frames(Some("stays"), before + 30);
    let stats = obs.command(&cam.id, json!({"cmd": "stats"}));
    assert_eq!(stats["result"]["pipeline"]["restarts"], 1);
    assert_eq!(stats["result"]["connections"].as_array().unwrap().len(), 1);
    assert_eq!(
        obs.count_seen(is_offer(&to_stays)),
        1,
        "the viewer kept its connection"
    );
}

#[test]
fn snapshot_publishes_a_jpeg_of_the_configured_size() {
    let broker = broker();
    let _cam = Camera::start(&broker, "cam-snap", SMALL_VIDEO);
    let mut obs = controller(
        &broker,
        "cam-snap",
        "ctl-snap",
        &["meshcam/devices/cam-snap/snapshot"],
    );
    let reply = obs.command(
        "cam-snap",
        json!({"cmd": "snapshot", "topic": "meshcam/clients/ctl-snap/snap"}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["width"], 320);
    assert_eq!(reply["result"]["height"], 240);
    let (_, jpeg) = obs.seen_or_wait_for("the JPEG", |t, _| t == "meshcam/clients/ctl-snap/snap");
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start of image");
    assert_eq!(reply["result"]["bytes"], jpeg.len());
    assert_eq!(jpeg_size(&jpeg), (320, 240));

    // Without a topic, the device's snapshot topic.
    let reply = obs.command("cam-snap", json!({"cmd": "snapshot"}));
    assert_eq!(
        reply["result"]["topic"],
        "meshcam/devices/cam-snap/snapshot"
    );
    let (_, jpeg) = obs.seen_or_wait_for("the default JPEG", |t, _| {
        t == "meshcam/devices/cam-snap/snapshot"
    });
    assert_eq!(jpeg_size(&jpeg), (320, 240));

    let bad = obs.command(
        "cam-snap",
        json!({"cmd": "snapshot", "topic": "meshcam/devices/x/cmd"}),
    );
    assert_eq!(bad["error"]["code"], "bad_request");
}

#[test]
fn a_reply_to_outside_the_client_inboxes_is_refused_on_the_default_topic() {
    let broker = broker();
    let _cam = Camera::start(&broker, "cam-rt", SMALL_VIDEO);
    let mut obs = controller(
        &broker,
        "cam-rt",
        "ctl-rt",
        &["meshcam/devices/cam-rt/reply"],
    );
    obs.publish(
        "meshcam/devices/cam-rt/cmd",
        json!({"v":1,"id":"x-1","cmd":"status","reply_to":"meshcam/devices/cam-rt/cmd"})
            .to_string(),
        false,
    );
    let reply: Value = obs.wait_json("meshcam/devices/cam-rt/reply", "refusal", |v| {
        v["id"] == "x-1"
    });
    assert_eq!(reply["error"]["code"], "bad_request");
}

#[test]
fn a_command_of_another_version_is_refused_with_a_null_id() {
    let broker = broker();
    let _cam = Camera::start(&broker, "cam-v2", SMALL_VIDEO);
    let mut obs = controller(
        &broker,
        "cam-v2",
        "ctl-v2",
        &["meshcam/devices/cam-v2/reply"],
    );
    obs.publish(
        "meshcam/devices/cam-v2/cmd",
        json!({"v":2,"id":"v2-1","cmd":"status","reply_to":"meshcam/clients/ctl-v2/r"}).to_string(),
        false,
    );
    let reply: Value = obs.wait_json("meshcam/devices/cam-v2/reply", "refusal", |v| {
        v["ok"] == false
    });
    assert_eq!(reply["id"], Value::Null, "{reply}");
    assert_eq!(reply["v"], 1, "{reply}");
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    // The camera still answers version 1, and counted the refusal.
    let stats = obs.command("cam-v2", json!({"cmd": "stats"}));
    assert_eq!(stats["result"]["commands"]["errors"], 1, "{stats}");
}

#[test]
fn joins_beyond_the_room_limit_are_refused_and_the_rooms_stay() {
    let broker = broker();
    let _cam = Camera::start(&broker, "cam-many", SMALL_VIDEO);
    let mut obs = controller(&broker, "cam-many", "ctl-many", &[]);
    for n in 0..meshcam::room::MAX_ROOMS {
        let reply = obs.command("cam-many", json!({"cmd": "join", "room": format!("r{n}")}));
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let refused = obs.command("cam-many", json!({"cmd": "join", "room": "one-too-many"}));
    assert_eq!(refused["error"]["code"], "busy", "{refused}");
    // Joining a room it is already in is no new room.
    let again = obs.command("cam-many", json!({"cmd": "join", "room": "r0"}));
    assert_eq!(again["ok"], true, "{again}");
    let status = obs.command("cam-many", json!({"cmd": "status"}));
    assert_eq!(
        status["result"]["rooms"].as_array().map(Vec::len),
        Some(meshcam::room::MAX_ROOMS),
        "{status}"
    );
}

#[test]
fn an_oversized_retained_presence_is_dropped_and_counted_and_the_camera_stays() {
    let broker = broker();
    let _cam = Camera::start(
        &broker,
        "cam-big",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let mut obs = controller(&broker, "cam-big", "ctl-big", &[]);
    let dropped = |stats: &Value| stats["signal"]["dropped"].as_u64().unwrap();
    let before = dropped(&obs.command("cam-big", json!({"cmd": "stats"}))["result"]);
    // Over the 64 KiB payload limit, within the broker's packet limit, and
    // retained: a camera cut off by it would meet it at every reconnect.
    obs.publish(
        "meshcam/rooms/home/peers/intruder",
        vec![b' '; 2 << 20],
        true,
    );
    obs.stats_until(
        "cam-big",
        "oversized presence counted as dropped",
        |stats| dropped(stats) > before,
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "after-big"]);
    viewer.wait_frames(Some("after-big"), 10);
}
