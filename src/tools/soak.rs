//! `meshcam soak`: viewer churn against one camera, then a check that it
//! gave back what the viewers took.
//!
//! A camera on a shelf sees thousands of viewers come and go over months.
//! The soak starts Mosquitto and the camera daemon (this binary, on the test
//! picture), then runs `meshcam view` processes from a few workers, each
//! process holding several viewers, until the requested number of viewer
//! cycles is done. The cycles rotate through the three ways a viewer ends:
//!
//! - **clean**: it gets its frames and leaves (`bye`, presence cleared);
//! - **killed**: SIGKILL after its first frame, so its MQTT will clears its
//!   presence;
//! - **ICE failure**: SIGSTOP after its first frame, so its UDP goes silent
//!   and the camera's ICE fails; once the camera has dropped the connection
//!   the process is killed.
//!
//! Before and after, with no viewer left, it reads the camera's open files,
//! threads and RSS from `/proc` and its tokio task count from telemetry, and
//! checks them against [`Bounds`]. The camera's log must hold no panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::procstat;
use crate::protocol::Topics;
use crate::tools::testbed::{CameraProcess, Mosquitto, TempDir, TopicWatch, ViewerProcess, signal};

const ROOM: &str = "soak";
const CAMERA: &str = "soak-cam";
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Viewer join/leave cycles in all.
    pub cycles: usize,
    /// `meshcam view` processes running at once.
    pub workers: usize,
    /// Viewers in one `meshcam view` process.
    pub viewers_per_process: usize,
}

/// How far the camera's resources may end above where they started.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub open_fds: i64,
    pub threads: i64,
    pub tasks: i64,
    pub rss_bytes: i64,
}

pub const BOUNDS: Bounds = Bounds {
    open_fds: 4,
    threads: 4,
    tasks: 4,
    rss_bytes: 16 * 1024 * 1024,
};

/// The camera's resources at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub open_fds: u64,
    pub threads: u64,
    pub tasks: u64,
    pub rss_bytes: u64,
}

impl Bounds {
    /// Whether every field is at most `bounds`'.
    fn within(&self, bounds: &Bounds) -> bool {
        self.open_fds <= bounds.open_fds
            && self.threads <= bounds.threads
            && self.tasks <= bounds.tasks
            && self.rss_bytes <= bounds.rss_bytes
    }
}

