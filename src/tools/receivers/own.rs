//! `meshcam view` as receivers: one process for all of them (`--count`),
//! each reporting its frames, its longest gap and its offers every half
//! second.

use std::process::{Child, ChildStdin};
use std::time::Duration;

use serde_json::Value;

use super::{Event, Target};
use crate::tools::testbed::view_command;

/// `meshcam view --count N --id BASE` names its viewers `BASE-0` … or,
/// alone, `BASE`.
pub fn ids(base: &str, count: usize) -> Vec<String> {
    match count {
        1 => vec![base.to_owned()],
        _ => (0..count).map(|i| format!("{base}-{i}")).collect(),
    }
}

pub fn spawn(
    target: &Target,
    ids: &[String],
) -> anyhow::Result<(Child, Option<ChildStdin>, Vec<String>)> {
    let base = format!("{}-view", target.id_prefix);
    let count = ids.len().to_string();
    let args = ["--count", &count, "--id", &base, "--report-interval", "0.5"];
    let child = view_command(target.bin, &target.broker.url(), target.room, &args).spawn()?;
    Ok((child, None, ids.to_vec()))
}

pub fn events(line: &Value) -> Vec<(String, Event)> {
    let Some(id) = line["viewer"].as_str() else {
        return Vec::new();
    };
    let event = match line["event"].as_str() {
        Some("first_frame") => vec![Event::FirstFrame {
            ms: line["ms"].as_f64().unwrap_or(0.0),
        }],
        Some("report") => vec![
            Event::Frames {
                total: line["frames"].as_u64().unwrap_or(0),
                gap: line["gap_ms"].as_u64().map(Duration::from_millis),
                connection: None,
            },
            Event::Offers(line["offers"].as_u64().unwrap_or(0)),
        ],
        _ => Vec::new(),
    };
    event.into_iter().map(|e| (id.to_owned(), e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_line_gives_frames_and_offers() {
        let line =
            json!({"event": "report", "viewer": "v-1", "frames": 90, "gap_ms": 41, "offers": 2});
        assert_eq!(
            events(&line),
            [
                (
                    "v-1".to_owned(),
                    Event::Frames {
                        total: 90,
                        gap: Some(Duration::from_millis(41)),
                        connection: None
                    }
                ),
                ("v-1".to_owned(), Event::Offers(2)),
            ]
        );
        assert!(events(&json!({"event": "summary"})).is_empty());
    }
}
