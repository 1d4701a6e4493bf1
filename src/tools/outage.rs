//! `meshcam bench --outage SECONDS`: what a broker outage costs.
//!
//! Media is peer to peer, so a viewer that is connected when the broker
//! goes away should not lose a frame; the camera should be back (status,
//! presence, subscriptions) soon after the broker returns, and a viewer who
//! joins then should be served. This measures all three on real processes:
//! Mosquitto is killed under a streaming camera and started again.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::protocol::Topics;
use crate::tools::testbed::{CameraProcess, Mosquitto, TempDir, TopicWatch, ViewerProcess};

const ROOM: &str = "outage";
const CAMERA: &str = "outage-cam";
const DEADLINE: Duration = Duration::from_secs(60);
const FPS: u32 = 30;

#[derive(Debug, Clone)]
pub struct OutageReport {
    pub outage: Duration,
    /// Frames the connected viewer got while the broker was down, and the
    /// frames the camera sent in that time.
    pub frames_during: u64,
    pub frames_expected: u64,
    /// RTP packets the connected viewer lost over the whole run.
    pub lost_packets: u64,
    /// From the broker's restart to the camera's status being back.
    pub recovered_after: Duration,
    /// From the broker's restart to a new viewer's first frame.
    pub new_viewer_first_frame_after: Duration,
}

/// The latest report line of a viewer process, read for up to `wait`.
fn latest_report(view: &ViewerProcess, wait: Duration, latest: &mut Value) {
    let end = Instant::now() + wait;
    while let Some(line) = view.next_line(end.saturating_duration_since(Instant::now())) {
        if line["event"] == "report" {
            *latest = line;
        }
    }
}

pub fn run(bin: &Path, outage: Duration) -> anyhow::Result<OutageReport> {
    let mut broker = Mosquitto::start("")?;
    let dir = TempDir::new("outage")?;
    let toml = format!(
        "rooms = [\"{ROOM}\"]\n[video]\nwidth = 1280\nheight = 720\nfps = {FPS}\nbitrate_kbps = 2000\n"
    );
    let _camera = CameraProcess::spawn(bin, &broker.url(), CAMERA, &toml, &dir, &[])?;
    let status_topic = Topics::new("meshcam").status(CAMERA);
    let online = |v: &Value| v["state"] == "online";
    TopicWatch::connect(&broker, std::slice::from_ref(&status_topic))?.wait(
        &status_topic,
        "online",
        DEADLINE,
        online,
    )?;

    let args = ["--id", "loyal", "--report-interval", "0.2"];
    let view = ViewerProcess::spawn(bin, &broker.url(), ROOM, &args)?;
    let mut report = Value::Null;
    let end = Instant::now() + DEADLINE;
    while report["frames"].as_u64().unwrap_or(0) < 2 * u64::from(FPS) {
        if Instant::now() > end {
            bail!("the viewer got no frames before the outage");
        }
        latest_report(&view, Duration::from_millis(200), &mut report);
    }

    let before = report["frames"].as_u64().unwrap_or(0);
    broker.stop();
    let stopped = Instant::now();
    latest_report(&view, outage, &mut report);
    let frames_during = report["frames"].as_u64().unwrap_or(0) - before;
    let down_for = stopped.elapsed();
    broker.restart().context("restarting Mosquitto")?;
    let restarted = Instant::now();

    let watch = TopicWatch::connect(&broker, std::slice::from_ref(&status_topic))?;
    watch.wait(&status_topic, "online again", DEADLINE, online)?;
    let recovered_after = restarted.elapsed();

    let late = ViewerProcess::spawn(bin, &broker.url(), ROOM, &["--id", "late"])?;
    if late.first_frames(1, DEADLINE).is_none() {
        bail!("no viewer was served after the outage");
    }
    let new_viewer_first_frame_after = restarted.elapsed();
    latest_report(&view, Duration::from_secs(1), &mut report);
    let result = OutageReport {
        outage: down_for,
        frames_during,
        frames_expected: (down_for.as_secs_f64() * f64::from(FPS)) as u64,
        lost_packets: report["lost_packets"].as_u64().unwrap_or(0),
        recovered_after,
        new_viewer_first_frame_after,
    };
    println!(
        "outage of {:.1} s: the connected viewer got {} frames (the camera sent about {}), \
         {} RTP packets lost; camera status back {:.0} ms after the broker, \
         a new viewer's first frame {:.0} ms after the broker",
        result.outage.as_secs_f64(),
        result.frames_during,
        result.frames_expected,
        result.lost_packets,
        result.recovered_after.as_secs_f64() * 1000.0,
        result.new_viewer_first_frame_after.as_secs_f64() * 1000.0,
    );
    Ok(result)
}
