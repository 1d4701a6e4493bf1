//! A Mosquitto broker as a child process, on a free loopback port (with a
//! WebSockets listener beside it for browser pages, when asked), or with
//! a whole configuration of the test's own (TLS, logins, ACL).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// `mqtt` or, for a TLS listener on `port`, `mqtts`.
    scheme: &'static str,
    /// A plain WebSockets listener on loopback, if started with one.
    websockets: Option<u16>,
}

fn spawn(conf: &std::path::Path) -> std::io::Result<Child> {
    Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("mosquitto (apt-get install mosquitto): {e}"),
            )
        })
}

impl Mosquitto {
    /// Starts Mosquitto with `extra` configuration lines and waits until it
    /// accepts connections.
    pub fn start(extra: &str) -> std::io::Result<Self> {
        let port = super::free_port()?;
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 16777216\n{extra}\n"
        );
        Self::start_with_config(super::temp_dir("mosquitto")?, &conf, port, "mqtt")
    }

    /// As [`Mosquitto::start`], with a WebSockets listener too (for
    /// browser pages: [`Mosquitto::ws_url`]).
    pub fn start_with_websockets() -> std::io::Result<Self> {
        let ws = super::free_port()?;
        let mut broker = Self::start(&format!("listener {ws} 127.0.0.1\nprotocol websockets"))?;
        broker.websockets = Some(ws);
        Ok(broker)
    }

    /// Starts Mosquitto with the complete configuration `conf`, written into
    /// `dir` (removed with the broker), and waits until `port` accepts
    /// connections; [`Mosquitto::url`] is `{scheme}://127.0.0.1:{port}`.
    pub fn start_with_config(
        dir: PathBuf,
        conf: &str,
        port: u16,
        scheme: &'static str,
    ) -> std::io::Result<Self> {
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let child = spawn(&path)?;
        let mut broker = Self {
            child,
            port,
            dir,
            scheme,
            websockets: None,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > end || self.child.try_wait()?.is_some() {
                return Err(std::io::Error::other(format!(
                    "mosquitto did not start on port {}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the broker (no clean shutdown: retained messages are lost, as
    /// with `persistence false` after a crash).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.child = spawn(&self.dir.join("mosquitto.conf"))?;
        self.wait_ready()
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// `ws://127.0.0.1:{port}` of the WebSockets listener, if there is one.
    pub fn ws_url(&self) -> Option<String> {
        self.websockets.map(|port| format!("ws://127.0.0.1:{port}"))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
