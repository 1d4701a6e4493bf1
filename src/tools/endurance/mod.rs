//! `meshcam bench --soak-minutes M`: one camera held by the same receivers
//! for minutes, judged window by window.
//!
//! `meshcam soak` churns viewers; this holds them. A camera on a shelf
//! streams for days to viewers it did not write, and what shows only over
//! time shows here: a liveness rule that cuts a receiver whose RTCP timing
//! differs from ours, a sender that falls behind and drops frames, memory
//! or file descriptors that creep. It starts the camera (1280×720, 30 fps,
//! 2 Mbit/s by default) and `--viewers` receivers of `--receiver` (with
//! `mixed` and 8: 3 Chromium tabs, 3 webrtcbin, 2 `meshcam view`), waits
//! for their first frames, then every `--window` (10 s) records each
//! receiver's frame rate and longest gap, and the camera's RSS and open
//! files from `/proc`. At the end it prints every window, a table per
//! receiver and the verdict of [`judge`]: every receiver at least
//! [`judge::MIN_FPS`] in every window, no re-offer, no frame dropped by the
//! camera, and RSS and open files flat. It fails (exit status 1) when a
//! check does not hold.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::procstat;
use crate::tools::receivers::{self, Choice, Drops, Receivers, Target};
use crate::tools::stage::{CameraSettings, Stage};

pub mod judge;

use judge::{Sample, Verdict};

const ROOM: &str = "soak";
const CAMERA: &str = "soak-cam";
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct EnduranceOptions {
    pub duration: Duration,
    pub receivers: usize,
    pub receiver: Choice,
    pub window: Duration,
    pub camera: CameraSettings,
}

/// Runs the soak, prints what it saw; whether every check held.
pub fn run(bin: &Path, options: &EnduranceOptions) -> anyhow::Result<bool> {
    let stage = Stage::start(bin, &options.camera, ROOM, CAMERA, &[], DEADLINE)?;
    let target = Target {
        bin,
        broker: &stage.broker,
        room: ROOM,
        camera: CAMERA,
        id_prefix: "soak",
    };
    let plan = receivers::split(options.receiver, options.receivers);
    let mut group = Receivers::start(&target, &plan)?;
    group.wait_first_frames(DEADLINE)?;
    println!(
        "soak: {} receivers ({}) on {}x{} at {} fps, {} kbit/s, for {:.0?}, a sample every {:.0?}",
        options.receivers,
        plan.iter()
            .map(|(kind, n)| format!("{n} {}", kind.name()))
            .collect::<Vec<_>>()
            .join(", "),
        options.camera.width,
        options.camera.height,
        options.camera.fps,
        options.camera.bitrate_kbps,
        options.duration,
        options.window,
    );
    println!(
        "| t s | camera RSS MiB | camera open fds | slowest receiver fps | longest gap ms | re-offers | drops |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut drops = Drops::default();
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < options.duration {
        let mark = group.mark();
        let until = Instant::now() + options.window;
        group.follow(until, &stage.watch, &stage.stats_topic, &mut drops);
        let outcomes = group.outcomes(&mark, |id| drops.of(id));
        let usage = procstat::read(&stage.camera.child.id().to_string())
            .context("reading the camera's /proc")?;
        let sample = Sample {
            at: Duration::from_secs(started.elapsed().as_secs_f64().round() as u64),
            receivers: outcomes,
            rss_bytes: usage.rss_bytes,
            open_fds: usage.open_fds,
        };
        print_sample(&sample);
        samples.push(sample);
    }
    group.stop();
    let run = samples.last().map_or(Duration::ZERO, |s| s.at);
    let verdict = judge::judge(&samples, run);
    print_verdict(&verdict);
    Ok(verdict.passed())
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn print_sample(s: &Sample) {
    let slowest = s.receivers.iter().min_by(|a, b| a.fps.total_cmp(&b.fps));
    println!(
        "| {} | {:.1} | {} | {} | {} | {} | {} |",
        s.at.as_secs(),
        mib(s.rss_bytes as f64),
        s.open_fds,
        slowest.map_or("-".into(), |o| format!("{:.1} ({})", o.fps, o.id)),
        s.receivers
            .iter()
            .map(|o| o.longest_gap.as_millis())
            .max()
            .unwrap_or(0),
        s.receivers.iter().map(|o| o.reoffers).sum::<u64>(),
        s.receivers.iter().map(|o| o.drops).sum::<u64>(),
    );
}

fn print_verdict(v: &Verdict) {
    println!(
        "\n| receiver | kind | min fps (10 s window) | mean fps | longest gap ms | re-offers | camera drops |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &v.receivers {
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            r.id,
            r.kind,
            r.min_fps,
            r.mean_fps,
            r.longest_gap.as_millis(),
            r.reoffers,
            r.drops
        );
    }
    let check = |ok: bool| if ok { "ok" } else { "FAILED" };
    println!(
        "\nsoak: every receiver ≥ {} fps in every window: {} ({} windows below)",
        judge::MIN_FPS,
        check(v.slow.is_empty()),
        v.slow.len()
    );
    for (id, at, fps) in v.slow.iter().take(20) {
        println!("  {id} at {}s: {fps:.1} fps", at.as_secs());
    }
    let reoffers: u64 = v.receivers.iter().map(|r| r.reoffers).sum();
    let drops: u64 = v.receivers.iter().map(|r| r.drops).sum();
    println!(
        "soak: zero re-offers: {} ({reoffers})",
        check(reoffers == 0)
    );
    println!("soak: zero drops: {} ({drops})", check(drops == 0));
    match v.rss {
        Some(f) => println!(
            "soak: RSS flat (mean of the last span ≤ baseline span + {} MiB): {} ({:.1} → {:.1} MiB)",
            judge::RSS_SLACK / (1024 * 1024),
            check(f.flat),
            mib(f.baseline),
            mib(f.last)
        ),
        None => println!("soak: RSS flat: FAILED (run too short to judge)"),
    }
    match v.fds {
        Some(f) => println!(
            "soak: open fds flat (most in the last span ≤ most in the baseline span): {} ({} → {})",
            check(f.flat),
            f.baseline,
            f.last
        ),
        None => println!("soak: open fds flat: FAILED (run too short to judge)"),
    }
    println!("soak: {}", if v.passed() { "PASSED" } else { "FAILED" });
}
