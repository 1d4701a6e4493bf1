//! The typed configuration: defaults, then the TOML file, then `MESHCAM_*`
//! environment variables (`MESHCAM_VIDEO__WIDTH=640`), then command-line
//! flags. Validation names the offending key and what it accepts, so a
//! device flashed with a typo says exactly what to fix.
//!
//! Owns: every configuration key, its default and its check. Must not touch:
//! files other than the configuration, the network, the pipeline (others read
//! the values; nothing here acts on them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config as Layers, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::protocol::ids::{is_peer_id, is_room};
pub use audio::{AudioConfig, AudioSource};
pub use broker_login::{BrokerAddress, MqttConfig};
use environment::{EnvironmentLayer, PREFIX, SEPARATOR};
pub use talk::{EchoMode, SPEAKER_VOLUME_RANGE, SpeakerConfig, SpeakerSink, TalkConfig};
pub use video::{
    BITRATE_RANGE, ENCODERS, FPS_RANGE, HEIGHT_RANGE, LOWER_LAYER_MIN_KBPS, LayerConfig,
    MAX_LOWER_LAYERS, SourceFormat, SourceKind, VideoConfig, WIDTH_RANGE,
};
pub use webrtc::{IceServer, MAX_VIEWERS_RANGE, MdnsMode, WebrtcConfig};
pub use whip::{WATCH_KINDS, WatchConfig, WhipConfig, WhipMode};

mod audio;
mod broker_login;
mod environment;
mod talk;
mod video;
mod webrtc;
mod whip;

/// Where the daemon looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/meshcam/meshcam.toml";

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    Load(String),
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub device: DeviceConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub video: VideoConfig,
    #[serde(default)]
    pub audio: AudioConfig,
    #[serde(default)]
    pub speaker: SpeakerConfig,
    #[serde(default)]
    pub talk: TalkConfig,
    #[serde(default)]
    pub webrtc: WebrtcConfig,
    #[serde(default)]
    pub whip: WhipConfig,
    /// Where durable state (rooms joined, settings) is kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Rooms to join at start, besides those remembered in the state.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Seconds between two telemetry publishes.
    #[serde(default = "default_stats_interval")]
    pub stats_interval_s: u64,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub web: WebConfig,
}

/// The embedded broker, used when `mqtt.url = "embedded"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT over TCP.
    #[serde(default = "default_broker_listen")]
    pub listen: String,
    /// MQTT over WebSockets, for browsers.
    #[serde(default = "default_broker_ws_listen")]
    pub ws_listen: String,
    /// Required as soon as anything listens beyond loopback.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// The browser viewer served over HTTP.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Where to serve it; empty: `127.0.0.1:8080` with the embedded broker,
    /// off otherwise. `off` turns it off.
    #[serde(default)]
    pub listen: String,
    /// The broker WebSocket URL the page uses; empty: the embedded broker's
    /// WebSocket port on the host the page came from.
    #[serde(default)]
    pub broker_url: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The peer id and MQTT client id; the host name when empty.
    #[serde(default)]
    pub id: String,
    /// A human name for viewers; the id when empty.
    #[serde(default)]
    pub name: String,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/meshcam")
}
fn default_stats_interval() -> u64 {
    10
}
fn default_broker_listen() -> String {
    "127.0.0.1:1883".into()
}
fn default_broker_ws_listen() -> String {
    "127.0.0.1:9001".into()
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: default_broker_listen(),
            ws_listen: default_broker_ws_listen(),
            username: None,
            password: None,
        }
    }
}
/// `mqtt.url` for the broker built into the daemon.
pub const EMBEDDED: &str = "embedded";
/// The room a standalone camera joins when it is told of none.
pub const STANDALONE_ROOM: &str = "home";

pub(crate) fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    (min, max): (T, T),
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("{value} is out of range; accepted: {min} to {max}"),
        ));
    }
    Ok(())
}

/// The host name, made into a valid peer id.
fn host_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "meshcam".into() } else { id }
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub device_id: Option<String>,
    pub mqtt_url: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub rooms: Vec<String>,
    pub source: Option<String>,
}

impl Config {
    /// The `[mqtt]` settings with which a tool (`meshcam view`, `meshcam
    /// ctl`) reaches this configuration's broker: in standalone mode, the
    /// embedded one, with the `[broker]` credentials.
    pub fn client_mqtt(&self) -> MqttConfig {
        if !self.embedded() {
            return self.mqtt.clone();
        }
        let listen = self
            .broker
            .listen
            .parse()
            .expect("validate() checked broker.listen");
        self.embedded_client(listen)
    }

