//! The `[webrtc]` section: ICE servers, the media sockets, and how many
//! viewers at most.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range, invalid};

/// Accepted range of `webrtc.max_viewers`, shared with the `set` command.
pub const MAX_VIEWERS_RANGE: (usize, usize) = (1, 64);

/// Whether ICE uses multicast DNS (`webrtc.mdns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum MdnsMode {
    /// No mDNS socket at all. A browser's `*.local` host candidates are
    /// dropped and the browser is learned from its own checks
    /// (peer-reflexive), which works on every LAN, with or without routes.
    #[default]
    Off,
    /// Resolve the viewers' `*.local` candidates; ours stay addresses.
    Query,
    /// Resolve theirs and hide our addresses behind a `*.local` name.
    Gather,
}

impl TryFrom<String> for MdnsMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "off" => Ok(Self::Off),
            "query" => Ok(Self::Query),
            "gather" => Ok(Self::Gather),
            _ => Err(format!(
                "{s:?} is not an mDNS mode; accepted: off, query, gather"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
    /// The TURN server's shared secret (coturn's `static-auth-secret`), or a
    /// file holding it (`secret_file`, read at start): the camera mints
    /// credentials from it for itself and for each viewer
    /// ([`crate::turn_rest`]), instead of `username` and `credential`.
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// How long minted credentials are accepted, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
}

fn default_ttl() -> u64 {
    86_400
}

/// Accepted range of `ttl_s`: a minute to a week.
const TTL_RANGE: (u64, u64) = (60, 7 * 86_400);

impl IceServer {
    /// A server with fixed credentials (or none: STUN).
    pub fn fixed(urls: Vec<String>, username: String, credential: String) -> Self {
        Self {
            urls,
            username,
            credential,
            secret: String::new(),
            secret_file: None,
            ttl_s: default_ttl(),
        }
    }

    /// The shared secret: `secret`, or the first line of `secret_file`;
    /// `None` for a server with fixed credentials.
    pub fn shared_secret(&self, key: &str) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
            let secret = text.lines().next().unwrap_or_default().trim().to_owned();
            if secret.is_empty() {
                return Err(invalid(key, format!("{} is empty", path.display())));
            }
            return Ok(Some(secret));
        }
        Ok((!self.secret.is_empty()).then(|| self.secret.clone()))
    }

    /// How long minted credentials last.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebrtcConfig {
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
    /// The address media sockets bind; `0.0.0.0` means every interface.
    #[serde(default = "default_bind")]
    pub bind_address: String,
    /// UDP ports for media, inclusive; both 0 means any free port.
    #[serde(default)]
    pub udp_port_min: u16,
    #[serde(default)]
    pub udp_port_max: u16,
    #[serde(default = "default_max_viewers")]
    pub max_viewers: usize,
    /// Multicast DNS for ICE candidates. Where it cannot work (no multicast
    /// route) connections go on without it.
    #[serde(default)]
    pub mdns: MdnsMode,
    /// Drive the viewers' connections in meshcam's own loop (one task, one
    /// UDP socket per interface address shared by all viewers, a frame's
    /// packets in one GSO send) instead of a task per connection; on by
    /// default. With `mdns` set, connections keep their own tasks.
    #[serde(default = "default_engine")]
    pub engine: bool,
}

fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_engine() -> bool {
    true
}
fn default_max_viewers() -> usize {
    8
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            bind_address: default_bind(),
            udp_port_min: 0,
            udp_port_max: 0,
            max_viewers: default_max_viewers(),
            mdns: MdnsMode::Off,
            engine: default_engine(),
        }
    }
}

impl WebrtcConfig {
    /// The viewer limit, the bind address, the port range and the ICE URLs.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("webrtc.max_viewers", self.max_viewers, MAX_VIEWERS_RANGE)?;
        if self.bind_address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "webrtc.bind_address",
                format!("{:?} is not an IP address", self.bind_address),
            ));
        }
        if (self.udp_port_min == 0) != (self.udp_port_max == 0)
            || self.udp_port_min > self.udp_port_max
        {
            return Err(invalid(
                "webrtc.udp_port_min",
                "give both udp_port_min and udp_port_max (min <= max), or neither",
            ));
        }
        for (i, server) in self.ice_servers.iter().enumerate() {
            let minted = !server.secret.is_empty() || server.secret_file.is_some();
            if !server.secret.is_empty() && server.secret_file.is_some() {
                return Err(invalid(
                    &format!("webrtc.ice_servers[{i}].secret_file"),
                    "give the secret or the file that holds it, not both",
                ));
            }
            if minted && !(server.username.is_empty() && server.credential.is_empty()) {
                return Err(invalid(
                    &format!("webrtc.ice_servers[{i}].secret"),
                    "credentials are minted from the secret: leave username and credential out",
                ));
            }
            check_range(
                &format!("webrtc.ice_servers[{i}].ttl_s"),
                server.ttl_s,
                TTL_RANGE,
            )?;
            for url in &server.urls {
                let scheme = url.split(':').next().unwrap_or_default();
                if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
                    return Err(invalid(
                        &format!("webrtc.ice_servers[{i}].urls"),
                        format!("{url:?}: accepted schemes are stun:, stuns:, turn:, turns:"),
                    ));
                }
            }
        }
        Ok(())
    }
}
