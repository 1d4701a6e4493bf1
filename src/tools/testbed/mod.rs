//! Real processes for the benchmark, the soak and the integration tests: a
//! Mosquitto broker on a free loopback port, the camera daemon, `meshcam
//! view` as a child process whose JSON report lines are collected, and an
//! MQTT client that follows a few topics.

use std::path::{Path, PathBuf};

mod camera;
mod mosquitto;
mod subscriber;
mod viewer;
mod watch;

pub use camera::CameraProcess;
pub use mosquitto::Mosquitto;
pub use subscriber::subscribe;
pub use viewer::{ViewerProcess, forward_json_lines, json_lines, view_command};
pub use watch::TopicWatch;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "meshcam-{name}-{}-{}",
        std::process::id(),
        &crate::protocol::ids::new_session()[..8]
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A [`temp_dir`] removed when dropped, unless by a panic (its logs and
/// state are then left to read).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> std::io::Result<Self> {
        temp_dir(name).map(Self)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Sends `signal` to a child process.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on the pid of a child we own; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}
