//! The camera's send loop (`webrtc.engine`, on by default): its viewers'
//! packets leave from meshcam's own loop, a frame's packets per viewer in
//! one GSO send, and telemetry says so: our own viewers, a viewer that
//! leaves and one that is killed, GStreamer's `webrtcbin` (not our stack)
//! in a namespace of its own; and a camera with the loop turned off, whose
//! connections run their own tasks.

mod common;

use common::netns::{Net, NsBroker, NsCamera, Routes, observer};
use common::webrtcbin::WebrtcbinViewer;
use common::*;
use serde_json::Value;
use std::time::Duration;

const ENGINE: &str = "[webrtc]\nengine = true\n";

fn camera_toml() -> String {
    format!("rooms = [\"home\"]\n{SMALL_VIDEO}{ENGINE}")
}

/// Every connection in the telemetry sends from the loop, with GSO.
fn all_from_the_loop(stats: &Value) -> bool {
    stats["connections"]
        .as_array()
        .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["send_path"] == "loop-gso"))
}

#[test]
fn viewers_of_the_send_loop_decode_frames_and_telemetry_says_how_they_are_sent() {
    let broker = broker();
    let cam = Camera::start(&broker, "cam-loop", &camera_toml());
    let mut obs = Observer::connect(&broker, "obs-loop", &[&stats_topic(&cam.id)]);
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
    let stats = obs.wait_json(
        &stats_topic(&cam.id),
        "three connections from the loop",
        |v| {
            all_from_the_loop(v)
                && v["connections"]
                    .as_array()
                    .is_some_and(|c| c.len() == 3 && c.iter().all(|c| !c["path"].is_null()))
        },
    );
    // On one LAN, straight from the camera's own address.
    assert!(
        stats["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["path"] == "host"),
        "{stats}"
    );
    assert!(
        stats["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["packets_sent"].as_u64() > Some(0)),
        "{stats}"
    );
    // The loop's own counts: what it sent, in GSO sends of several
    // datagrams each, and nothing it could not place.
    let send_loop = &stats["send_loop"];
    assert_eq!(send_loop["send"], "gso", "{send_loop}");
    assert!(!send_loop["sockets"].as_array().unwrap().is_empty());
    let sent = send_loop["datagrams_sent"].as_u64().unwrap();
    let calls = send_loop["send_calls"].as_u64().unwrap();
    assert!(sent > 0 && calls < sent, "{send_loop}");
    assert!(send_loop["datagrams_received"].as_u64() > Some(0));
    assert_eq!(send_loop["unrouted"], 0, "{send_loop}");
    assert_eq!(send_loop["refused"], 0, "{send_loop}");
}

#[test]
fn a_viewer_that_leaves_or_is_killed_is_torn_down_and_the_other_keeps_receiving() {
    let broker = broker();
    let cam = Camera::start(&broker, "cam-loop-leave", &camera_toml());
    let mut obs = Observer::connect(&broker, "obs-loop-leave", &[&stats_topic(&cam.id)]);
    let mut stays = Viewer::start(&broker, "home", &["--id", "stays"]);
    let mut leaves = Viewer::start(&broker, "home", &["--id", "leaves"]);
    let mut victim = Viewer::start(&broker, "home", &["--id", "victim"]);
    stays.wait_frames(Some("stays"), 10);
    leaves.wait_frames(Some("leaves"), 10);
    victim.wait_frames(Some("victim"), 10);
    obs.wait_json(&stats_topic(&cam.id), "three from the loop", |v| {
        all_from_the_loop(v) && connection_peers(v).len() == 3
    });

    kill(leaves.child(), libc::SIGTERM);
    assert_eq!(
        wait_exit(leaves.child(), DEADLINE).and_then(|s| s.code()),
        Some(0)
    );
    kill(victim.child(), libc::SIGKILL);
    let stats = obs.wait_json(&stats_topic(&cam.id), "only the one that stays", |v| {
        connection_peers(v) == ["stays"]
    });
    assert!(all_from_the_loop(&stats), "{stats}");
    let before = stays.frames_of("stays");
    stays.wait_frames(Some("stays"), before + 30);
}

#[test]
fn a_webrtcbin_viewer_decodes_from_the_send_loop_on_a_lan_without_routes() {
    let net = Net::new(Routes::ConnectedOnly);
    let _broker = NsBroker::start(&net);
    let cam = NsCamera::start(&net, "cam-loop-wbin", &camera_toml());
    let mut obs = observer(&net.viewer, &net, "obs-loop-wbin", &[&stats_topic(&cam.id)]);
    let mut viewer = WebrtcbinViewer::start(
        &net.viewer,
        &net.broker_url(),
        net.viewer_addr,
        "home",
        "wbin-loop",
        &[],
    );
    viewer.wait_frames(30, 1, Duration::from_secs(20));
    let stats = obs.wait_json(
        &stats_topic(&cam.id),
        "the viewer from the loop",
        all_from_the_loop,
    );
    assert_eq!(connection_peers(&stats), ["wbin-loop"], "{stats}");
}

#[test]
fn with_the_loop_off_each_connection_runs_its_own_tasks() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-tasks",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}[webrtc]\nengine = false\n"),
    );
    let mut obs = Observer::connect(&broker, "obs-tasks", &[&stats_topic(&cam.id)]);
    let mut viewer = Viewer::start(&broker, "home", &["--id", "by-task"]);
    viewer.wait_frames(Some("by-task"), 30);
    let stats = obs.wait_json(&stats_topic(&cam.id), "a connection on its tasks", |v| {
        v["connections"]
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["send_path"] == "tasks")
    });
    assert_eq!(stats["send_loop"], Value::Null, "no loop runs: {stats}");
}
