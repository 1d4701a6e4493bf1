//! A viewer that is not our own WebRTC stack: GStreamer's webrtcbin
//! (libnice, OpenSSL DTLS, rtpbin at its default RTCP settings), written
//! from PROTOCOL.md alone (tests/interop/webrtcbin_viewer.py), run in a
//! network namespace and read through its JSON lines.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

use meshcam::tools::receivers::{WEBRTCBIN_VIEWER, python};

use super::netns::{LineProcess, Netns};

/// Publishing its presence.
const JOIN: Duration = Duration::from_secs(10);

pub struct WebrtcbinViewer {
    pub process: LineProcess,
    pub id: String,
    _dir: super::TempDir,
}

impl WebrtcbinViewer {
    /// The viewer in `ns`, its media bound to `bind`, joined to `room` on
    /// the broker at `broker_url`; `args` are the script's own options
    /// (`--no-decode`).
    pub fn start(
        ns: &Netns,
        broker_url: &str,
        bind: Ipv4Addr,
        room: &str,
        id: &str,
        args: &[&str],
    ) -> Self {
        let dir = super::temp_dir(id);
        let mut command = ns.command(python());
        command
            .arg(WEBRTCBIN_VIEWER)
            .args(["--broker", broker_url, "--room", room, "--id", id])
            .args(["--bind", &bind.to_string()])
            .args(args);
        let mut process = LineProcess::spawn(&format!("webrtcbin viewer {id}"), command, &dir);
        process.wait_for("joined", JOIN, |v| v["event"] == "joined");
        Self {
            process,
            id: id.to_owned(),
            _dir: dir,
        }
    }

    pub fn wait(&mut self, what: &str, deadline: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.process.wait_for(what, deadline, pred)
    }

    /// Waits until `frames` frames in all were decoded, the latest of
    /// them on a connection numbered at least `conn`.
    pub fn wait_frames(&mut self, frames: u64, conn: u64, deadline: Duration) -> Value {
        self.wait(
            &format!("{frames} frames on connection {conn} or later"),
            deadline,
            |v| {
                v["event"] == "frame"
                    && v["count"].as_u64() >= Some(frames)
                    && v["conn"].as_u64() >= Some(conn)
            },
        )
    }

    /// The last frame count reported.
    pub fn frames(&self) -> u64 {
        self.last_frame()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0)
    }

    /// The connection number of the last frame reported.
    pub fn conn(&self) -> u64 {
        self.last_frame()
            .and_then(|v| v["conn"].as_u64())
            .unwrap_or(0)
    }

    fn last_frame(&self) -> Option<&Value> {
        self.process
            .seen
            .iter()
            .rev()
            .find(|v| v["event"] == "frame")
    }

    /// Offers it was made, re-offers and ICE restarts included.
    pub fn offers(&self) -> usize {
        self.process
            .seen
            .iter()
            .filter(|v| v["event"] == "offer")
            .count()
    }

    /// The `answer` event this viewer printed for connection `conn`.
    pub fn answer_of(&self, conn: u64) -> Value {
        self.process
            .seen
            .iter()
            .rev()
            .find(|v| v["event"] == "answer" && v["conn"] == conn)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no answer for connection {conn}", self.id))
    }
}
