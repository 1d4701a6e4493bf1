//! The board's build, run: the ARM binary that `cross/build` made, under
//! qemu-user with the target's GStreamer plugins (Debian multiarch), streams
//! the test picture and tone through a real Mosquitto to `meshcam view` on
//! this host (which decodes the pictures), answers `status` and `snapshot`,
//! and stops cleanly on SIGTERM.
//!
//! It needs the cross build and the emulator with the target's plugins, so
//! it is `#[ignore]`d in a plain `cargo test`; `cross/check <target>`
//! installs what it needs and runs it (scripts/test does, for
//! aarch64-unknown-linux-gnu). `CROSS_CHECK_TARGET` names the target
//! (default aarch64-unknown-linux-gnu).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The first start scans the target's GStreamer plugins in-process, under
/// emulation (about 5 s on two cores); the bound only turns a hang into a
/// failure.
const FIRST_START: Duration = Duration::from_secs(120);
const FRAMES: u64 = 60;

/// The cross-built binary and the qemu-user emulator that runs it.
fn cross_build() -> (PathBuf, &'static str) {
    let target = std::env::var("CROSS_CHECK_TARGET")
        .unwrap_or_else(|_| "aarch64-unknown-linux-gnu".to_owned());
    let qemu = match target.as_str() {
        "aarch64-unknown-linux-gnu" => "qemu-aarch64-static",
        "armv7-unknown-linux-gnueabihf" => "qemu-arm-static",
        other => panic!("CROSS_CHECK_TARGET={other}: not a Raspberry Pi OS target"),
    };
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(&target)
        .join("release/meshcam");
    assert!(
        bin.exists(),
        "{} is missing: build it with cross/build {target}",
        bin.display()
    );
    (bin, qemu)
}

#[test]
#[ignore = "needs cross/build and qemu-user with the target's GStreamer plugins: cross/check runs it"]
fn the_arm_build_streams_answers_and_stops_under_emulation() {
    let (bin, qemu) = cross_build();
    let dir = temp_dir("cam-arm");
    // The testbed starts one program; this one starts the emulator. Without
    // binfmt_misc the emulator runs every program the camera starts, and
    // GStreamer's plugin scanner is one: it scans in-process instead.
    let wrapper = dir.join("meshcam-arm");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nGST_REGISTRY_FORK=no exec {qemu} -L / {} \"$@\"\n",
            bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let broker = broker();
    let id = "cam-arm";
    let mut cam = Camera::start_with(
        &wrapper,
        &broker,
        id,
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
        dir.to_path_buf(),
        &[],
    );
    let (status, inbox) = (status_topic(id), inbox("ctl-arm"));
    let snapshot = format!("meshcam/devices/{id}/snapshot");
    let mut obs = Observer::connect(&broker, "ctl-arm", &[&status, &inbox, &snapshot]);
    let online = |t: &str, p: &[u8]| {
        t == status
            && serde_json::from_slice::<serde_json::Value>(p).is_ok_and(|v| v["state"] == "online")
    };
    let start = Instant::now();
    while obs.try_wait_for(Duration::from_secs(1), online).is_none() {
        if let Some(exit) = cam.exited() {
            panic!("the camera exited before it was online: {exit}");
        }
        assert!(
            start.elapsed() < FIRST_START,
            "the camera not online within {FIRST_START:?}"
        );
    }

    let mut viewer = Viewer::start(&broker, "home", &["--id", "viewer-arm", "--decode"]);
    let report = viewer.wait_for("decoded pictures and the microphone's sound", |v| {
        v["event"] == "report"
            && v["decoded"].as_u64().is_some_and(|d| d >= FRAMES)
            && v["audio_packets"].as_u64().is_some_and(|p| p > 0)
    });
    assert!(
        report["width"] == 320 && report["height"] == 240,
        "the test picture's size: {report}"
    );

    let reply = obs.command(id, json!({"cmd": "status"}));
    assert_eq!(reply["ok"], true, "{reply}");
    let result = &reply["result"];
    assert_eq!(result["video"]["width"], 320, "{reply}");
    assert!(
        result["viewers"].as_u64().is_some_and(|n| n >= 1),
        "the viewer counted: {reply}"
    );

    let reply = obs.command(id, json!({"cmd": "snapshot"}));
    assert_eq!(reply["ok"], true, "{reply}");
    let (_, jpeg) = obs.seen_or_wait_for("the snapshot", |t, _| t == snapshot);
    assert_eq!(jpeg_size(&jpeg), (320, 240));

    let exit = cam
        .terminate(Duration::from_secs(30))
        .expect("the camera stops within 30 s of SIGTERM");
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    obs.wait_json(&status, "the camera offline", |v| v["state"] == "offline");
}
