//! systemd integration: sd_notify messages on a test NOTIFY_SOCKET, and
//! SIGHUP reloads without dropping viewers.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::*;
use serde_json::json;

/// Receives notifications until one contains `needle`; returns all seen.
fn wait_notify(socket: &UnixDatagram, needle: &str, seen: &mut Vec<String>) {
    let end = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        socket
            .set_read_timeout(Some(
                end.saturating_duration_since(Instant::now())
                    .max(std::time::Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = msg.lines().any(|l| l == needle);
                seen.push(msg);
                if found {
                    return;
                }
            }
            Err(e) => panic!("no {needle} on NOTIFY_SOCKET ({e}); seen: {seen:?}"),
        }
    }
}

#[test]
fn the_daemon_notifies_ready_watchdog_reload_and_stopping() {
    let broker = broker();
    let dir = temp_dir("cam-notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // systemd names the watched process in WATCHDOG_PID; exec keeps the pid.
    let wrapper = dir.join("meshcam-watched");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nWATCHDOG_PID=$$ exec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cam = Camera::start_with(
        &wrapper,
        &broker,
        "cam-notify",
        SMALL_VIDEO,
        dir.to_path_buf(),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut seen = Vec::new();
    wait_notify(&socket, "READY=1", &mut seen);
    wait_notify(&socket, "WATCHDOG=1", &mut seen);
    wait_notify(&socket, "WATCHDOG=1", &mut seen);
    cam.signal(libc::SIGHUP);
    wait_notify(&socket, "RELOADING=1", &mut seen);
    wait_notify(&socket, "READY=1", &mut seen);
    assert_eq!(cam.terminate(DEADLINE).and_then(|s| s.code()), Some(0));
    wait_notify(&socket, "STOPPING=1", &mut seen);
}

#[test]
fn sighup_applies_the_new_configuration_and_keeps_viewers() {
    let broker = broker();
    let cam = Camera::start(
        &broker,
        "cam-hup",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
    );
    let to_stays = signal_topic("home", "stays", "cam-hup");
    let mut obs = Observer::connect(
        &broker,
        "ctl-hup",
        &[
            &status_topic("cam-hup"),
            "meshcam/clients/ctl-hup/#",
            &to_stays,
        ],
    );
    let mut viewer = Viewer::start(&broker, "home", &["--id", "stays"]);
    viewer.wait_frames(Some("stays"), 10);
    let config = std::fs::read_to_string(cam.config_path()).unwrap();
    let changed = config
        .replace("rooms = [\"home\"]", "rooms = [\"home\", \"garage\"]")
        .replace("bitrate_kbps = 500", "bitrate_kbps = 300")
        .replace("[mqtt]", "[webrtc]\nmax_viewers = 4\n[mqtt]");
    assert_ne!(config, changed);
    std::fs::write(cam.config_path(), changed).unwrap();
    cam.signal(libc::SIGHUP);
    // The status republished on the reload shows the new rooms.
    obs.wait_json(&status_topic("cam-hup"), "the second room", |v| {
        v["rooms"] == json!(["garage", "home"])
    });
    let status = obs.command("cam-hup", json!({"cmd": "status"}));
    assert_eq!(status["result"]["rooms"], json!(["garage", "home"]));
    assert_eq!(status["result"]["max_viewers"], 4);
    let before = viewer.frames_of("stays");
    viewer.wait_frames(Some("stays"), before + 30);
    let stats = obs.command("cam-hup", json!({"cmd": "stats"}));
    assert_eq!(
        stats["result"]["connections"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    assert_eq!(obs.count_seen(is_offer(&to_stays)), 1, "same connection");

    // A broken file is refused and the running configuration stays.
    std::fs::write(cam.config_path(), "[video]\nfps = 0\n").unwrap();
    cam.signal(libc::SIGHUP);
    // The refusal naming the key is the product's answer to a SIGHUP (the
    // journal is where a person reads it); nothing else changes to see.
    cam.wait_log(&["reload refused", "video.fps"]);
    let status = obs.command("cam-hup", json!({"cmd": "status"}));
    assert_eq!(status["result"]["state"], "online");
    assert_eq!(status["result"]["video"]["fps"], 15);
}