    /// The `[mqtt]` settings of a client of the embedded broker listening on
    /// `listen` (its TCP listener), with the `[broker]` credentials.
    pub fn embedded_client(&self, listen: SocketAddr) -> MqttConfig {
        let host = if listen.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            listen.ip()
        };
        MqttConfig {
            url: format!("mqtt://{}", SocketAddr::new(host, listen.port())),
            username: self.broker.username.clone(),
            password: self.broker.password.clone(),
            prefix: self.mqtt.prefix.clone(),
            ..MqttConfig::default()
        }
    }

    /// Whether the daemon runs its own broker.
    pub fn embedded(&self) -> bool {
        self.mqtt.url == EMBEDDED
    }

    /// Where the viewer page is served, if anywhere.
    pub fn web_listen(&self) -> Option<&str> {
        match self.web.listen.as_str() {
            "off" => None,
            "" if self.embedded() => Some("127.0.0.1:8080"),
            "" => None,
            listen => Some(listen),
        }
    }

    /// Listening beyond loopback needs credentials, or anyone on the network
    /// could join the rooms and command the camera.
    fn validate_standalone(&self) -> Result<(), ConfigError> {
        let filled = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let has_credentials = filled(&self.broker.username) && filled(&self.broker.password);
        let listens = [
            ("broker.listen", Some(self.broker.listen.as_str())),
            ("broker.ws_listen", Some(self.broker.ws_listen.as_str())),
            ("web.listen", self.web_listen()),
        ];
        for (key, listen) in listens {
            let Some(listen) = listen else { continue };
            let addr: SocketAddr = listen.parse().map_err(|_| {
                invalid(
                    key,
                    format!("{listen:?} is not an address like 127.0.0.1:1883"),
                )
            })?;
            if !addr.ip().is_loopback() && !has_credentials {
                return Err(invalid(
                    key,
                    format!(
                        "{listen} listens beyond loopback, which needs credentials: set broker.username \
                         and broker.password (or MESHCAM_BROKER__USERNAME and MESHCAM_BROKER__PASSWORD)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Loads `path` (or the default path when it exists), the environment and
    /// `overrides`, then validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut layers = Layers::builder();
        match path {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Load(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                layers = layers.add_source(File::from(path).format(FileFormat::Toml));
            }
            None => {
                layers = layers.add_source(
                    File::with_name(DEFAULT_CONFIG_PATH)
                        .format(FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let environment = EnvironmentLayer::split(std::env::vars(), &Self::default_tree()?);
        if !environment.unknown.is_empty() {
            tracing::warn!(
                variables = %environment.unknown.join(", "),
                "ignoring environment variables that name no configuration key \
                 (MESHCAM_<SECTION>__<KEY>, see config/meshcam.toml)"
            );
        }
        layers = layers.add_source(
            Environment::with_prefix(PREFIX.trim_end_matches('_'))
                .source(Some(environment.known.into_iter().collect()))
                .prefix_separator("_")
                .separator(SEPARATOR)
                .list_separator(",")
                .with_list_parse_key("rooms")
                .try_parsing(true),
        );
        let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
                   key: &str,
                   value: Option<&str>| match value {
            Some(v) => b.set_override(key, v),
            None => Ok(b),
        };
        let err = |e: config::ConfigError| ConfigError::Load(e.to_string());
        layers = set(layers, "device.id", overrides.device_id.as_deref()).map_err(err)?;
        layers = set(layers, "mqtt.url", overrides.mqtt_url.as_deref()).map_err(err)?;
        layers = set(
            layers,
            "state_dir",
            overrides.state_dir.as_deref().and_then(Path::to_str),
        )
        .map_err(err)?;
        layers = set(layers, "video.source", overrides.source.as_deref()).map_err(err)?;
        if !overrides.rooms.is_empty() {
            layers = layers
                .set_override("rooms", overrides.rooms.clone())
                .map_err(err)?;
        }
        let mut config: Config = layers
            .build()
            .map_err(err)?
            .try_deserialize()
            .map_err(err)?;
        config.fill_in();
        config.validate()?;
        Ok(config)
    }

    /// The default configuration as JSON: the keys the environment may set.
    fn default_tree() -> Result<serde_json::Value, ConfigError> {
        serde_json::to_value(Self::from_toml("")?).map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// Parses a TOML text on its own (no environment), for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = Layers::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(Layers::try_deserialize)
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.fill_in();
        config.validate()?;
        Ok(config)
    }

    fn fill_in(&mut self) {
        if self.device.id.is_empty() {
            self.device.id = host_id();
        }
        if self.device.name.is_empty() {
            self.device.name = self.device.id.clone();
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_peer_id(&self.device.id) {
            return Err(invalid(
                "device.id",
                format!("{:?} must match [A-Za-z0-9_-]{{1,64}}", self.device.id),
            ));
        }
        if self.device.name.len() > 128 {
            return Err(invalid("device.name", "at most 128 bytes"));
        }
        if self.embedded() {
            self.validate_standalone()?;
        } else {
            self.mqtt.validate_url()?;
        }
        if let Some(listen) = self.web_listen()
            && listen.parse::<SocketAddr>().is_err()
        {
            return Err(invalid(
                "web.listen",
                format!("{listen:?} is not an address like 127.0.0.1:8080"),
            ));
        }
        self.mqtt.validate()?;
        self.video.validate()?;
        self.audio.validate()?;
        self.speaker.validate()?;
        self.talk.validate()?;
        self.webrtc.validate()?;
        self.whip.validate()?;
        if self.rooms.len() > crate::room::MAX_ROOMS {
            return Err(invalid(
                "rooms",
                format!(
                    "{} rooms; at most {}",
                    self.rooms.len(),
                    crate::room::MAX_ROOMS
                ),
            ));
        }
        for room in &self.rooms {
            if !is_room(room) {
                return Err(invalid(
                    "rooms",
                    format!("{room:?} must match [A-Za-z0-9_-]{{1,64}}"),
                ));
            }
        }
        check_range("stats_interval_s", self.stats_interval_s, (1, 3600))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
