//! The typed configuration: defaults, then the TOML file, then `MESHCAM_*`
//! environment variables (`MESHCAM_VIDEO__WIDTH=640`), then command-line
//! flags. Validation names the offending key and what it accepts, so a
//! device flashed with a typo says exactly what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config as Layers, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::protocol::ids::{is_peer_id, is_room};
pub use broker_login::{BrokerAddress, MqttConfig};
use environment::{EnvironmentLayer, PREFIX, SEPARATOR};

mod broker_login;
mod environment;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub device: DeviceConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub video: VideoConfig,
    #[serde(default)]
    pub webrtc: WebrtcConfig,
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

/// Where the picture comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SourceKind {
    /// A V4L2 device (`video.device`).
    V4l2,
    /// `libcamerasrc` (Raspberry Pi camera modules).
    Libcamera,
    /// `videotestsrc`: a moving pattern with a clock.
    Test,
    /// The user's own gst-launch description (`video.pipeline`).
    Pipeline,
}

/// What a V4L2 camera (or a custom pipeline) delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SourceFormat {
    /// Let GStreamer pick and decode whatever the device offers.
    Auto,
    /// Raw video (YUYV, NV12, …).
    Raw,
    /// Motion JPEG, decoded before encoding.
    Mjpeg,
    /// H.264 from the camera itself, passed through without re-encoding.
    H264,
}

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

impl TryFrom<String> for SourceKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "v4l2" => Ok(Self::V4l2),
            "libcamera" => Ok(Self::Libcamera),
            "test" => Ok(Self::Test),
            "pipeline" => Ok(Self::Pipeline),
            _ => Err(format!(
                "{s:?} is not a source; accepted: v4l2, libcamera, test, pipeline"
            )),
        }
    }
}

impl TryFrom<String> for SourceFormat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "raw" => Ok(Self::Raw),
            "mjpeg" => Ok(Self::Mjpeg),
            "h264" => Ok(Self::H264),
            _ => Err(format!(
                "{s:?} is not a format; accepted: auto, raw, mjpeg, h264"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    #[serde(default = "default_source")]
    pub source: SourceKind,
    #[serde(default = "default_device_path")]
    pub device: String,
    #[serde(default = "default_format")]
    pub format: SourceFormat,
    /// For `source = "pipeline"`: a gst-launch description of the source.
    #[serde(default)]
    pub pipeline: String,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u32,
    /// `auto` probes v4l2h264enc → x264enc → openh264enc.
    #[serde(default = "default_encoder")]
    pub encoder: String,
    /// Longest time between two key frames.
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval_s: u32,
    /// Key-frame requests closer together than this are merged.
    #[serde(default = "default_keyframe_min_interval")]
    pub keyframe_min_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
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
fn default_source() -> SourceKind {
    SourceKind::Test
}
fn default_device_path() -> String {
    "/dev/video0".into()
}
fn default_format() -> SourceFormat {
    SourceFormat::Auto
}
fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    30
}
fn default_bitrate() -> u32 {
    2000
}
fn default_encoder() -> String {
    "auto".into()
}
fn default_keyframe_interval() -> u32 {
    2
}
fn default_keyframe_min_interval() -> u64 {
    500
}
fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_max_viewers() -> usize {
    8
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            source: default_source(),
            device: default_device_path(),
            format: default_format(),
            pipeline: String::new(),
            width: default_width(),
            height: default_height(),
            fps: default_fps(),
            bitrate_kbps: default_bitrate(),
            encoder: default_encoder(),
            keyframe_interval_s: default_keyframe_interval(),
            keyframe_min_interval_ms: default_keyframe_min_interval(),
        }
    }
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
        }
    }
}

/// `mqtt.url` for the broker built into the daemon.
pub const EMBEDDED: &str = "embedded";
/// The room a standalone camera joins when it is told of none.
pub const STANDALONE_ROOM: &str = "home";

/// The encoders `video.encoder` accepts besides `auto`.
pub const ENCODERS: [&str; 3] = ["v4l2h264enc", "x264enc", "openh264enc"];

