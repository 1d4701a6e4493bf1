//! `meshcam bench`: what one more viewer costs, measured on real processes.
//!
//! It starts Mosquitto and the camera daemon (this same binary) on the test
//! picture, then for each viewer count N starts N receivers, waits for
//! every first frame, and reads the camera's CPU time and RSS from `/proc`
//! over a measuring window. A last round adds a viewer that never
//! completes its handshake and one whose process is frozen (SIGSTOP) after
//! its first frame, and checks that the healthy viewers keep their frame
//! rate.
//!
//! The receivers are `meshcam view` (`--receiver own`, the default), or
//! ones the project did not write, at their default settings:
//! `--receiver webrtcbin` (GStreamer), `chromium` (tabs of the independent
//! page) or `mixed` (the count split across the three; see
//! [`receivers`](super::receivers)). After each round a table gives every
//! receiver's frame rate over the window, its longest wait between two
//! frames, the offers it was sent after its first (each one a connection
//! the camera cut or restarted) and the frames the camera dropped for it
//! (its telemetry's `frames_dropped`, sent every second here).
//!
//! With the default two layers, two more rounds at the largest count pin
//! viewers (the `pin` command) to the low layer: all of them, then every
//! other one, for the cost of a layer that is encoded against one that is
//! not, and of viewers split between layers. `--single-layer` runs the
//! camera with one layer, for the second layer's fixed cost.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procstat::{self, Usage};
use crate::protocol::{Presence, Role, Topics, encode_presence, ids};
use crate::tools::receivers::{self, Choice, Drops, Outcome, Receivers, Target};
use crate::tools::stage::{CameraSettings, Stage};
use crate::tools::testbed::{CameraProcess, ViewerProcess, signal};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub viewers: Vec<usize>,
    pub warmup: Duration,
    pub window: Duration,
    pub camera: CameraSettings,
    /// Also run the round with a stalled and a never-answering viewer.
    pub stall: bool,
    /// Which receivers watch.
    pub receiver: Choice,
}

/// One measured round.
#[derive(Debug, Clone)]
pub struct Round {
    pub label: String,
    pub viewers: usize,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    /// Every healthy receiver's figures.
    pub receivers: Vec<Outcome>,
}

const ROOM: &str = "bench";
const CAMERA: &str = "bench-cam";
/// The receivers' ids start with this.
const RECEIVER: &str = "bench";
/// Where the camera answers our commands.
const REPLIES: &str = "meshcam/clients/bench/replies";
const DEADLINE: Duration = Duration::from_secs(60);

fn usage(camera: &CameraProcess) -> anyhow::Result<Usage> {
    procstat::read(&camera.child.id().to_string()).context("reading the camera's /proc")
}

struct Bench {
    bin: PathBuf,
    stage: Stage,
    /// The camera's drops per receiver over the whole run.
    drops: Drops,
    options: BenchOptions,
}

impl Bench {
    /// Starts `count` receivers, waits for their first frames, measures.
    fn round(
        &mut self,
        label: &str,
        count: usize,
        extra: impl FnOnce(&Self, &Receivers) -> anyhow::Result<Vec<ViewerProcess>>,
    ) -> anyhow::Result<Round> {
        let target = Target {
            bin: &self.bin,
            broker: &self.stage.broker,
            room: ROOM,
            camera: CAMERA,
            id_prefix: RECEIVER,
        };
        let plan = receivers::split(self.options.receiver, count);
        let mut group = Receivers::start(&target, &plan)?;
        let dropped_before: Vec<(String, u64)> = group
            .ids()
            .map(|id| (id.to_owned(), self.drops.of(id)))
            .collect();
        group
            .wait_first_frames(DEADLINE)
            .with_context(|| label.to_owned())?;
        let _disturbers = extra(self, &group)?;
        let (watch, stats) = (&self.stage.watch, &self.stage.stats_topic);
        group.follow(
            Instant::now() + self.options.warmup,
            watch,
            stats,
            &mut self.drops,
        );
        let mark = group.mark();
        let u0 = usage(&self.stage.camera)?;
        let t0 = Instant::now();
        group.follow(t0 + self.options.window, watch, stats, &mut self.drops);
        let (wall, u1) = (t0.elapsed(), usage(&self.stage.camera)?);
        let outcomes = group.outcomes(&mark, |id| {
            let before = dropped_before
                .iter()
                .find(|(i, _)| i == id)
                .map_or(0, |(_, n)| *n);
            self.drops.of(id).saturating_sub(before)
        });
        group.stop();
        Ok(Round {
            label: label.to_owned(),
            viewers: count,
            cpu_percent: procstat::cpu_percent(&u0, &u1, wall),
            rss_bytes: u1.rss_bytes,
            receivers: outcomes,
        })
    }

