//! `meshcam bench`: what one more viewer costs, measured on real processes.
//!
//! It starts Mosquitto and the camera daemon (this same binary) on the test
//! picture, then for each viewer count N runs `meshcam view --count N` in a
//! separate process, waits for every first frame, and reads the camera's
//! CPU time and RSS from `/proc` over a measuring window. A last round adds
//! a viewer that never completes its handshake and one whose process is
//! frozen (SIGSTOP) after its first frame, and checks that the healthy
//! viewers keep their frame rate.
//!
//! With the default two layers, two more rounds at the largest count pin
//! viewers (the `pin` command) to the low layer: all of them, then every
//! other one, for the cost of a layer that is encoded against one that is
//! not, and of viewers split between layers. `--single-layer` runs the
//! camera with one layer, for the second layer's fixed cost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procstat::{self, Usage};
use crate::protocol::{Presence, Role, Topics, encode_presence, ids};
use crate::tools::testbed::{CameraProcess, Mosquitto, TempDir, TopicWatch, ViewerProcess, signal};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub viewers: Vec<usize>,
    pub warmup: Duration,
    pub window: Duration,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Also run the round with a stalled and a never-answering viewer.
    pub stall: bool,
    /// The camera encodes one layer (`layers = []`), not the default two.
    pub single_layer: bool,
    /// The camera sends the test tone (the default beside the test
    /// picture); without it, no sound.
    pub audio: bool,
}

/// One measured round.
#[derive(Debug, Clone)]
pub struct Round {
    pub label: String,
    pub viewers: usize,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub first_frame_ms: Vec<f64>,
    /// Frame rate of the slowest healthy viewer over the window.
    pub min_viewer_fps: Option<f64>,
}

const ROOM: &str = "bench";
const CAMERA: &str = "bench-cam";
/// The viewers' ids are this with `-0`, `-1`, … (`meshcam view --count`).
const VIEWER: &str = "bench-view";
/// Where the camera answers our commands.
const REPLIES: &str = "meshcam/clients/bench/replies";
const DEADLINE: Duration = Duration::from_secs(60);

/// Per-viewer frame counts from report lines.
fn frame_counts(
    view: &ViewerProcess,
    counts: &mut HashMap<String, u64>,
    first: &mut Vec<f64>,
    wait: Duration,
) {
    let end = Instant::now() + wait;
    while let Some(line) = view.next_line(end.saturating_duration_since(Instant::now())) {
        match line["event"].as_str() {
            Some("report") => {
                if let (Some(id), Some(frames)) = (line["viewer"].as_str(), line["frames"].as_u64())
                {
                    counts.insert(id.to_owned(), frames);
                }
            }
            Some("first_frame") => first.push(line["ms"].as_f64().unwrap_or(0.0)),
            _ => {}
        }
        if Instant::now() >= end {
            break;
        }
    }
}

fn usage(camera: &CameraProcess) -> anyhow::Result<Usage> {
    procstat::read(&camera.child.id().to_string()).context("reading the camera's /proc")
}

struct Bench<'a> {
    bin: PathBuf,
    broker: &'a Mosquitto,
    camera: CameraProcess,
    status: TopicWatch,
    status_topic: String,
    options: BenchOptions,
}

