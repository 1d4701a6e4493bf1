//! `meshcam bench --shaped`: a shaped viewer's adaptation over time, on a
//! real link.
//!
//! Mosquitto and the camera (this binary, default layers) run in one network
//! namespace, a `meshcam view --decode` in another, joined by a veth pair
//! whose camera side is shaped with `tc tbf` (16 kB burst, 200 ms of queue)
//! for a while and then freed. Every half second it records the camera's
//! view of the connection (`meshcam ctl stats`: layer, estimate, padding,
//! loss) and the viewer's (fps, decoded height, frozen time), and writes a
//! CSV, an SVG plot and a summary: the time to go down, to come back, and
//! how the picture played while shaped. Needs root (namespaces, `tc`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::tools::testbed::{TempDir, json_lines};

/// What to run.
#[derive(Debug, Clone)]
pub struct ShapedOptions {
    /// tc's rate, e.g. `500kbit`.
    pub rate: String,
    pub shaped: Duration,
    pub free: Duration,
    /// The viewer sends receiver reports only.
    pub no_twcc: bool,
    /// Where the CSV and the SVG go (`{out}.csv`, `{out}.svg`).
    pub out: PathBuf,
}

/// One sample of the timeline.
struct Row {
    t: f64,
    shaped: bool,
    link: Value,
    viewer: Value,
}

impl Row {
    fn number(&self, key: &str) -> Option<f64> {
        self.link[key]
            .as_f64()
            .or_else(|| self.viewer[key].as_f64())
    }
}

const CAM_IP: &str = "10.231.0.1";
const VIEW_IP: &str = "10.231.0.2";
const SAMPLE: Duration = Duration::from_millis(500);
/// Starting the camera and its broker: a bound that turns a hang into an
/// error.
const READY: Duration = Duration::from_secs(30);

/// The namespaces and processes of one run, removed when dropped.
struct Link {
    cam: String,
    view: String,
    children: Vec<Child>,
}

