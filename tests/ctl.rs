//! `meshcam ctl` against a running camera: replies, exit codes, `ls`.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn ctl(broker: &Mosquitto, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["ctl", "--broker", &broker.url()])
        .args(args)
        .output()
        .expect("the meshcam binary runs")
}

fn reply_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON reply ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn ctl_prints_replies_and_maps_them_to_exit_codes() {
    let broker = broker();
    let _cam = Camera::start(&broker, "cam-ctl", SMALL_VIDEO);
    let mut obs = Observer::connect(&broker, "obs-ctl", &[&status_topic("cam-ctl")]);
    obs.seen_or_wait_json(&status_topic("cam-ctl"), "online", |v| {
        v["state"] == "online"
    });

    let join = ctl(&broker, &["--device", "cam-ctl", "join", "home"]);
    assert_eq!(join.status.code(), Some(0));
    let reply = reply_of(&join);
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["result"]["rooms"], serde_json::json!(["home"]));

    let mute = ctl(&broker, &["--device", "cam-ctl", "mute"]);
    assert_eq!(mute.status.code(), Some(0));
    assert_eq!(reply_of(&mute)["result"]["muted"], true);
    let whip = ctl(&broker, &["--device", "cam-ctl", "set", "whip_mode=always"]);
    assert_eq!(
        whip.status.code(),
        Some(1),
        "no WHIP endpoint is configured"
    );
    assert_eq!(reply_of(&whip)["error"]["code"], "bad_request");

    let missing = ctl(&broker, &["--device", "cam-ctl", "leave", "attic"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(reply_of(&missing)["error"]["code"], "not_found");

    let bad_set = ctl(&broker, &["--device", "cam-ctl", "set", "fps=500"]);
    assert_eq!(bad_set.status.code(), Some(1));
    assert_eq!(reply_of(&bad_set)["error"]["code"], "bad_request");

    let usage = ctl(&broker, &["--device", "cam-ctl", "set", "nonsense"]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = ctl(&broker, &["--device", "cam-ctl", "fly"]);
    assert_eq!(usage.status.code(), Some(2));

    let nobody = ctl(
        &broker,
        &["--device", "cam-nobody", "--timeout", "1", "status"],
    );
    assert_eq!(nobody.status.code(), Some(3));

    let dir = temp_dir("ctl-snap");
    let jpeg = dir.join("snap.jpg");
    let snap = ctl(
        &broker,
        &[
            "--device",
            "cam-ctl",
            "snapshot",
            "--out",
            jpeg.to_str().unwrap(),
        ],
    );
    assert_eq!(
        snap.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&snap.stderr)
    );
    let bytes = std::fs::read(&jpeg).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    assert_eq!(reply_of(&snap)["result"]["bytes"], bytes.len());
}

#[test]
fn ctl_ls_lists_devices_from_retained_status() {
    let broker = broker();
    let _a = Camera::start(&broker, "cam-a", SMALL_VIDEO);
    let mut b = Camera::start(&broker, "cam-b", SMALL_VIDEO);
    let mut obs = Observer::connect(&broker, "obs-ls", &["meshcam/devices/+/status"]);
    obs.seen_or_wait_json(&status_topic("cam-a"), "a online", |v| {
        v["state"] == "online"
    });
    obs.seen_or_wait_json(&status_topic("cam-b"), "b online", |v| {
        v["state"] == "online"
    });
    assert_eq!(b.terminate(DEADLINE).and_then(|s| s.code()), Some(0));
    obs.wait_json(&status_topic("cam-b"), "b offline", |v| {
        v["state"] == "offline"
    });

    let out = ctl(&broker, &["ls"]);
    assert_eq!(out.status.code(), Some(0));
    let devices: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<(String, String)> = devices
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().into(),
                d["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("cam-a".to_string(), "online".to_string()),
            ("cam-b".to_string(), "offline".to_string())
        ]
    );
}
