//! GStreamer's webrtcbin as receivers: one `tests/interop/
//! webrtcbin_viewer.py --no-decode` process each, with its defaults
//! (libnice, rtpbin's RTCP timing). It counts access units out of the
//! depayloader, so many fit on a small machine and what is measured is
//! delivery, not a software decoder's pace.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::{Event, Target};

/// The viewer script, in this source tree.
pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/webrtcbin_viewer.py"
);

/// Debian's interpreter, the one python3-gi is built for (a python3
/// earlier in PATH, such as pyenv's, lacks it).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

pub fn spawn(
    target: &Target,
    id: &str,
) -> anyhow::Result<(Child, Option<ChildStdin>, Vec<String>)> {
    let mut child = Command::new(python())
        .arg(SCRIPT)
        .args(["--broker", &target.broker.url(), "--room", target.room])
        .args(["--id", id, "--bind", "127.0.0.1", "--no-decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!("starting {SCRIPT} (scripts/setup test installs what it needs)")
        })?;
    let stdin = child.stdin.take();
    Ok((child, stdin, vec![id.to_owned()]))
}

/// The process's one receiver is `ids[0]`.
pub fn events(line: &Value, ids: &[String]) -> Vec<(String, Event)> {
    let event = match line["event"].as_str() {
        Some("joined") => Event::Joined,
        Some("offer") => Event::Offer,
        Some("frame") => Event::Frames {
            total: line["count"].as_u64().unwrap_or(0),
            gap: line["gap_ms"].as_u64().map(Duration::from_millis),
            connection: line["conn"].as_u64(),
        },
        _ => return Vec::new(),
    };
    ids.first()
        .map(|id| (id.clone(), event))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frame_and_offer_lines_are_the_processes_receivers() {
        let ids = ["w-0".to_owned()];
        let frame =
            json!({"event": "frame", "count": 60, "conn": 2, "conn_frames": 30, "gap_ms": 70});
        assert_eq!(
            events(&frame, &ids),
            [(
                "w-0".to_owned(),
                Event::Frames {
                    total: 60,
                    gap: Some(Duration::from_millis(70)),
                    connection: Some(2)
                }
            )]
        );
        let offer = json!({"event": "offer", "peer": "cam", "conn": 2, "restart": true});
        assert_eq!(events(&offer, &ids), [("w-0".to_owned(), Event::Offer)]);
        assert!(events(&json!({"event": "state"}), &ids).is_empty());
    }
}
