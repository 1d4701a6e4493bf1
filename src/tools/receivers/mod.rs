//! The receivers `meshcam bench` points at the camera: ours and others'.
//!
//! A camera that only ever streamed to its own viewer has been checked
//! against its own reading of WebRTC. So the benchmark can run, beside
//! `meshcam view` ([`own`]), receivers it did not write, each at its
//! default settings: GStreamer's webrtcbin (`tests/interop/
//! webrtcbin_viewer.py`, [`webrtcbin`]) and Chromium tabs of the
//! independent page (`web/tests/independent`, through
//! `web/bench/tabs.mjs`, [`chromium`]). `--receiver mixed` splits the
//! count across the three ([`split`]).
//!
//! Every kind is a child process printing JSON lines; their lines come in
//! on one channel, each kind turns its own into the shared [`Event`]s, and
//! one [`Tally`] per receiver keeps its frames, offers, longest gap and
//! time to first frame. The camera's drops per receiver come from its
//! telemetry ([`Drops`]); [`Outcome`]s are what a window gave each.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, ChildStdin};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::tools::testbed::{Mosquitto, TopicWatch, forward_json_lines, signal};

mod chromium;
mod drops;
mod outcome;
mod own;
mod tally;
mod webrtcbin;

pub use drops::Drops;
pub use outcome::{Mark, Outcome, print_table, slowest};
use tally::{Event, Tally, fps};
/// The webrtcbin viewer script and the interpreter it needs, for the
/// integration tests that run it too.
pub use webrtcbin::{SCRIPT as WEBRTCBIN_VIEWER, python};

/// Which receivers to run (`--receiver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// `meshcam view`
    Own,
    /// GStreamer's webrtcbin (tests/interop/webrtcbin_viewer.py)
    Webrtcbin,
    /// Chromium tabs of the independent page (web/tests/independent)
    Chromium,
    /// The count split across the three, Chromium first
    Mixed,
}

/// One kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Chromium,
    Webrtcbin,
    Own,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chromium => "chromium",
            Kind::Webrtcbin => "webrtcbin",
            Kind::Own => "own",
        }
    }

    /// The ids of `count` receivers of this kind.
    fn ids(self, prefix: &str, count: usize) -> Vec<String> {
        match self {
            Kind::Own => own::ids(&format!("{prefix}-view"), count),
            Kind::Webrtcbin => (0..count).map(|i| format!("{prefix}-wbin-{i}")).collect(),
            Kind::Chromium => (0..count).map(|i| format!("{prefix}-tab-{i}")).collect(),
        }
    }

    /// What one of its lines says, and about which receiver; `ids` are
    /// the receivers of the process that printed it.
    fn events(self, line: &Value, ids: &[String]) -> Vec<(String, Event)> {
        match self {
            Kind::Own => own::events(line),
            Kind::Webrtcbin => webrtcbin::events(line, ids),
            Kind::Chromium => chromium::events(line),
        }
    }
}

/// How many receivers of each kind `count` receivers of `choice` are:
/// `mixed` gives each kind a third, the remainder to Chromium first, then
/// webrtcbin (8 → 3 Chromium, 3 webrtcbin, 2 own). Kinds with none are
/// left out.
pub fn split(choice: Choice, count: usize) -> Vec<(Kind, usize)> {
    let plan = match choice {
        Choice::Own => vec![(Kind::Own, count)],
        Choice::Webrtcbin => vec![(Kind::Webrtcbin, count)],
        Choice::Chromium => vec![(Kind::Chromium, count)],
        Choice::Mixed => [Kind::Chromium, Kind::Webrtcbin, Kind::Own]
            .into_iter()
            .enumerate()
            .map(|(i, kind)| (kind, count / 3 + usize::from(i < count % 3)))
            .collect(),
    };
    plan.into_iter().filter(|(_, n)| *n > 0).collect()
}

/// Where receivers go: the camera's broker and room, and the prefix of
/// their ids.
pub struct Target<'a> {
    /// This binary (`meshcam view`).
    pub bin: &'a Path,
    pub broker: &'a Mosquitto,
    pub room: &'a str,
    pub camera: &'a str,
    pub id_prefix: &'a str,
}

