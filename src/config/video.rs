//! The `[video]` section: the source, its format, and the encoding.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range, invalid};

/// The encoders `video.encoder` accepts besides `auto`, in the order `auto`
/// prefers them: the Pi's hardware encoder, then x264, then OpenH264.
pub const ENCODERS: [&str; 3] = ["v4l2h264enc", "x264enc", "openh264enc"];

/// Accepted ranges, shared with the `set` command.
pub const WIDTH_RANGE: (u32, u32) = (160, 3840);
pub const HEIGHT_RANGE: (u32, u32) = (120, 2160);
pub const FPS_RANGE: (u32, u32) = (1, 60);
pub const BITRATE_RANGE: (u32, u32) = (100, 20_000);

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
    /// The layers below the top one (`width`×`height` at `bitrate_kbps`),
    /// best first, each encoded only while a viewer gets it. Absent: one,
    /// at half the width and height and a fifth of the bitrate. Empty: the
    /// top layer only. How many there are is read at start.
    #[serde(default)]
    pub layers: Option<Vec<LayerConfig>>,
    /// Every viewer on this layer (0 is the top one) instead of the one its
    /// link carries: for diagnostics.
    #[serde(default)]
    pub pin_layer: Option<usize>,
}

/// One layer below the top.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

/// Most layers below the top one.
pub const MAX_LOWER_LAYERS: usize = 3;
/// The lowest bitrate of a layer below the top one.
pub const LOWER_LAYER_MIN_KBPS: u32 = 50;

impl VideoConfig {
    /// The layers below the top one, as configured or by default.
    pub fn lower_layers(&self) -> Vec<LayerConfig> {
        match &self.layers {
            Some(layers) => layers.clone(),
            None => {
                let even = |n: u32| (n / 2) & !1;
                vec![LayerConfig {
                    width: even(self.width).max(WIDTH_RANGE.0 / 2),
                    height: even(self.height).max(HEIGHT_RANGE.0 / 2),
                    bitrate_kbps: (self.bitrate_kbps / 5).max(LOWER_LAYER_MIN_KBPS),
                }]
            }
        }
    }

    fn validate_layers(&self) -> Result<(), ConfigError> {
        let layers = self.lower_layers();
        if layers.len() > MAX_LOWER_LAYERS {
            return Err(invalid(
                "video.layers",
                format!("at most {MAX_LOWER_LAYERS} layers below the top one"),
            ));
        }
        let (mut width, mut height, mut bitrate) = (self.width, self.height, self.bitrate_kbps);
        for (i, layer) in layers.iter().enumerate() {
            let key = format!("video.layers[{i}]");
            if layer.width < 16 || layer.height < 16 || layer.width % 2 + layer.height % 2 > 0 {
                return Err(invalid(
                    &key,
                    "width and height must be even and at least 16",
                ));
            }
            if layer.width > width || layer.height > height {
                return Err(invalid(
                    &key,
                    format!(
                        "{}x{} is larger than the layer above ({width}x{height})",
                        layer.width, layer.height
                    ),
                ));
            }
            if layer.bitrate_kbps < LOWER_LAYER_MIN_KBPS || layer.bitrate_kbps >= bitrate {
                return Err(invalid(
                    &key,
                    format!(
                        "bitrate_kbps {} must be at least {LOWER_LAYER_MIN_KBPS} and below the layer above ({bitrate})",
                        layer.bitrate_kbps
                    ),
                ));
            }
            (width, height, bitrate) = (layer.width, layer.height, layer.bitrate_kbps);
        }
        if let Some(pin) = self.pin_layer
            && pin > layers.len()
        {
            return Err(invalid(
                "video.pin_layer",
                format!(
                    "there are {} layers (0 to {})",
                    layers.len() + 1,
                    layers.len()
                ),
            ));
        }
        Ok(())
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
            layers: None,
            pin_layer: None,
        }
    }
}

impl VideoConfig {
    /// Sizes, rates and the encoder in their ranges; a source that can be built.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("video.width", self.width, WIDTH_RANGE)?;
        check_range("video.height", self.height, HEIGHT_RANGE)?;
        check_range("video.fps", self.fps, FPS_RANGE)?;
        check_range("video.bitrate_kbps", self.bitrate_kbps, BITRATE_RANGE)?;
        check_range(
            "video.keyframe_interval_s",
            self.keyframe_interval_s,
            (1, 60),
        )?;
        check_range(
            "video.keyframe_min_interval_ms",
            self.keyframe_min_interval_ms,
            (0, 10_000),
        )?;
        self.validate_layers()?;
        if self.encoder != "auto" && !ENCODERS.contains(&self.encoder.as_str()) {
            return Err(invalid(
                "video.encoder",
                format!(
                    "{:?} is not supported; accepted: auto, {}",
                    self.encoder,
                    ENCODERS.join(", ")
                ),
            ));
        }
        if self.source == SourceKind::Pipeline && self.pipeline.trim().is_empty() {
            return Err(invalid(
                "video.pipeline",
                "source = \"pipeline\" needs a gst-launch description of the source",
            ));
        }
        if !self.device.starts_with('/') || self.device.contains(['"', '!', ' ']) {
            return Err(invalid(
                "video.device",
                "must be an absolute device path without quotes, spaces or '!'",
            ));
        }
        Ok(())
    }
}