    /// Waits until the camera's status says the last round's viewers left.
    fn wait_for_no_viewers(&self) -> anyhow::Result<()> {
        self.stage
            .watch
            .wait(&self.stage.status_topic, "no viewers", DEADLINE, |v| {
                v["viewers"] == 0
            })
            .map(drop)
    }

    /// Pins the receivers `peers` to `layer`, each answered.
    fn pin<'p>(&self, peers: impl Iterator<Item = &'p str>, layer: usize) -> anyhow::Result<()> {
        let topic = Topics::new("meshcam").command(CAMERA);
        for peer in peers {
            let id = format!("pin-{}", &ids::new_session()[..6]);
            let command = serde_json::json!({
                "v": 1, "id": id, "cmd": "pin", "peer": peer,
                "layer": layer, "reply_to": REPLIES,
            });
            self.stage.watch.client.publish(
                topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                false,
                command.to_string(),
            )?;
            let reply =
                self.stage
                    .watch
                    .wait(REPLIES, &format!("the reply to {id}"), DEADLINE, |v| {
                        v["id"] == id.as_str()
                    })?;
            if reply["ok"] != true {
                bail!("pin {peer} to layer {layer}: {reply}");
            }
        }
        Ok(())
    }

    /// A viewer that announces itself and never answers the offer.
    fn ghost(&self) -> anyhow::Result<()> {
        let id = "ghost";
        let topics = Topics::new("meshcam");
        let presence = Presence::new(id, &ids::new_session(), Role::Viewer, id);
        self.stage.watch.client.publish(
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
            &self.stage.broker.url(),
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
    let stage = Stage::start(
        bin,
        &options.camera,
        ROOM,
        CAMERA,
        &[REPLIES.to_owned()],
        DEADLINE,
    )?;
    let mut bench = Bench {
        bin: bin.to_owned(),
        stage,
        drops: Drops::default(),
        options: options.clone(),
    };
    let mut rounds = Vec::new();
    for &n in &options.viewers {
        let round = bench.round(&format!("{n} viewers"), n, |_, _| Ok(Vec::new()))?;
        record(&mut rounds, round);
        bench.wait_for_no_viewers()?;
    }
    let most = options.viewers.iter().copied().max().unwrap_or(0);
    if !options.camera.single_layer && most > 1 {
        let rounds_pinned: [(&str, usize); 2] =
            [("all on layer 1", 1), ("every other on layer 1", 2)];
        for (what, every) in rounds_pinned {
            let round = bench.round(&format!("{most} viewers, {what}"), most, |bench, group| {
                bench.pin(group.ids().step_by(every), 1)?;
                Ok(Vec::new())
            })?;
            record(&mut rounds, round);
            bench.wait_for_no_viewers()?;
        }
    }
    if options.stall {
        let round = bench.round("8 viewers + 1 frozen + 1 never answering", 8, |bench, _| {
            bench.ghost()?;
            Ok(vec![bench.frozen()?])
        })?;
        record(&mut rounds, round);
    }
    let choice =
        clap::ValueEnum::to_possible_value(&options.receiver).expect("no value is skipped");
    println!("\nreceivers: {}", choice.get_name());
    for (i, round) in rounds.iter().enumerate() {
        print_round(round, rounds.first().filter(|_| i > 0));
    }
    Ok(rounds)
}

/// Prints a round's receivers and keeps it; the table of rounds comes at
/// the end.
fn record(rounds: &mut Vec<Round>, round: Round) {
    println!("\n{}", round.label);
    if !round.receivers.is_empty() {
        receivers::print_table(&round.receivers);
    }
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
    let first_frame_ms: Vec<f64> = round
        .receivers
        .iter()
        .filter_map(|r| r.first_frame_ms)
        .collect();
    let max = first_frame_ms.iter().copied().reduce(f64::max);
    if idle.is_none() {
        println!(
            "| round | camera CPU % of a core | camera RSS MiB | marginal CPU %/viewer | marginal RSS MiB/viewer | join→first frame median ms | max ms | slowest viewer fps | re-offers | camera drops |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    }
    println!(
        "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
        round.label,
        round.cpu_percent,
        mib(round.rss_bytes),
        marginal_cpu,
        marginal_rss,
        ms(median(&first_frame_ms)),
        ms(max),
        receivers::slowest(&round.receivers)
            .map(|f| format!("{f:.1}"))
            .unwrap_or_else(|| "-".into()),
        round.receivers.iter().map(|r| r.reoffers).sum::<u64>(),
        round.receivers.iter().map(|r| r.drops).sum::<u64>(),
    );
}