impl Snapshot {
    /// `self - before`, field by field.
    fn drift(&self, before: &Snapshot) -> Bounds {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        Bounds {
            open_fds: d(self.open_fds, before.open_fds),
            threads: d(self.threads, before.threads),
            tasks: d(self.tasks, before.tasks),
            rss_bytes: d(self.rss_bytes, before.rss_bytes),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SoakReport {
    pub cycles: [usize; 3],
    pub elapsed: Duration,
    pub before: Snapshot,
    pub after: Snapshot,
    pub drift: Bounds,
    pub within_bounds: bool,
    pub panics: usize,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Clean,
    Killed,
    IceFailure,
}

const ENDINGS: [Ending; 3] = [Ending::Clean, Ending::Killed, Ending::IceFailure];

struct Soak {
    bin: PathBuf,
    broker: Mosquitto,
    camera: CameraProcess,
    watch: TopicWatch,
    stats_topic: String,
    status_topic: String,
    per_process: usize,
}

impl Soak {
    /// One `meshcam view` process of `per_process` viewers, ended by `ending`.
    fn cycle(&self, ending: Ending) -> anyhow::Result<()> {
        let count = self.per_process.to_string();
        let mut args = vec!["--count", &count, "--report-interval", "0.5"];
        if let Ending::Clean = ending {
            args.extend(["--frames", "5"]);
        }
        let mut view = ViewerProcess::spawn(&self.bin, &self.broker.url(), ROOM, &args)?;
        let Some(ids) = view.first_frames(self.per_process, DEADLINE) else {
            bail!("{ending:?}: not all {count} viewers got a frame");
        };
        match ending {
            Ending::Clean => {
                let status = view.child.wait().context("waiting for the viewer")?;
                if !status.success() {
                    bail!("a clean viewer process ended with {status}");
                }
            }
            Ending::Killed => signal(&view.child, libc::SIGKILL),
            Ending::IceFailure => {
                self.watch.wait(
                    &self.stats_topic,
                    "the viewers connected",
                    DEADLINE,
                    |stats| {
                        ids.iter()
                            .all(|id| holds_connected(stats, std::slice::from_ref(id)))
                    },
                )?;
                signal(&view.child, libc::SIGSTOP);
                self.wait_closed(&ids)?;
                signal(&view.child, libc::SIGKILL);
            }
        }
        let _ = view.child.wait();
        Ok(())
    }

    /// Waits until the camera has closed its connection to each of `ids`
    /// (their presence is still there: ICE failed them): its telemetry
    /// holds none to them, or only new attempts that have sent nothing.
    fn wait_closed(&self, ids: &[String]) -> anyhow::Result<()> {
        self.watch
            .wait(
                &self.stats_topic,
                "the silent viewers' connections closed",
                DEADLINE,
                |stats| ids.iter().all(|id| !holds_used(stats, id)),
            )
            .with_context(|| {
                format!("the camera kept the connections of silent viewers {ids:?}")
            })?;
        Ok(())
    }

    /// Waits for a camera at rest and reads its resources: no viewers, no
    /// connections, and a telemetry message sent a full interval after
    /// that (its task count is at rest). With a `baseline`, it also waits
    /// until the resources are back within [`BOUNDS`] of it (tokio's idle
    /// blocking threads exit 10 s after their last task), up to the
    /// deadline, and returns what it reads then.
    fn at_rest(&self, baseline: Option<&Snapshot>) -> anyhow::Result<Snapshot> {
        self.watch
            .wait(&self.status_topic, "no viewers", DEADLINE, |v| {
                v["viewers"] == 0
            })?;
        let mut last = self.watch.wait(
            &self.stats_topic,
            "no connections",
            DEADLINE,
            no_connections,
        )?;
        let end = Instant::now() + DEADLINE;
        loop {
            let uptime = last["uptime_s"].as_u64();
            let stats = self
                .watch
                .wait(&self.stats_topic, "telemetry at rest", DEADLINE, |v| {
                    no_connections(v) && v["uptime_s"].as_u64() > uptime && v["tasks"].is_u64()
                })?;
            let usage = procstat::read(&self.camera.child.id().to_string())
                .context("reading the camera's /proc")?;
            let snapshot = Snapshot {
                open_fds: usage.open_fds,
                threads: usage.threads,
                tasks: stats["tasks"].as_u64().unwrap_or(0),
                rss_bytes: usage.rss_bytes,
            };
            match baseline {
                Some(before) if !snapshot.drift(before).within(&BOUNDS) && Instant::now() < end => {
                    last = stats;
                }
                _ => return Ok(snapshot),
            }
        }
    }
}

fn no_connections(stats: &Value) -> bool {
    stats["connections"].as_array().is_some_and(Vec::is_empty)
}

/// Whether the camera's stats show a connection to `id` that has carried
/// media (a new attempt to a silent viewer never does).
fn holds_used(stats: &Value, id: &str) -> bool {
    stats["connections"].as_array().is_some_and(|connections| {
        connections
            .iter()
            .any(|c| c["peer"] == id && c["packets_sent"].as_u64() > Some(0))
    })
}

/// Whether the camera's stats show any of `ids` connected.
fn holds_connected(stats: &Value, ids: &[String]) -> bool {
    stats["connections"].as_array().is_some_and(|connections| {
        connections
            .iter()
            .any(|c| c["state"] == "connected" && ids.iter().any(|id| c["peer"] == id.as_str()))
    })
}

/// Runs the soak and prints its report.
pub fn run(bin: &Path, options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let broker = Mosquitto::start("")?;
    let dir = TempDir::new("soak")?;
    let toml = format!(
        "rooms = [\"{ROOM}\"]\nstats_interval_s = 1\n[video]\nwidth = 320\nheight = 240\nfps = 15\n\
         bitrate_kbps = 300\n[webrtc]\nmax_viewers = 64\n"
    );
    let camera = CameraProcess::spawn(bin, &broker.url(), CAMERA, &toml, &dir, &[])?;
    let topics = Topics::new("meshcam");
    let (stats_topic, status_topic) = (topics.stats(CAMERA), topics.status(CAMERA));
    let watch = TopicWatch::connect(&broker, &[stats_topic.clone(), status_topic.clone()])?;
    watch.wait(&status_topic, "online", DEADLINE, |v| {
        v["state"] == "online"
    })?;
    let soak = Arc::new(Soak {
        bin: bin.to_owned(),
        broker,
        camera,
        watch,
        stats_topic,
        status_topic,
        per_process: options.viewers_per_process.max(1),
    });

    // One cycle of each ending first, so that what is allocated once (codec
    // tables, thread pools) is in the baseline, not in the drift.
    for ending in ENDINGS {
        soak.cycle(ending)?;
    }
    let before = soak.at_rest(None)?;
    println!("soak: at rest before: {before:?}");

    let started = Instant::now();
    let processes = options.cycles.div_ceil(soak.per_process);
    let next = Arc::new(AtomicUsize::new(0));
    let done: [Arc<AtomicUsize>; 3] = Default::default();
    let workers: Vec<_> = (0..options.workers.max(1))
        .map(|_| {
            let (soak, next, done) = (soak.clone(), next.clone(), done.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= processes {
                        return Ok(());
                    }
                    let kind = n % ENDINGS.len();
                    soak.cycle(ENDINGS[kind])?;
                    done[kind].fetch_add(soak.per_process, Ordering::SeqCst);
                    let total: usize = done.iter().map(|d| d.load(Ordering::SeqCst)).sum();
                    if total % 100 < soak.per_process {
                        println!("soak: {total} cycles in {:.0?}", started.elapsed());
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a soak worker panicked"))??;
    }
    let elapsed = started.elapsed();
    let after = soak.at_rest(Some(&before))?;
    let drift = after.drift(&before);
    let within_bounds = drift.within(&BOUNDS);
    let log = soak.camera.log();
    let report = SoakReport {
        cycles: done.map(|d| d.load(Ordering::SeqCst)),
        elapsed,
        before,
        after,
        drift,
        within_bounds,
        panics: log.matches("panicked").count(),
    };
    print_report(&report);
    Ok(report)
}

fn print_report(r: &SoakReport) {
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    println!(
        "soak: {} viewer cycles ({} clean, {} killed, {} ICE failures) in {:.0?}",
        r.cycles.iter().sum::<usize>(),
        r.cycles[0],
        r.cycles[1],
        r.cycles[2],
        r.elapsed
    );
    println!("| | before | after | drift | bound |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, b: u64, a: u64, d: i64, bound: i64| {
        println!("| {name} | {b} | {a} | {d:+} | {bound:+} |");
    };
    row(
        "open fds",
        r.before.open_fds,
        r.after.open_fds,
        r.drift.open_fds,
        BOUNDS.open_fds,
    );
    row(
        "threads",
        r.before.threads,
        r.after.threads,
        r.drift.threads,
        BOUNDS.threads,
    );
    row(
        "tokio tasks",
        r.before.tasks,
        r.after.tasks,
        r.drift.tasks,
        BOUNDS.tasks,
    );
    println!(
        "| RSS MiB | {:.1} | {:.1} | {:+.1} | {:+.1} |",
        mib(r.before.rss_bytes as i64),
        mib(r.after.rss_bytes as i64),
        mib(r.drift.rss_bytes),
        mib(BOUNDS.rss_bytes)
    );
    println!(
        "soak: panics in the camera log: {}; {}",
        r.panics,
        if r.within_bounds {
            "within bounds"
        } else {
            "OUT OF BOUNDS"
        }
    );
}
