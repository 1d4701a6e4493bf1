//! The `[speaker]` and `[talk]` sections: where a viewer's voice is
//! played, and the rules of talking back.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range, invalid};

/// Where talked-back sound is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SpeakerSink {
    /// An ALSA playback device (`speaker.device`).
    Alsa,
    /// The PulseAudio server of the session (`pulsesink`).
    Pulse,
    /// The user's own gst-launch description of a sink (`speaker.pipeline`):
    /// odd boards, and tests that read what is played.
    Pipeline,
    /// No speaker: viewers cannot talk.
    None,
}

impl TryFrom<String> for SpeakerSink {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "alsa" => Ok(Self::Alsa),
            "pulse" => Ok(Self::Pulse),
            "pipeline" => Ok(Self::Pipeline),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "{s:?} is not a speaker; accepted: alsa, pulse, pipeline, none"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    #[serde(default = "default_sink")]
    pub sink: SpeakerSink,
    /// The ALSA device of `sink = "alsa"`: `default`, `hw:1,0`,
    /// `plughw:CARD=Device,DEV=0`.
    #[serde(default = "default_device")]
    pub device: String,
    /// For `sink = "pipeline"`: a gst-launch description that takes raw
    /// audio.
    #[serde(default)]
    pub pipeline: String,
    /// In percent, 0 (silent) to 400; 100 plays the talker as it came.
    /// `set speaker_volume`.
    #[serde(default = "default_volume")]
    pub volume: u32,
}

fn default_sink() -> SpeakerSink {
    SpeakerSink::None
}
fn default_device() -> String {
    "default".into()
}
fn default_volume() -> u32 {
    100
}

/// Accepted range of `speaker.volume`, in percent.
pub const SPEAKER_VOLUME_RANGE: (u32, u32) = (0, 400);

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            sink: default_sink(),
            device: default_device(),
            pipeline: String::new(),
            volume: default_volume(),
        }
    }
}

/// How the talker is kept from hearing itself through the camera's
/// microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum EchoMode {
    /// What the speaker plays is cancelled from what the microphone hears
    /// (`webrtcdsp`); the viewers still hear the room.
    Cancel,
    /// The microphone is muted while a viewer holds the floor.
    HalfDuplex,
    /// Nothing: a speaker far from the microphone, or headphones.
    Off,
}

impl EchoMode {
    /// The name in the configuration and in telemetry.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::HalfDuplex => "half-duplex",
            Self::Off => "off",
        }
    }
}

impl TryFrom<String> for EchoMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        [Self::Cancel, Self::HalfDuplex, Self::Off]
            .into_iter()
            .find(|mode| mode.name() == s)
            .ok_or_else(|| format!("{s:?} is not an echo mode; accepted: cancel, half-duplex, off"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TalkConfig {
    /// Viewers may talk through the camera (with a speaker); `set talk`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The longest a viewer holds the floor, in seconds.
    #[serde(default = "default_max_s")]
    pub max_s: u64,
    /// A talker silent this long gives the floor back, in seconds.
    #[serde(default = "default_silence_s")]
    pub silence_s: u64,
    /// Keeping the talker from hearing itself; `cancel` falls back to
    /// `half-duplex` where `webrtcdsp` is not installed.
    #[serde(default = "default_echo")]
    pub echo: EchoMode,
}

fn default_true() -> bool {
    true
}
fn default_max_s() -> u64 {
    120
}
fn default_silence_s() -> u64 {
    15
}
fn default_echo() -> EchoMode {
    EchoMode::Cancel
}

impl Default for TalkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_s: default_max_s(),
            silence_s: default_silence_s(),
            echo: default_echo(),
        }
    }
}

impl SpeakerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("speaker.volume", self.volume, SPEAKER_VOLUME_RANGE)?;
        super::audio::check_alsa_device("speaker.device", &self.device)?;
        if self.sink == SpeakerSink::Pipeline && self.pipeline.trim().is_empty() {
            return Err(invalid(
                "speaker.pipeline",
                "sink = \"pipeline\" needs a gst-launch description of the sink",
            ));
        }
        Ok(())
    }
}

impl TalkConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("talk.max_s", self.max_s, (5, 3600))?;
        check_range("talk.silence_s", self.silence_s, (1, 600))?;
        Ok(())
    }
}