/// Accepted ranges, shared with the `set` command.
pub const WIDTH_RANGE: (u32, u32) = (160, 3840);
pub const HEIGHT_RANGE: (u32, u32) = (120, 2160);
pub const FPS_RANGE: (u32, u32) = (1, 60);
pub const BITRATE_RANGE: (u32, u32) = (100, 20_000);
pub const MAX_VIEWERS_RANGE: (usize, usize) = (1, 64);

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
        let v = &self.video;
        check_range("video.width", v.width, WIDTH_RANGE)?;
        check_range("video.height", v.height, HEIGHT_RANGE)?;
        check_range("video.fps", v.fps, FPS_RANGE)?;
        check_range("video.bitrate_kbps", v.bitrate_kbps, BITRATE_RANGE)?;
        check_range("video.keyframe_interval_s", v.keyframe_interval_s, (1, 60))?;
        check_range(
            "video.keyframe_min_interval_ms",
            v.keyframe_min_interval_ms,
            (0, 10_000),
        )?;
        if v.encoder != "auto" && !ENCODERS.contains(&v.encoder.as_str()) {
            return Err(invalid(
                "video.encoder",
                format!(
                    "{:?} is not supported; accepted: auto, {}",
                    v.encoder,
                    ENCODERS.join(", ")
                ),
            ));
        }
        if v.source == SourceKind::Pipeline && v.pipeline.trim().is_empty() {
            return Err(invalid(
                "video.pipeline",
                "source = \"pipeline\" needs a gst-launch description of the source",
            ));
        }
        if !v.device.starts_with('/') || v.device.contains(['"', '!', ' ']) {
            return Err(invalid(
                "video.device",
                "must be an absolute device path without quotes, spaces or '!'",
            ));
        }
        let w = &self.webrtc;
        check_range("webrtc.max_viewers", w.max_viewers, MAX_VIEWERS_RANGE)?;
        if w.bind_address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "webrtc.bind_address",
                format!("{:?} is not an IP address", w.bind_address),
            ));
        }
        if (w.udp_port_min == 0) != (w.udp_port_max == 0) || w.udp_port_min > w.udp_port_max {
            return Err(invalid(
                "webrtc.udp_port_min",
                "give both udp_port_min and udp_port_max (min <= max), or neither",
            ));
        }
        for (i, server) in w.ice_servers.iter().enumerate() {
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
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_file_is_valid_and_matches_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/meshcam.toml"))
                .unwrap();
        let documented = Config::from_toml(&text).unwrap();
        let defaults = Config::from_toml("").unwrap();
        assert_eq!(
            serde_json::to_value(&documented).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_the_accepted_values() {
        let e = error_of("[video]\nwidth = 5");
        assert!(
            e.contains("video.width") && e.contains("160 to 3840"),
            "{e}"
        );
        let e = error_of("[video]\nencoder = \"nvenc\"");
        assert!(e.contains("video.encoder") && e.contains("x264enc"), "{e}");
        let e = error_of("[video]\nsource = \"webcam\"");
        assert!(e.contains("source") && e.contains("v4l2"), "{e}");
        let e = error_of("[mqtt]\nurl = \"http://x\"");
        assert!(e.contains("mqtt.url") && e.contains("mqtts://"), "{e}");
        let e = error_of("[broker]\nws_listen = \"0.0.0.0:9001\"");
        assert!(
            e.contains("broker.ws_listen") && e.contains("broker.username"),
            "{e}"
        );
        let e = error_of("[web]\nlisten = \"0.0.0.0:8080\"");
        assert!(e.contains("web.listen") && e.contains("credentials"), "{e}");
        let e = error_of("[device]\nid = \"a b\"");
        assert!(e.contains("device.id"), "{e}");
        let e = error_of(&format!("rooms = [{}]", vec!["\"r\""; 17].join(",")));
        assert!(e.contains("rooms") && e.contains("at most 16"), "{e}");
        let e = error_of("rooms = [\"ok\", \"not/ok\"]");
        assert!(e.contains("rooms"), "{e}");
        let e = error_of("[video]\nwidht = 640");
        assert!(e.contains("widht"), "{e}");
        let e = error_of("[webrtc]\nudp_port_min = 5000");
        assert!(e.contains("udp_port_min"), "{e}");
        let e = error_of("[video]\nsource = \"pipeline\"");
        assert!(e.contains("video.pipeline"), "{e}");
        let e = error_of("[[webrtc.ice_servers]]\nurls = [\"http://x\"]");
        assert!(e.contains("ice_servers[0]"), "{e}");
    }

    #[test]
    fn tools_reach_the_embedded_broker_with_its_credentials() {
        let c = Config::from_toml(
            "[broker]\nlisten = \"0.0.0.0:1884\"\nusername = \"u\"\npassword = \"p\"",
        )
        .unwrap();
        let mqtt = c.client_mqtt();
        assert_eq!(mqtt.url, "mqtt://127.0.0.1:1884");
        assert_eq!(mqtt.username.as_deref(), Some("u"));
        assert_eq!(mqtt.password.as_deref(), Some("p"));
        let external = Config::from_toml("[mqtt]\nurl = \"mqtts://b\"\nprefix = \"x\"").unwrap();
        assert_eq!(external.client_mqtt(), external.mqtt);
    }

    #[test]
    fn standalone_listens_on_loopback_and_beyond_only_with_credentials() {
        let c = Config::from_toml("").unwrap();
        assert!(c.embedded());
        assert_eq!(c.web_listen(), Some("127.0.0.1:8080"));
        let open = Config::from_toml(
            "[broker]\nlisten = \"0.0.0.0:1883\"\nws_listen = \"0.0.0.0:9001\"\n\
             username = \"u\"\npassword = \"p\"\n[web]\nlisten = \"0.0.0.0:8080\"",
        )
        .unwrap();
        assert_eq!(open.web_listen(), Some("0.0.0.0:8080"));
        let external = Config::from_toml("[mqtt]\nurl = \"mqtt://b:1883\"").unwrap();
        assert_eq!(external.web_listen(), None);
        let off = Config::from_toml("[web]\nlisten = \"off\"").unwrap();
        assert_eq!(off.web_listen(), None);
    }

    #[test]
    fn ice_servers_carry_turn_credentials() {
        let c = Config::from_toml(
            "[[webrtc.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n\
             [[webrtc.ice_servers]]\nurls = [\"turn:turn.example.org:3478?transport=udp\"]\n\
             username = \"u\"\ncredential = \"p\"",
        )
        .unwrap();
        assert_eq!(c.webrtc.ice_servers.len(), 2);
        assert_eq!(c.webrtc.ice_servers[1].credential, "p");
    }
}
