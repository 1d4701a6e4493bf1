//! The microphone's pipeline as a gst-launch description, from `[audio]`.
//!
//! Pure functions, covered by tests here for every source. Whatever the
//! source, its sound is converted to 48 kHz, has the speaker's sound taken
//! out of it when the camera cancels echo ([`crate::media::echo`]), goes
//! through a `volume` (`mic`, the mute switch) and one `opusenc` (20 ms
//! packets) into the appsink `audio`: encoded once for every viewer.

use crate::config::{AudioConfig, AudioSource};
use crate::media::echo;

/// Opus's RTP clock, whatever the sample rate (RFC 7587).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Milliseconds of sound per Opus packet.
pub const FRAME_MS: u32 = 20;

/// The source part of the description; `None` for no sound.
pub fn source_description(audio: &AudioConfig, source: AudioSource) -> Option<String> {
    Some(match source {
        AudioSource::Alsa => format!("alsasrc device={}", audio.device),
        AudioSource::Pulse => "pulsesrc".to_owned(),
        AudioSource::Test => format!(
            "audiotestsrc is-live=true wave=sine freq={} volume=0.3 samplesperbuffer=480",
            audio.test_tone_hz
        ),
        AudioSource::Pipeline => audio.pipeline.trim().to_owned(),
        AudioSource::None => return None,
    })
}

/// The whole pipeline, with the echo canceller when `cancel_echo`; `None`
/// for no sound.
pub fn pipeline_description(
    audio: &AudioConfig,
    source: AudioSource,
    cancel_echo: bool,
) -> Option<String> {
    let source = source_description(audio, source)?;
    let channels = audio.channels;
    let raw = if cancel_echo {
        format!(
            "{},channels={channels} ! {} ! ",
            echo::CANCEL_CAPS,
            echo::canceller_description()
        )
    } else {
        format!("audio/x-raw,rate={OPUS_CLOCK_RATE},channels={channels} ! ")
    };
    // Opus's FEC only goes into packets when the encoder expects loss.
    let loss = if audio.fec { 10 } else { 0 };
    Some(format!(
        "{source} ! audioconvert ! audioresample ! {raw}\
         volume name=mic mute={muted} ! \
         opusenc name=opus bitrate={bitrate} frame-size={FRAME_MS} inband-fec={fec} \
         packet-loss-percentage={loss} dtx={dtx} ! \
         appsink name=audio sync=false max-buffers=50 drop=true",
        muted = audio.muted,
        bitrate = audio.bitrate_kbps * 1000,
        fec = audio.fec,
        dtx = audio.dtx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alsa_device_is_captured_and_encoded_once_as_opus() {
        let audio = AudioConfig {
            device: "plughw:CARD=Device,DEV=0".into(),
            ..AudioConfig::default()
        };
        let desc = pipeline_description(&audio, AudioSource::Alsa, false).unwrap();
        assert!(desc.starts_with("alsasrc device=plughw:CARD=Device,DEV=0 ! "));
        assert!(desc.contains("rate=48000,channels=1"));
        assert!(desc.contains("bitrate=32000 frame-size=20 inband-fec=true"));
        assert!(desc.contains("packet-loss-percentage=10 dtx=false"));
        assert_eq!(desc.matches("opusenc").count(), 1);
        assert!(desc.ends_with("appsink name=audio sync=false max-buffers=50 drop=true"));
    }

    #[test]
    fn the_test_tone_has_its_pitch_and_a_muted_microphone_starts_muted() {
        let audio = AudioConfig {
            test_tone_hz: 660,
            muted: true,
            fec: false,
            dtx: true,
            ..AudioConfig::default()
        };
        let desc = pipeline_description(&audio, AudioSource::Test, false).unwrap();
        assert!(desc.starts_with("audiotestsrc is-live=true wave=sine freq=660 "));
        assert!(desc.contains("volume name=mic mute=true"));
        assert!(desc.contains("inband-fec=false packet-loss-percentage=0 dtx=true"));
    }

    #[test]
    fn own_pipelines_pulse_and_no_sound() {
        let audio = AudioConfig {
            pipeline: " alsasrc device=hw:2 ! queue ".into(),
            channels: 2,
            ..AudioConfig::default()
        };
        let own = pipeline_description(&audio, AudioSource::Pipeline, false).unwrap();
        assert!(own.starts_with("alsasrc device=hw:2 ! queue ! audioconvert"));
        assert!(own.contains("channels=2"));
        let pulse = pipeline_description(&audio, AudioSource::Pulse, false).unwrap();
        assert!(pulse.starts_with("pulsesrc ! "));
        assert_eq!(pipeline_description(&audio, AudioSource::None, false), None);
    }

    #[test]
    fn echo_is_cancelled_on_the_raw_sound_before_the_mute_switch() {
        let audio = AudioConfig {
            channels: 2,
            ..AudioConfig::default()
        };
        let desc = pipeline_description(&audio, AudioSource::Test, true).unwrap();
        let raw = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2 ! webrtcdsp ";
        let canceller = desc.find(raw).expect(&desc);
        assert!(canceller < desc.find("volume name=mic").unwrap(), "{desc}");
        assert_eq!(desc.matches("webrtcdsp").count(), 1);
    }
}