impl Link {
    fn create() -> anyhow::Result<(Self, String)> {
        let pid = std::process::id();
        let link = Self {
            cam: format!("ms-{pid}-c"),
            view: format!("ms-{pid}-v"),
            children: Vec::new(),
        };
        let cam_if = format!("msc{}", pid % 10000);
        let view_if = format!("msv{}", pid % 10000);
        for ns in [&link.cam, &link.view] {
            run("ip", &["netns", "add", ns]).context(
                "creating a network namespace (meshcam bench --shaped needs root and iproute2)",
            )?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        run(
            "ip",
            &[
                "link", "add", &cam_if, "type", "veth", "peer", "name", &view_if,
            ],
        )?;
        for (ns, dev, ip) in [
            (&link.cam, &cam_if, CAM_IP),
            (&link.view, &view_if, VIEW_IP),
        ] {
            run("ip", &["link", "set", dev, "netns", ns])?;
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            )?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok((link, cam_if))
    }

    fn exec(&self, ns: &str, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program).args(args);
        command
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.cam, &self.view] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the scenario; prints and returns the summary.
pub fn run_shaped(bin: &Path, options: &ShapedOptions) -> anyhow::Result<Value> {
    let dir = TempDir::new("shaped")?;
    let (mut link, cam_if) = Link::create()?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(&conf, "listener 1883 0.0.0.0\nallow_anonymous true\n")?;
    let mosquitto = Path::new("mosquitto");
    link.children.push(
        link.exec(&link.cam, mosquitto, &["-c", &conf.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (apt install mosquitto)")?,
    );
    let broker = format!("mqtt://{CAM_IP}:1883");
    let camera_toml = dir.path().join("camera.toml");
    std::fs::write(
        &camera_toml,
        format!(
            "rooms = [\"t\"]\nstate_dir = \"{}\"\n[device]\nid = \"cam\"\n[mqtt]\nurl = \"{broker}\"\n\
             [webrtc]\nbind_address = \"{CAM_IP}\"\nmdns = \"off\"\n",
            dir.path().join("state").display()
        ),
    )?;
    link.children.push(
        link.exec(
            &link.cam,
            bin,
            &["run", "--config", &camera_toml.to_string_lossy()],
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?,
    );
    let stats = |link: &Link| -> anyhow::Result<Value> {
        let ctl = [
            "ctl",
            "--broker",
            &broker,
            "--device",
            "cam",
            "--timeout",
            "2",
            "stats",
        ];
        let out = link.exec(&link.cam, bin, &ctl).output()?;
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    };
    let ready = Instant::now() + READY;
    while stats(&link)?["ok"] != true {
        if Instant::now() > ready {
            bail!("the camera did not answer `stats` within {READY:?}");
        }
    }
    run(
        "ip",
        &[
            "netns",
            "exec",
            &link.cam,
            "tc",
            "qdisc",
            "replace",
            "dev",
            &cam_if,
            "root",
            "tbf",
            "rate",
            &options.rate,
            "burst",
            "16kb",
            "latency",
            "200ms",
        ],
    )?;
    let mut view_args = vec![
        "view",
        "--broker",
        &broker,
        "--room",
        "t",
        "--bind",
        VIEW_IP,
        "--decode",
        "--report-interval",
        "0.5",
    ];
    if options.no_twcc {
        view_args.push("--no-twcc");
    }
    let mut viewer = link
        .exec(&link.view, bin, &view_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let lines = json_lines(viewer.stdout.take().expect("piped"));
    link.children.push(viewer);

    let start = Instant::now();
    let end = options.shaped + options.free;
    let mut rows = Vec::new();
    let mut viewer_latest = json!({});
    let mut freed = false;
    let mut first_frame = None;
    while start.elapsed() < end {
        let t = start.elapsed();
        if !freed && t >= options.shaped {
            run(
                "ip",
                &[
                    "netns", "exec", &link.cam, "tc", "qdisc", "del", "dev", &cam_if, "root",
                ],
            )?;
            freed = true;
        }
        while let Ok(line) = lines.try_recv() {
            if line["event"] == "report" {
                viewer_latest = line;
            } else if line["event"] == "first_frame" {
                first_frame.get_or_insert(t.as_secs_f64());
            }
        }
        let stats = stats(&link)?;
        rows.push(Row {
            t: t.as_secs_f64(),
            shaped: !freed,
            link: stats["result"]["connections"][0].clone(),
            viewer: viewer_latest.clone(),
        });
        std::thread::sleep(SAMPLE.saturating_sub(start.elapsed() - t));
    }
    drop(link);

    write_csv(&options.out.with_extension("csv"), &rows)?;
    std::fs::write(options.out.with_extension("svg"), plot(&rows, options))?;
    let summary = summarize(&rows, first_frame, options);
    println!("{summary}");
    Ok(summary)
}

const COLUMNS: [&str; 8] = [
    "layer",
    "estimate_kbps",
    "padding_kbps",
    "loss",
    "fps",
    "height",
    "kbps",
    "frozen_ms",
];

fn write_csv(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut csv = format!("t,shaped,estimator,{}\n", COLUMNS.join(","));
    for r in rows {
        let _ = write!(
            csv,
            "{:.2},{},{}",
            r.t,
            r.shaped,
            r.link["estimator"].as_str().unwrap_or("")
        );
        for key in COLUMNS {
            let _ = write!(
                csv,
                ",{}",
                r.number(key).map(|v| v.to_string()).unwrap_or_default()
            );
        }
        csv.push('\n');
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

/// `first_frame`: when the viewer reported its first frame (s since the
/// start).
fn summarize(rows: &[Row], first_frame: Option<f64>, options: &ShapedOptions) -> Value {
    let shaped_s = options.shaped.as_secs_f64();
    let down = rows.iter().find(|r| r.number("layer") == Some(1.0));
    let up = rows
        .iter()
        .find(|r| !r.shaped && r.number("layer") == Some(0.0));
    let fps: Vec<f64> = rows
        .iter()
        .filter(|r| r.shaped && down.is_some_and(|d| r.t > d.t + 1.0))
        .filter_map(|r| r.number("fps"))
        .collect();
    let frozen: Vec<f64> = rows
        .iter()
        .filter(|r| r.shaped)
        .filter_map(|r| r.number("frozen_ms"))
        .collect();
    let round = |v: f64| (v * 10.0).round() / 10.0;
    json!({
        "rate": options.rate,
        "estimator": rows.iter().find_map(|r| r.link["estimator"].as_str()),
        "down_after_first_frame_s": first_frame.zip(down).map(|(f, d)| round(d.t - f)),
        "up_after_free_s": up.map(|u| round(u.t - shaped_s)),
        "shaped_fps_min": fps.iter().copied().reduce(f64::min),
        "shaped_fps_mean": (!fps.is_empty()).then(|| round(fps.iter().sum::<f64>() / fps.len() as f64)),
        "frozen_ms_while_shaped": (frozen.len() > 1).then(|| frozen[frozen.len() - 1] - frozen[0]),
    })
}

/// Estimate, received rate and probe padding against time; fps and layer
/// below.
fn plot(rows: &[Row], options: &ShapedOptions) -> String {
    const W: f64 = 900.0;
    const H: f64 = 420.0;
    const PAD: f64 = 50.0;
    let span = rows.last().map_or(1.0, |r| r.t.max(1.0));
    let top_kbps = rows
        .iter()
        .flat_map(|r| [r.number("estimate_kbps"), r.number("kbps")])
        .flatten()
        .fold(1.0, f64::max);
    let x = |t: f64| PAD + (W - 2.0 * PAD) * t / span;
    let line = |key: &str, scale: f64, y0: f64, height: f64, colour: &str| {
        let points: Vec<String> = rows
            .iter()
            .filter_map(|r| r.number(key).map(|v| (r.t, v)))
            .map(|(t, v)| {
                format!(
                    "{:.1},{:.1}",
                    x(t),
                    y0 + height - height * v.min(scale) / scale
                )
            })
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        )
    };
    let mut svg = vec![
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
        ),
        format!(
            r##"<rect x="{}" y="10" width="{}" height="{}" fill="#f3e6e6"/>"##,
            x(0.0),
            x(options.shaped.as_secs_f64()) - x(0.0),
            H - 40.0
        ),
        format!(
            r#"<text x="{}" y="24">shaped to {}</text>"#,
            x(0.0) + 4.0,
            options.rate
        ),
        line("estimate_kbps", top_kbps, 30.0, 200.0, "#1f77b4"),
        line("kbps", top_kbps, 30.0, 200.0, "#2ca02c"),
        line("padding_kbps", top_kbps, 30.0, 200.0, "#ff7f0e"),
        line("fps", 40.0, 250.0, 80.0, "#9467bd"),
        line("layer", 1.0, 350.0, 30.0, "#d62728"),
        format!(
            r##"<text x="{PAD}" y="44" fill="#1f77b4">estimate kbit/s (max {top_kbps:.0})</text>"##
        ),
        format!(
            r##"<text x="{}" y="44" fill="#2ca02c">received kbit/s</text>"##,
            PAD + 220.0
        ),
        format!(
            r##"<text x="{}" y="44" fill="#ff7f0e">probe padding kbit/s</text>"##,
            PAD + 350.0
        ),
        format!(r##"<text x="{PAD}" y="262" fill="#9467bd">viewer fps (0–40)</text>"##),
        format!(r##"<text x="{PAD}" y="346" fill="#d62728">layer (top 0, low 1)</text>"##),
        format!(r#"<text x="{}" y="{}">seconds</text>"#, W / 2.0, H - 8.0),
    ];
    for s in (0..=span as u32).step_by(5) {
        svg.push(format!(
            r#"<text x="{:.0}" y="{}">{s}</text>"#,
            x(f64::from(s)),
            H - 20.0
        ));
    }
    svg.push("</svg>".into());
    svg.join("\n")
}
