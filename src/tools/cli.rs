//! The `bench` and `soak` subcommands of a `meshcam` built with the `tools`
//! feature: their flags, and how they run the modules beside this one with
//! the running binary as camera and viewers.
//!
//! `meshcam bench` measures rounds of `--viewers` counts; `--receiver`
//! picks who watches (`own`, `webrtcbin`, `chromium`, `mixed`). Its
//! `--outage`, `--shaped` and `--soak-minutes` run something else instead:
//! a broker outage, a shaped link, or receivers held for minutes
//! (`meshcam bench --soak-minutes 10 --receiver mixed`: 8 receivers,
//! judged).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::receivers::Choice;
use super::stage::CameraSettings;

/// The tool subcommands, flattened into `meshcam`'s own.
#[derive(Subcommand)]
pub enum Command {
    /// Measure the camera's cost per viewer (starts its own broker and camera)
    Bench(BenchArgs),
    /// Churn viewers against a camera, then check it gave back what they took
    Soak(SoakArgs),
}

impl Command {
    /// Runs the tool; its exit status.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Bench(args) => run_bench(args),
            Command::Soak(args) => run_soak(args),
        }
    }
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Viewer counts to measure, comma-separated (default 0,1,2,4,8,16);
    /// with --soak-minutes, the one count held (default 8)
    #[arg(long, value_delimiter = ',')]
    viewers: Option<Vec<usize>>,
    /// Which receivers watch: `meshcam view`, GStreamer's webrtcbin,
    /// Chromium tabs, or the count split across the three
    #[arg(long, value_enum, default_value = "own")]
    receiver: Choice,
    /// Seconds to settle after the first frames
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds to measure each round; with --soak-minutes, each sample
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    #[arg(long, default_value_t = 2000)]
    bitrate_kbps: u32,
    /// Skip the round with a frozen and a never-answering viewer
    #[arg(long)]
    no_stall: bool,
    /// Encode one layer only (`layers = []`): beside a default run, the
    /// second layer's fixed cost
    #[arg(long)]
    single_layer: bool,
    /// No sound (`[audio] source = "none"`): beside a default run, what the
    /// Opus track costs per viewer
    #[arg(long)]
    no_audio: bool,
    /// Instead: stop the broker under a streaming camera for this many
    /// seconds and measure frames lost and the time to recover
    #[arg(long)]
    outage: Option<f64>,
    /// Instead: one viewer on a link shaped to this rate (tc's units, e.g.
    /// 500kbit), then freed; its adaptation over time (needs root)
    #[arg(long)]
    shaped: Option<String>,
    /// Seconds the link is shaped, then free
    #[arg(long, default_value_t = 20.0)]
    shaped_seconds: f64,
    #[arg(long, default_value_t = 25.0)]
    free_seconds: f64,
    /// The shaped viewer sends receiver reports only
    #[arg(long)]
    no_twcc: bool,
    /// Where the shaped run writes its CSV and SVG (OUT.csv, OUT.svg)
    #[arg(long, default_value = "adaptation")]
    out: std::path::PathBuf,
    /// Instead: hold the receivers this many minutes, sample every
    /// --window, and check every receiver kept ≥ 29 fps with no re-offer
    /// and no drop, and the camera's RSS and open files stayed flat
    #[arg(long)]
    soak_minutes: Option<f64>,
}

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Viewer join/leave cycles in all
    #[arg(long, default_value_t = 1000)]
    cycles: usize,
    /// Viewer processes running at once
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Viewers in one process
    #[arg(long, default_value_t = 4)]
    viewers_per_process: usize,
}

/// The path of this binary, which the bench and the soak run as camera and
/// viewers.
fn this_binary(tool: &str) -> Option<std::path::PathBuf> {
    std::env::current_exe()
        .map_err(|e| eprintln!("meshcam {tool}: cannot find this binary: {e}"))
        .ok()
}

/// Exit status of a measuring tool: success when it ran and its checks
/// held, its error on stderr otherwise.
fn measured(tool: &str, result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("meshcam {tool}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_soak(args: SoakArgs) -> ExitCode {
    let Some(bin) = this_binary("soak") else {
        return ExitCode::FAILURE;
    };
    let options = super::soak::SoakOptions {
        cycles: args.cycles,
        workers: args.workers,
        viewers_per_process: args.viewers_per_process,
    };
    let report = super::soak::run(&bin, &options);
    measured("soak", report.map(|r| r.within_bounds && r.panics == 0))
}

fn run_bench(args: BenchArgs) -> ExitCode {
    let Some(bin) = this_binary("bench") else {
        return ExitCode::FAILURE;
    };
    if let Some(seconds) = args.outage {
        let report = super::outage::run(&bin, Duration::from_secs_f64(seconds));
        return measured("bench --outage", report.map(|_| true));
    }
    if let Some(rate) = args.shaped {
        let options = super::shaped::ShapedOptions {
            rate,
            shaped: Duration::from_secs_f64(args.shaped_seconds),
            free: Duration::from_secs_f64(args.free_seconds),
            no_twcc: args.no_twcc,
            out: args.out,
        };
        let summary = super::shaped::run_shaped(&bin, &options);
        return measured("bench --shaped", summary.map(|_| true));
    }
    let camera = CameraSettings {
        width: args.width,
        height: args.height,
        fps: args.fps,
        bitrate_kbps: args.bitrate_kbps,
        single_layer: args.single_layer,
        audio: !args.no_audio,
    };
    if let Some(minutes) = args.soak_minutes {
        let receivers = match args.viewers.as_deref() {
            None => 8,
            Some([n]) => *n,
            Some(_) => {
                eprintln!("meshcam bench --soak-minutes: --viewers takes one count");
                return ExitCode::FAILURE;
            }
        };
        let options = super::endurance::EnduranceOptions {
            duration: Duration::from_secs_f64(minutes * 60.0),
            receivers,
            receiver: args.receiver,
            window: Duration::from_secs_f64(args.window),
            camera,
        };
        return measured(
            "bench --soak-minutes",
            super::endurance::run(&bin, &options),
        );
    }
    let options = super::bench::BenchOptions {
        viewers: args.viewers.unwrap_or_else(|| vec![0, 1, 2, 4, 8, 16]),
        warmup: Duration::from_secs_f64(args.warmup),
        window: Duration::from_secs_f64(args.window),
        camera,
        stall: !args.no_stall,
        receiver: args.receiver,
    };
    measured("bench", super::bench::run(&bin, options).map(|_| true))
}
