//! Chromium tabs as receivers: `web/bench/tabs.mjs` opens one headless
//! Chromium (Debian's, at its defaults) with a tab per receiver on the
//! independent page and prints a line per tab every second: frames
//! decoded (getStats), offers, and the longest wait between two frames
//! the tab presented (requestVideoFrameCallback).

use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::{Event, Target};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn spawn(
    target: &Target,
    ids: &[String],
) -> anyhow::Result<(Child, Option<ChildStdin>, Vec<String>)> {
    let web = std::path::Path::new(ROOT).join("web");
    anyhow::ensure!(
        web.join("node_modules/playwright-core").is_dir(),
        "Chromium receivers need web/node_modules: run `cd web && npm ci`"
    );
    let broker = target
        .broker
        .ws_url()
        .context("Chromium receivers need the broker's WebSockets listener")?;
    let child = Command::new("node")
        .arg(web.join("bench/tabs.mjs"))
        .args(["--broker", &broker, "--room", target.room])
        .args(["--camera", target.camera, "--ids", &ids.join(",")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting node web/bench/tabs.mjs")?;
    Ok((child, None, ids.to_vec()))
}

pub fn events(line: &Value) -> Vec<(String, Event)> {
    let Some(id) = line["tab"].as_str() else {
        return Vec::new();
    };
    let events = match line["event"].as_str() {
        Some("joined") => vec![Event::Joined],
        Some("first_frame") => vec![Event::FirstFrame {
            ms: line["ms"].as_f64().unwrap_or(0.0),
        }],
        Some("report") => vec![
            // The tab's video element outlives its connections: its gaps
            // span a reconnection too.
            Event::Frames {
                total: line["frames"].as_u64().unwrap_or(0),
                gap: line["gap_ms"]
                    .as_f64()
                    .map(|ms| Duration::from_micros((ms * 1000.0).round() as u64)),
                connection: None,
            },
            Event::Offers(line["offers"].as_u64().unwrap_or(0)),
        ],
        _ => Vec::new(),
    };
    events.into_iter().map(|e| (id.to_owned(), e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_line_gives_frames_and_offers_of_its_tab() {
        let line =
            json!({"event": "report", "tab": "t-0", "frames": 300, "offers": 1, "gap_ms": 50.5});
        assert_eq!(
            events(&line),
            [
                (
                    "t-0".to_owned(),
                    Event::Frames {
                        total: 300,
                        gap: Some(Duration::from_micros(50_500)),
                        connection: None
                    }
                ),
                ("t-0".to_owned(), Event::Offers(1)),
            ]
        );
        assert!(events(&json!({"event": "ready"})).is_empty());
    }
}
