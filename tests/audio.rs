//! The microphone, for real: a camera on the test tone offers Opus beside
//! H.264 in one media stream and sends it to the viewer, which decodes the
//! tone at its pitch and level; and a microphone that cannot be opened
//! leaves the picture flowing while it is reported and retried.

mod common;

use common::*;

const ROOM_TOML: &str =
    "rooms = [\"home\"]\n[video]\nwidth = 320\nheight = 240\nbitrate_kbps = 300\n";

#[test]
fn the_offer_carries_opus_in_the_video_stream_and_the_microphone_plays() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-sound",
        &format!("{ROOM_TOML}[audio]\ntest_tone_hz = 660\n"),
    );
    let mut obs = Observer::connect(
        &broker,
        "obs-sound",
        &[
            "meshcam/rooms/home/signal/ear/cam-sound",
            &inbox("obs-sound"),
        ],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "ear", "--decode"]);
    viewer.wait_frames(Some("ear"), 10);
    let offer = obs.seen_or_wait_json(
        "meshcam/rooms/home/signal/ear/cam-sound",
        "the camera's offer",
        |v| v["type"] == "offer",
    );
    let sdp = offer["sdp"].as_str().unwrap();
    assert!(sdp.contains("m=audio"), "{sdp}");
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "{sdp}");
    // Viewers do not send sound back.
    let audio = &sdp[sdp.find("m=audio").unwrap()..];
    assert!(audio.contains("a=sendonly"), "{audio}");
    // Both tracks in one stream: a browser plays them in one element.
    let streams: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(streams, ["meshcam", "meshcam"], "{sdp}");
    let stats = obs.stats_until(&cam.id, "Opus packets sent to the viewer", |s| {
        s["audio"]["state"] == "playing"
            && s["connections"][0]["audio_packets_sent"]
                .as_u64()
                .unwrap_or(0)
                > 50
    });
    assert!(stats["audio"]["error"].is_null(), "{stats}");
    assert!(stats["audio"]["packets"].as_u64().unwrap() > 50, "{stats}");
    // The viewer gets them on its audio track, apart from the video's
    // frames, and decodes the tone: its pitch, and its level (the test
    // source's volume 0.3 is −13.5 dBFS).
    let heard = viewer.wait_for("the 660 Hz tone decoded", |v| {
        v["event"] == "report"
            && v["audio_packets"].as_u64().unwrap_or(0) > 50
            && v["audio_hz"]
                .as_u64()
                .is_some_and(|hz| hz.abs_diff(660) <= 5)
    });
    let dbfs = heard["audio_dbfs"].as_f64().unwrap();
    assert!(
        (-16.5..=-10.5).contains(&dbfs),
        "level {dbfs} dBFS: {heard}"
    );
}

#[test]
fn a_microphone_that_cannot_be_opened_is_retried_and_the_picture_flows() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-nomic",
        &format!("{ROOM_TOML}[audio]\nsource = \"alsa\"\ndevice = \"hw:9,0\"\n"),
    );
    let mut obs = Observer::connect(&broker, "obs-nomic", &[&inbox("obs-nomic")]);
    let mut viewer = Viewer::start(&broker, "home", &["--id", "eyes"]);
    viewer.wait_frames(Some("eyes"), 30);
    let stats = obs.stats_until(&cam.id, "the microphone retried", |s| {
        s["audio"]["state"] == "error" && s["audio"]["restarts"].as_u64().unwrap_or(0) >= 1
    });
    let error = stats["audio"]["error"].as_str().unwrap();
    assert!(
        error.contains("hw:9,0"),
        "the error names the device: {error}"
    );
    assert_eq!(stats["pipeline"]["state"], "playing", "{stats}");
    let frames = viewer.frames_of("eyes");
    viewer.wait_frames(Some("eyes"), frames + 15);
}

#[test]
fn mute_silences_the_microphone_at_once_and_across_a_restart() {
    let broker = broker();
    let dir = temp_dir("cam-mute");
    let mut cam = Camera::start_in(&broker, "cam-mute", ROOM_TOML, dir.to_path_buf());
    let status = status_topic("cam-mute");
    let mut obs = Observer::connect(&broker, "obs-mute", &[&status, &inbox("obs-mute")]);
    let mut viewer = Viewer::start(&broker, "home", &["--id", "ear-mute", "--decode"]);
    let tone = |v: &serde_json::Value| {
        v["event"] == "report"
            && v["audio_hz"]
                .as_u64()
                .is_some_and(|hz| hz.abs_diff(440) <= 5)
    };
    viewer.wait_for("the 440 Hz tone", tone);
    let reply = obs.command(&cam.id, serde_json::json!({"cmd": "mute"}));
    assert_eq!(reply["result"]["muted"], true, "{reply}");
    // The viewer keeps its connection and gets silence.
    let silent = viewer.wait_for("silence", |v| {
        v["event"] == "report" && v["audio_dbfs"].as_f64().is_some_and(|db| db < -60.0)
    });
    assert!(silent["audio_packets"].as_u64() > Some(50), "{silent}");
    assert_eq!(obs.stats(&cam.id)["audio"]["muted"], true);
    let reply = obs.command(&cam.id, serde_json::json!({"cmd": "unmute"}));
    assert_eq!(reply["result"]["muted"], false, "{reply}");
    viewer.wait_for("the tone again", tone);
    // Muted again, it stays muted when the camera starts again.
    obs.command(&cam.id, serde_json::json!({"cmd": "mute"}));
    assert!(cam.terminate(DEADLINE).is_some_and(|s| s.success()));
    obs.wait_json(&status, "the camera offline", |v| v["state"] == "offline");
    let cam = Camera::start_in(&broker, "cam-mute", ROOM_TOML, dir.to_path_buf());
    obs.wait_json(&status, "the camera online again", |v| {
        v["state"] == "online"
    });
    obs.stats_until(&cam.id, "the microphone muted after the restart", |s| {
        s["audio"]["muted"] == true && s["audio"]["state"] == "playing"
    });
}
