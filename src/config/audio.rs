//! The `[audio]` section: the microphone and its Opus encoding.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range, invalid};

/// Accepted ranges.
const BITRATE_RANGE: (u32, u32) = (6, 510);
const TONE_RANGE: (u32, u32) = (20, 20_000);

/// Where the sound comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum AudioSource {
    /// An ALSA capture device (`audio.device`).
    Alsa,
    /// The PulseAudio server of the session (`pulsesrc`).
    Pulse,
    /// `audiotestsrc`: a steady tone (`audio.test_tone_hz`).
    Test,
    /// The user's own gst-launch description (`audio.pipeline`).
    Pipeline,
    /// No sound.
    None,
}

impl TryFrom<String> for AudioSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "alsa" => Ok(Self::Alsa),
            "pulse" => Ok(Self::Pulse),
            "test" => Ok(Self::Test),
            "pipeline" => Ok(Self::Pipeline),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "{s:?} is not an audio source; accepted: alsa, pulse, test, pipeline, none (PipeWire: a pipeline with pipewiresrc)"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// Absent: `test` with the test picture, `none` with a camera.
    #[serde(default)]
    pub source: Option<AudioSource>,
    /// The ALSA device of `source = "alsa"`: `default`, `hw:1,0`,
    /// `plughw:CARD=Device,DEV=0`.
    #[serde(default = "default_device")]
    pub device: String,
    /// For `source = "pipeline"`: a gst-launch description of the source.
    #[serde(default)]
    pub pipeline: String,
    /// The pitch of `source = "test"`.
    #[serde(default = "default_tone")]
    pub test_tone_hz: u32,
    /// 1 (mono) or 2.
    #[serde(default = "default_channels")]
    pub channels: u32,
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u32,
    /// Opus in-band forward error correction: a lost packet is rebuilt
    /// from the next one.
    #[serde(default = "default_true")]
    pub fec: bool,
    /// Opus discontinuous transmission: almost nothing is sent in silence.
    #[serde(default)]
    pub dtx: bool,
    /// The microphone is muted: viewers get silence.
    #[serde(default)]
    pub muted: bool,
}

fn default_device() -> String {
    "default".into()
}
fn default_tone() -> u32 {
    440
}
fn default_channels() -> u32 {
    1
}
fn default_bitrate() -> u32 {
    32
}
fn default_true() -> bool {
    true
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            source: None,
            device: default_device(),
            pipeline: String::new(),
            test_tone_hz: default_tone(),
            channels: default_channels(),
            bitrate_kbps: default_bitrate(),
            fec: true,
            dtx: false,
            muted: false,
        }
    }
}

/// An ALSA device name goes into a gst-launch description: no quotes,
/// spaces or '!'.
pub(super) fn check_alsa_device(key: &str, device: &str) -> Result<(), ConfigError> {
    if device.is_empty() || device.contains(['"', '!', ' ', '\'']) {
        return Err(invalid(
            key,
            "must be an ALSA device name (default, hw:1,0, plughw:CARD=Device,DEV=0) \
             without quotes, spaces or '!'",
        ));
    }
    Ok(())
}

impl AudioConfig {
    /// The source in effect: as configured, else a tone beside the test
    /// picture and nothing beside a camera.
    pub fn source_for(&self, video: super::SourceKind) -> AudioSource {
        self.source.unwrap_or(match video {
            super::SourceKind::Test => AudioSource::Test,
            _ => AudioSource::None,
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("audio.bitrate_kbps", self.bitrate_kbps, BITRATE_RANGE)?;
        check_range("audio.channels", self.channels, (1, 2))?;
        check_range("audio.test_tone_hz", self.test_tone_hz, TONE_RANGE)?;
        check_alsa_device("audio.device", &self.device)?;
        if self.source == Some(AudioSource::Pipeline) && self.pipeline.trim().is_empty() {
            return Err(invalid(
                "audio.pipeline",
                "source = \"pipeline\" needs a gst-launch description of the source",
            ));
        }
        Ok(())
    }
}
