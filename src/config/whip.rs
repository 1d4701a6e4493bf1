//! The `[whip]` section: publishing the stream once to an SFU over WHIP
//! (RFC 9725) when a room has more viewers than the mesh takes, and where
//! the viewers the mesh turns away watch instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// When the camera publishes to the SFU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum WhipMode {
    #[default]
    Off,
    /// While the camera is in a room.
    Always,
    /// While a room has more viewers than `webrtc.max_viewers`, and
    /// `linger_s` after the last viewer beyond it is gone.
    Overflow,
}

impl WhipMode {
    pub const NAMES: &'static str = "off, always, overflow";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Always => "always",
            Self::Overflow => "overflow",
        }
    }
}

impl TryFrom<String> for WhipMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "off" => Ok(Self::Off),
            "always" => Ok(Self::Always),
            "overflow" => Ok(Self::Overflow),
            _ => Err(format!(
                "{s:?} is not a WHIP mode; accepted: {}",
                Self::NAMES
            )),
        }
    }
}

/// What the viewers the mesh turns away are told (PROTOCOL.md, "Watching
/// from an SFU"); the camera cannot learn it from the WHIP server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// `janus-videoroom`: Janus's VideoRoom, the one kind viewers of this
    /// release follow.
    #[serde(default)]
    pub kind: String,
    /// The Janus HTTP API (`http://sfu:8088/janus`).
    #[serde(default)]
    pub url: String,
    /// The Janus VideoRoom room the WHIP endpoint publishes into.
    #[serde(default)]
    pub room: Option<u64>,
}

/// Kinds of [`WatchConfig::kind`] the viewers of this release follow.
pub const WATCH_KINDS: [&str; 1] = ["janus-videoroom"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WhipConfig {
    #[serde(default)]
    pub mode: WhipMode,
    /// The WHIP endpoint URL (https, or http on a trusted network).
    #[serde(default)]
    pub endpoint: String,
    /// The bearer token, or a file holding it (`token_file`, read at start).
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Seconds the publication stays up after the last overflow viewer left.
    #[serde(default = "default_linger")]
    pub linger_s: u64,
    /// Where viewers watch while the camera publishes; absent: nowhere
    /// they are told of.
    #[serde(default)]
    pub watch: Option<WatchConfig>,
}

fn default_linger() -> u64 {
    30
}

impl Default for WhipConfig {
    fn default() -> Self {
        Self {
            mode: WhipMode::Off,
            endpoint: String::new(),
            token: String::new(),
            token_file: None,
            linger_s: default_linger(),
            watch: None,
        }
    }
}

/// An absolute `http://` or `https://` URL with a host, as the WHIP
/// client and the viewers will parse it.
fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

impl WhipConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.mode != WhipMode::Off && self.endpoint.is_empty() {
            return Err(invalid(
                "whip.endpoint",
                format!(
                    "whip.mode = \"{}\" needs the WHIP endpoint URL",
                    self.mode.as_str()
                ),
            ));
        }
        if !self.endpoint.is_empty() && !is_http_url(&self.endpoint) {
            return Err(invalid(
                "whip.endpoint",
                format!("{:?} is not an http:// or https:// URL", self.endpoint),
            ));
        }
        if !self.token.is_empty() && self.token_file.is_some() {
            return Err(invalid(
                "whip.token_file",
                "give the token or the file that holds it, not both",
            ));
        }
        if let Some(watch) = &self.watch {
            if !WATCH_KINDS.contains(&watch.kind.as_str()) {
                return Err(invalid(
                    "whip.watch.kind",
                    format!(
                        "{:?} is not a kind viewers follow; accepted: {}",
                        watch.kind,
                        WATCH_KINDS.join(", ")
                    ),
                ));
            }
            if !is_http_url(&watch.url) {
                return Err(invalid(
                    "whip.watch.url",
                    format!("{:?} is not an http:// or https:// URL", watch.url),
                ));
            }
            if watch.kind == "janus-videoroom" && watch.room.is_none() {
                return Err(invalid(
                    "whip.watch.room",
                    "a janus-videoroom pointer needs the room the endpoint publishes into",
                ));
            }
        }
        Ok(())
    }

    /// Where viewers the mesh turns away watch: the configured pointer,
    /// while the camera publishes or will publish when they come (a mode
    /// other than off).
    pub fn pointer(&self) -> Option<crate::protocol::Watch> {
        let watch = self.watch.as_ref().filter(|_| self.mode != WhipMode::Off)?;
        Some(crate::protocol::Watch {
            kind: watch.kind.clone(),
            url: watch.url.clone(),
            room: watch.room,
        })
    }

    /// The bearer token: `token`, or the first line of `token_file`.
    pub fn bearer(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("whip.token_file", format!("{}: {e}", path.display())))?;
            let token = text.lines().next().unwrap_or_default().trim().to_owned();
            return Ok((!token.is_empty()).then_some(token));
        }
        Ok((!self.token.is_empty()).then(|| self.token.clone()))
    }
}
