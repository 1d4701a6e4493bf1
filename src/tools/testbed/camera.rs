//! The camera daemon as a child process, configured from a TOML snippet,
//! with media on loopback and its log in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct CameraProcess {
    pub child: Child,
    /// The log file, in the directory that holds the configuration and the
    /// state (`state/`).
    log: PathBuf,
}

impl CameraProcess {
    /// Starts `{bin} --config {dir}/meshcam.toml` with `toml` plus the
    /// device id, the broker and a state directory inside `dir`, and `env`
    /// added to its environment.
    pub fn spawn(
        bin: &Path,
        broker: &str,
        id: &str,
        toml: &str,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let config = dir.join("meshcam.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\n{toml}\n[device]\nid = \"{id}\"\n[mqtt]\nurl = \"{broker}\"\n",
                dir.join("state").display(),
            ),
        )?;
        let log = dir.join(format!(
            "camera-{}.log",
            &crate::protocol::ids::new_session()[..8]
        ));
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("MESHCAM_WEBRTC__BIND_ADDRESS", "127.0.0.1")
            // MESHCAM_CAMERA_LOG: another RUST_LOG for the cameras of tests.
            .env(
                "RUST_LOG",
                std::env::var("MESHCAM_CAMERA_LOG")
                    .unwrap_or_else(|_| "info,rtc=warn,rtc_ice=error,webrtc=warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self { child, log })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CameraProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
