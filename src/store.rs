//! Durable state: the rooms joined by command and the settings changed at run
//! time. A camera that restarts or loses power comes back the same.
//!
//! The file is replaced atomically (write a temporary file, fsync it, rename
//! it over the old one, fsync the directory), so after a power cut it is
//! always the old or the new version, never a torn one.
//!
//! Owns: the state file and its format. Must not touch: what the state means
//! (the daemon decides what to keep).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Settings changed by the `set` command; `None` keeps the configured value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_bitrates_kbps: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip_mode: Option<crate::config::WhipMode>,
    /// `mute` / `unmute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted: Option<bool>,
    /// Whether viewers may talk through the camera (`set talk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk: Option<bool>,
    /// In percent (`set speaker_volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_volume: Option<u32>,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Rooms joined by command, in join order.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Rooms of the configuration (or the standalone room) left by command:
    /// not rejoined at start or on reload until joined by command again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
    #[serde(default)]
    pub settings: Settings,
}

/// The state file in `state_dir`.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is an empty state. A corrupt file is
    /// an error (it is never produced by [`Store::save`]).
    pub fn load(&self) -> std::io::Result<State> {
        self.remove_leftovers();
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Temporary files of writes cut short by a crash or power loss: never
    /// renamed into place, so never state.
    fn remove_leftovers(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let prefix = format!("{}.tmp", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Replaces the state atomically.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp{}", std::process::id()));
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_is_empty() {
        let dir = tempdir();
        let store = Store::new(&dir);
        assert_eq!(store.load().unwrap(), State::default());
        let state = State {
            rooms: vec!["home".into(), "garage".into()],
            left: vec!["door".into()],
            settings: Settings {
                bitrate_kbps: Some(1500),
                ..Settings::default()
            },
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leftovers_of_interrupted_writes_are_removed_on_load() {
        let dir = tempdir();
        let store = Store::new(&dir);
        store.save(&State::default()).unwrap();
        fs::write(dir.join("state.json.tmp4242"), b"{\"rooms\": [").unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempdir();
        fs::write(dir.join("state.json"), b"{\"rooms\": [").unwrap();
        assert!(Store::new(&dir).load().is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshcam-store-{}-{}",
            std::process::id(),
            crate::protocol::ids::new_session()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
