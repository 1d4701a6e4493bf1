//! The `[audio]` section: the microphone, its Opus encoding, and talk-back
//! to the camera's speaker.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range, invalid};

/// Accepted ranges, shared with the `set` command.
pub const AUDIO_BITRATE_RANGE: (u32, u32) = (6, 510);
pub const TONE_RANGE: (u32, u32) = (20, 20_000);

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

/// Where viewers' voices play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SpeakerKind {
    /// No speaker: viewers cannot talk.
    None,
    /// An ALSA playback device (`audio.speaker_device`).
    Alsa,
    Pulse,
    /// The user's own sink description (`audio.speaker_pipeline`).
    Pipeline,
}

impl TryFrom<String> for SpeakerKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "none" => Ok(Self::None),
            "alsa" => Ok(Self::Alsa),
            "pulse" => Ok(Self::Pulse),
            "pipeline" => Ok(Self::Pipeline),
            _ => Err(format!(
                "{s:?} is not a speaker; accepted: none, alsa, pulse, pipeline"
            )),
        }
    }
}

/// Who may talk at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum TalkbackMode {
    /// One talker at a time; another is told the floor is busy.
    Single,
    /// Every talker, summed.
    Mix,
}

impl TryFrom<String> for TalkbackMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "single" => Ok(Self::Single),
            "mix" => Ok(Self::Mix),
            _ => Err(format!(
                "{s:?} is not a talk-back mode; accepted: single, mix"
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
    /// The microphone starts muted (`mute`/`unmute` change it, durably).
    #[serde(default)]
    pub muted: bool,
    #[serde(default = "default_speaker")]
    pub speaker: SpeakerKind,
    /// The ALSA device of `speaker = "alsa"`.
    #[serde(default = "default_device")]
    pub speaker_device: String,
    /// For `speaker = "pipeline"`: a gst-launch description of the sink.
    #[serde(default)]
    pub speaker_pipeline: String,
    #[serde(default = "default_talkback")]
    pub talkback: TalkbackMode,
    /// Full duplex with echo cancellation (`webrtcdsp`); without it the
    /// microphone is muted while someone talks, so the speaker's sound
    /// does not go back to the talker.
    #[serde(default)]
    pub echo_cancel: bool,
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
fn default_speaker() -> SpeakerKind {
    SpeakerKind::None
}
fn default_talkback() -> TalkbackMode {
    TalkbackMode::Single
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
            speaker: default_speaker(),
            speaker_device: default_device(),
            speaker_pipeline: String::new(),
            talkback: default_talkback(),
            echo_cancel: false,
        }
    }
}

/// An ALSA device name goes into a gst-launch description: no quotes,
/// spaces or '!'.
fn check_alsa_device(key: &str, device: &str) -> Result<(), ConfigError> {
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

    /// Whether viewers may talk: there is somewhere to play them.
    pub fn talkback(&self) -> bool {
        self.speaker != SpeakerKind::None
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("audio.bitrate_kbps", self.bitrate_kbps, AUDIO_BITRATE_RANGE)?;
        check_range("audio.channels", self.channels, (1, 2))?;
        check_range("audio.test_tone_hz", self.test_tone_hz, TONE_RANGE)?;
        check_alsa_device("audio.device", &self.device)?;
        check_alsa_device("audio.speaker_device", &self.speaker_device)?;
        if self.source == Some(AudioSource::Pipeline) && self.pipeline.trim().is_empty() {
            return Err(invalid(
                "audio.pipeline",
                "source = \"pipeline\" needs a gst-launch description of the source",
            ));
        }
        if self.speaker == SpeakerKind::Pipeline && self.speaker_pipeline.trim().is_empty() {
            return Err(invalid(
                "audio.speaker_pipeline",
                "speaker = \"pipeline\" needs a gst-launch description of the sink",
            ));
        }
        Ok(())
    }
}