/// A child process running some receivers of one kind.
struct Process {
    kind: Kind,
    ids: Vec<String>,
    child: Child,
    /// Where a receiver that is told to quit on its input is told.
    stdin: Option<ChildStdin>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Running receivers and their accounts.
pub struct Receivers {
    processes: Vec<Process>,
    lines: mpsc::Receiver<(usize, Value)>,
    tallies: BTreeMap<String, (Kind, Tally)>,
}

/// How often [`Receivers::follow`] reads the camera's telemetry (sent
/// every second in the benchmarks).
const STATS_READ: Duration = Duration::from_millis(500);

/// How long receivers get to leave before they are killed.
const LEAVE: Duration = Duration::from_secs(10);

impl Receivers {
    /// Starts the receivers of `plan`.
    pub fn start(target: &Target, plan: &[(Kind, usize)]) -> anyhow::Result<Self> {
        let (tx, lines) = mpsc::channel();
        let mut receivers = Self {
            processes: Vec::new(),
            lines,
            tallies: BTreeMap::new(),
        };
        for &(kind, count) in plan {
            let ids = kind.ids(target.id_prefix, count);
            let spawned = match kind {
                Kind::Own => vec![own::spawn(target, &ids)?],
                Kind::Webrtcbin => ids
                    .iter()
                    .map(|id| webrtcbin::spawn(target, id))
                    .collect::<anyhow::Result<_>>()?,
                Kind::Chromium => vec![chromium::spawn(target, &ids)?],
            };
            for (mut child, stdin, ids) in spawned {
                let index = receivers.processes.len();
                let stdout = child.stdout.take().expect("spawned with piped stdout");
                forward_json_lines(stdout, tx.clone(), move |v| (index, v));
                receivers.processes.push(Process {
                    kind,
                    ids,
                    child,
                    stdin,
                });
            }
            for id in ids {
                receivers.tallies.insert(id, (kind, Tally::default()));
            }
        }
        Ok(receivers)
    }

    /// Every receiver's id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.tallies.keys().map(String::as_str)
    }

    fn tallies_mut(&mut self) -> impl Iterator<Item = (&String, &mut (Kind, Tally))> {
        self.tallies.iter_mut()
    }

    /// Reads what the receivers say until `until`.
    pub fn pump(&mut self, until: Instant) {
        while let Ok((index, line)) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            let now = Instant::now();
            let process = &self.processes[index];
            for (id, event) in process.kind.events(&line, &process.ids) {
                if let Some((_, tally)) = self.tallies.get_mut(&id) {
                    tally.apply(event, now);
                }
            }
            if now >= until {
                return;
            }
        }
        // The channel is never closed while we hold the processes, but a
        // timeout may come early by a hair.
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }

    /// Reads what the receivers say, and the camera's latest telemetry on
    /// `stats_topic` into `drops` every half second, until `until`.
    pub fn follow(
        &mut self,
        until: Instant,
        camera: &TopicWatch,
        stats_topic: &str,
        drops: &mut Drops,
    ) {
        loop {
            let now = Instant::now();
            self.pump(until.min(now + STATS_READ));
            if let Some(stats) = camera.latest(stats_topic) {
                drops.observe(&stats);
            }
            if Instant::now() >= until {
                return;
            }
        }
    }

    /// Waits until every receiver has had a frame; fails naming the ones
    /// that have not, or a receiver process that ended.
    pub fn wait_first_frames(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        loop {
            let waiting: Vec<&String> = self
                .tallies
                .iter()
                .filter(|(_, (_, t))| t.total_frames() == 0)
                .map(|(id, _)| id)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("no frame within {deadline:?} at {waiting:?}");
            }
            for p in &mut self.processes {
                if let Some(status) = p.child.try_wait()? {
                    bail!(
                        "the {} receiver process of {:?} ended: {status}",
                        p.kind.name(),
                        p.ids
                    );
                }
            }
            self.pump(Instant::now() + Duration::from_millis(200));
        }
    }

    /// Asks every receiver to leave (so the camera sees them go, as it
    /// would a user), and kills those still there after [`LEAVE`].
    pub fn stop(mut self) {
        for p in &mut self.processes {
            match p.stdin.take() {
                // Told on its input: quit, and end of input quits too.
                Some(mut stdin) => {
                    use std::io::Write;
                    let _ = stdin.write_all(b"quit\n");
                }
                None => signal(&p.child, libc::SIGTERM),
            }
        }
        let end = Instant::now() + LEAVE;
        for p in &mut self.processes {
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Dropping the processes kills what is left.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_splits_the_count_in_thirds_chromium_first() {
        assert_eq!(
            split(Choice::Mixed, 8),
            [(Kind::Chromium, 3), (Kind::Webrtcbin, 3), (Kind::Own, 2)]
        );
        assert_eq!(
            split(Choice::Mixed, 4),
            [(Kind::Chromium, 2), (Kind::Webrtcbin, 1), (Kind::Own, 1)]
        );
        assert_eq!(split(Choice::Mixed, 1), [(Kind::Chromium, 1)]);
        assert!(split(Choice::Mixed, 0).is_empty());
    }

    #[test]
    fn one_kind_takes_the_whole_count() {
        assert_eq!(split(Choice::Webrtcbin, 5), [(Kind::Webrtcbin, 5)]);
        assert_eq!(split(Choice::Own, 2), [(Kind::Own, 2)]);
        assert!(split(Choice::Chromium, 0).is_empty());
    }

    #[test]
    fn ids_tell_the_kinds_apart() {
        assert_eq!(Kind::Webrtcbin.ids("b", 2), ["b-wbin-0", "b-wbin-1"]);
        assert_eq!(Kind::Chromium.ids("b", 1), ["b-tab-0"]);
        assert_eq!(Kind::Own.ids("b", 2), ["b-view-0", "b-view-1"]);
        assert_eq!(Kind::Own.ids("b", 1), ["b-view"]);
    }
}
