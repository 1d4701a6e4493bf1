//! `meshcam view` as a child process, with its JSON lines on a channel.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct ViewerProcess {
    pub child: Child,
    lines: mpsc::Receiver<Value>,
}

impl ViewerProcess {
    /// Runs `{bin} view --broker {broker} --room {room} --bind 127.0.0.1 {args}`.
    pub fn spawn(bin: &Path, broker: &str, room: &str, args: &[&str]) -> std::io::Result<Self> {
        let mut child = view_command(bin, broker, room, args).spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let lines = json_lines(stdout);
        Ok(Self { child, lines })
    }

    /// The next JSON line, or `None` after `timeout` or at end of output.
    pub fn next_line(&self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for `count` first frames and returns the viewers' ids; `None`
    /// if they did not all come within `deadline`.
    pub fn first_frames(&self, count: usize, deadline: Duration) -> Option<Vec<String>> {
        let end = Instant::now() + deadline;
        let mut ids = Vec::new();
        while ids.len() < count {
            let line = self.next_line(end.checked_duration_since(Instant::now())?)?;
            if line["event"] == "first_frame" {
                ids.push(line["viewer"].as_str().unwrap_or_default().to_owned());
            }
        }
        Some(ids)
    }
}

impl Drop for ViewerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{bin} view --broker {broker} --room {room} --bind 127.0.0.1 {args}`,
/// its output piped, its log quiet but for warnings.
pub fn view_command(bin: &Path, broker: &str, room: &str, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .args([
            "view",
            "--broker",
            broker,
            "--room",
            room,
            "--bind",
            "127.0.0.1",
        ])
        .args(args)
        .env("RUST_LOG", "warn,rtc=error,rtc_ice=error,webrtc=error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The JSON lines a child prints, parsed on a thread of their own; other
/// lines are skipped. The channel closes when the child closes its output.
pub fn json_lines(stdout: ChildStdout) -> mpsc::Receiver<Value> {
    let (tx, lines) = mpsc::channel();
    forward_json_lines(stdout, tx, |v| v);
    lines
}

/// Sends every JSON line of `stdout`, made into a message by `wrap`, to
/// `tx` from a thread of its own, until the output ends or nobody listens:
/// several children's lines on one channel.
pub fn forward_json_lines<T: Send + 'static>(
    stdout: ChildStdout,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(Value) -> T + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(wrap(v)).is_err()
            {
                return;
            }
        }
    });
}