impl Bench<'_> {
    /// Starts `count` viewers, waits for their first frames, measures.
    fn round(
        &self,
        label: &str,
        count: usize,
        extra: impl FnOnce() -> anyhow::Result<Vec<ViewerProcess>>,
    ) -> anyhow::Result<Round> {
        let mut counts = HashMap::new();
        let mut first = Vec::new();
        let view = if count > 0 {
            let n = count.to_string();
            Some(ViewerProcess::spawn(
                &self.bin,
                &self.broker.url(),
                ROOM,
                &["--count", &n, "--id", VIEWER, "--report-interval", "0.5"],
            )?)
        } else {
            None
        };
        if let Some(view) = &view {
            let end = Instant::now() + DEADLINE;
            while first.len() < count {
                if Instant::now() > end {
                    bail!(
                        "{label}: only {} of {count} viewers got a first frame",
                        first.len()
                    );
                }
                frame_counts(view, &mut counts, &mut first, Duration::from_millis(200));
            }
        }
        let _disturbers = extra()?;
        std::thread::sleep(self.options.warmup);
        if let Some(view) = &view {
            frame_counts(view, &mut counts, &mut first, Duration::from_millis(600));
        }
        let before_counts = counts.clone();
        let (t0, u0) = (Instant::now(), usage(&self.camera)?);
        match &view {
            Some(view) => frame_counts(view, &mut counts, &mut first, self.options.window),
            None => std::thread::sleep(self.options.window),
        }
        let (t1, u1) = (Instant::now(), usage(&self.camera)?);
        let wall = t1 - t0;
        let min_viewer_fps = view.as_ref().map(|_| {
            counts
                .iter()
                .map(|(id, f)| {
                    (f - before_counts.get(id).copied().unwrap_or(0)) as f64 / wall.as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        });
        if let Some(mut view) = view {
            signal(&view.child, libc::SIGTERM);
            let _ = view.child.wait();
        }
        Ok(Round {
            label: label.to_owned(),
            viewers: count,
            cpu_percent: procstat::cpu_percent(&u0, &u1, wall),
            rss_bytes: u1.rss_bytes,
            first_frame_ms: first,
            min_viewer_fps,
        })
    }

    /// Waits until the camera's status says the last round's viewers left.
    fn wait_for_no_viewers(&self) -> anyhow::Result<()> {
        self.status
            .wait(&self.status_topic, "no viewers", DEADLINE, |v| {
                v["viewers"] == 0
            })
            .map(drop)
    }

    /// Pins the viewers of `indices` to `layer`, each answered.
    fn pin(&self, indices: impl Iterator<Item = usize>, layer: usize) -> anyhow::Result<()> {
        let topic = Topics::new("meshcam").command(CAMERA);
        for i in indices {
            let id = format!("pin-{i}-{}", &ids::new_session()[..6]);
            let command = serde_json::json!({
                "v": 1, "id": id, "cmd": "pin", "peer": format!("{VIEWER}-{i}"),
                "layer": layer, "reply_to": REPLIES,
            });
            self.status.client.publish(
                topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                false,
                command.to_string(),
            )?;
            let reply =
                self.status
                    .wait(REPLIES, &format!("the reply to {id}"), DEADLINE, |v| {
                        v["id"] == id.as_str()
                    })?;
            if reply["ok"] != true {
                bail!("pin {VIEWER}-{i} to layer {layer}: {reply}");
            }
        }
        Ok(())
    }

    /// A viewer that announces itself and never answers the offer.
    fn ghost(&self) -> anyhow::Result<()> {
        let id = "ghost";
        let topics = Topics::new("meshcam");
        let presence = Presence::new(id, &ids::new_session(), Role::Viewer, id);
        self.status.client.publish(
            topics.presence(ROOM, id),
            rumqttc::QoS::AtLeastOnce,
            true,
            encode_presence(&presence),
        )?;
        Ok(())
    }

    /// A viewer process that is frozen after its first frame.
    fn frozen(&self) -> anyhow::Result<ViewerProcess> {
        let view = ViewerProcess::spawn(
            &self.bin,
            &self.broker.url(),
            ROOM,
            &["--id", "frozen", "--report-interval", "0.5"],
        )?;
        if view.first_frames(1, DEADLINE).is_none() {
            bail!("the frozen viewer never got a frame");
        }
        signal(&view.child, libc::SIGSTOP);
        Ok(view)
    }
}

/// Runs the benchmark and prints the table.
pub fn run(bin: &Path, options: BenchOptions) -> anyhow::Result<Vec<Round>> {
    let broker = Mosquitto::start("")?;
    let dir = TempDir::new("bench")?;
    let toml = format!(
        "rooms = [\"{ROOM}\"]\n[video]\nwidth = {}\nheight = {}\nfps = {}\nbitrate_kbps = {}\n{}[webrtc]\nmax_viewers = 64\n{}",
        options.width,
        options.height,
        options.fps,
        options.bitrate_kbps,
        if options.single_layer {
            "layers = []\n"
        } else {
            ""
        },
        if options.audio {
            ""
        } else {
            "[audio]\nsource = \"none\"\n"
        },
    );
    let camera = CameraProcess::spawn(bin, &broker.url(), CAMERA, &toml, &dir, &[])?;
    let topics = Topics::new("meshcam");
    let status_topic = topics.status(CAMERA);
    let status = TopicWatch::connect(&broker, &[status_topic.clone(), REPLIES.to_owned()])?;
    status.wait(&status_topic, "online", DEADLINE, |v| {
        v["state"] == "online"
    })?;
    let bench = Bench {
        bin: bin.to_owned(),
        broker: &broker,
        camera,
        status,
        status_topic,
        options: options.clone(),
    };
    let mut rounds = Vec::new();
    for &n in &options.viewers {
        let round = bench.round(&format!("{n} viewers"), n, || Ok(Vec::new()))?;
        record(&mut rounds, round);
        bench.wait_for_no_viewers()?;
    }
    let most = options.viewers.iter().copied().max().unwrap_or(0);
    if !options.single_layer && most > 1 {
        let rounds_pinned: [(&str, usize); 2] =
            [("all on layer 1", 1), ("every other on layer 1", 2)];
        for (what, every) in rounds_pinned {
            let round = bench.round(&format!("{most} viewers, {what}"), most, || {
                bench.pin((0..most).step_by(every), 1)?;
                Ok(Vec::new())
            })?;
            record(&mut rounds, round);
            bench.wait_for_no_viewers()?;
        }
    }
    if options.stall {
        let round = bench.round("8 viewers + 1 frozen + 1 never answering", 8, || {
            bench.ghost()?;
            Ok(vec![bench.frozen()?])
        })?;
        record(&mut rounds, round);
    }
    Ok(rounds)
}

/// Prints a round beside the first (idle) one and keeps it.
fn record(rounds: &mut Vec<Round>, round: Round) {
    print_round(&round, rounds.first());
    rounds.push(round);
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn print_round(round: &Round, idle: Option<&Round>) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (marginal_cpu, marginal_rss) = match idle {
        Some(idle) if round.viewers > 0 => (
            format!(
                "{:.2}",
                (round.cpu_percent - idle.cpu_percent) / round.viewers as f64
            ),
            format!(
                "{:.2}",
                (mib(round.rss_bytes) - mib(idle.rss_bytes)) / round.viewers as f64
            ),
        ),
        _ => ("-".into(), "-".into()),
    };
    let ms = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    let max = round.first_frame_ms.iter().copied().reduce(f64::max);
    if idle.is_none() {
        println!(
            "| round | camera CPU % of a core | camera RSS MiB | marginal CPU %/viewer | marginal RSS MiB/viewer | join→first frame median ms | max ms | slowest viewer fps |"
        );
        println!("|---|---|---|---|---|---|---|---|");
    }
    println!(
        "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
        round.label,
        round.cpu_percent,
        mib(round.rss_bytes),
        marginal_cpu,
        marginal_rss,
        ms(median(&round.first_frame_ms)),
        ms(max),
        round
            .min_viewer_fps
            .map(|f| format!("{f:.1}"))
            .unwrap_or_else(|| "-".into()),
    );
}
