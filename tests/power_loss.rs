//! Power-loss safety: the daemon is killed with SIGKILL again and again while
//! commands make it rewrite its state. Each time, the state file is a whole
//! version (valid, with only rooms that were joined), and the next start
//! reads it.

mod common;

use common::*;
use serde_json::{Value, json};

const ROUNDS: usize = 50;
/// Commands sent per round, each one a state write.
const WRITES: usize = 40;

#[test]
fn sigkill_during_state_writes_never_leaves_a_torn_file() {
    let broker = broker();
    let dir = temp_dir("cam-power");
    let state_file = dir.join("state").join("state.json");
    let rooms: Vec<String> = (0..4).map(|n| format!("r{n}")).collect();
    let mut writes_seen = 0;
    let mut last_rooms = Value::Null;
    for round in 0..ROUNDS {
        // A new device id per round: no retained status of the killed one
        // can pass for this one's. The state directory is the same.
        let id = format!("cam-power-{round}");
        let cam = Camera::start_in(&broker, &id, SMALL_VIDEO, dir.to_path_buf());
        let ctl = format!("ctl-power-{round}");
        let inbox = inbox(&ctl);
        let mut obs = Observer::connect(&broker, &ctl, &[&status_topic(&id), &inbox]);
        obs.seen_or_wait_json(&status_topic(&id), "online", |v| v["state"] == "online");
        // Joins and leaves, published without waiting for their replies.
        for n in 0..WRITES {
            let room = &rooms[n % rooms.len()];
            let cmd = if (n / rooms.len()).is_multiple_of(2) {
                "join"
            } else {
                "leave"
            };
            obs.publish(
                &format!("meshcam/devices/{id}/cmd"),
                json!({"v":1,"id":format!("w{n}"),"cmd":cmd,"room":room,
                       "reply_to":format!("meshcam/clients/{ctl}/r")})
                .to_string(),
                false,
            );
        }
        // Killed while the writes are under way, at varying depths.
        for _ in 0..=round % 4 {
            obs.wait_for("a reply", |t, _| t.starts_with("meshcam/clients/"));
        }
        cam.signal(libc::SIGKILL);
        drop(cam);

        let bytes = std::fs::read(&state_file).expect("a state file after the first write");
        let state: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("round {round}: torn state file ({e}): {bytes:?}"));
        let saved = state["rooms"].as_array().expect("rooms is a list");
        assert!(
            saved
                .iter()
                .all(|r| rooms.iter().any(|known| r == known.as_str())),
            "round {round}: {state}"
        );
        writes_seen += 1;
        last_rooms = state["rooms"].clone();
    }
    assert_eq!(writes_seen, ROUNDS);
    // The last state is read by a clean start; interrupted writes left nothing behind.
    let cam = Camera::start_in(&broker, "cam-power-end", SMALL_VIDEO, dir.to_path_buf());
    let mut obs = Observer::connect(&broker, "ctl-power-end", &[&status_topic("cam-power-end")]);
    let status = obs.seen_or_wait_json(&status_topic("cam-power-end"), "online", |v| {
        v["state"] == "online"
    });
    // The status lists rooms sorted; the state file keeps the join order.
    let sorted = |rooms: &Value| {
        let mut names: Vec<String> = serde_json::from_value(rooms.clone()).expect("room names");
        names.sort();
        names
    };
    assert_eq!(
        sorted(&status["rooms"]),
        sorted(&last_rooms),
        "the last saved rooms are rejoined"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(cam);
}
