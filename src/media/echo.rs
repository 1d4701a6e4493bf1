//! Echo: what the speaker plays must not come back to the talker through
//! the camera's microphone.
//!
//! With `cancel`, a `webrtcechoprobe` sits before the speaker's sink and
//! hands what is played to a `webrtcdsp` after the microphone, which takes
//! it out of what the microphone hears. The two are in different pipelines
//! (a speaker that fails must not stop the microphone), so:
//!
//! - the probe is one element for the life of the process, moved into each
//!   speaker pipeline that is built: `webrtcdsp` finds its probe once, by
//!   name, when its pipeline starts, and must find it even while the
//!   speaker is down;
//! - both pipelines run on one time line ([`share_time`]): the system
//!   clock, and one base time for the process. The canceller pairs what
//!   the microphone heard with what was played by their running times;
//!   with each pipeline's own base time those would be seconds apart.
//!   Left to find the delay itself (`delay-agnostic`), it does not find it
//!   in a steady tone, and takes 3 to 15 dB off where 40 are possible.
//!
//! With `half-duplex`, the daemon mutes the microphone while a viewer holds
//! the floor ([`crate::daemon`]).

use std::sync::OnceLock;

use anyhow::Context;
use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{Config, EchoMode, SpeakerSink};

/// The name the canceller finds the probe by.
const PROBE: &str = "meshcam-echo";

/// The elements of `cancel`, both in gstreamer1.0-plugins-bad.
const CANCEL_ELEMENTS: [&str; 2] = ["webrtcdsp", "webrtcechoprobe"];

/// The sound both ends of the canceller work on: `webrtcdsp` takes 16-bit
/// interleaved samples, and the probe's rate must be the canceller's.
pub const CANCEL_CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000";

/// What keeps the talker from hearing itself on this camera: the mode
/// configured, `half-duplex` for `cancel` where its elements are missing
/// (`has_element` says), `off` where nobody can talk (no speaker).
pub fn mode(config: &Config, has_element: impl Fn(&str) -> bool) -> EchoMode {
    match config.talk.echo {
        _ if config.speaker.sink == SpeakerSink::None => EchoMode::Off,
        EchoMode::Cancel if !CANCEL_ELEMENTS.iter().all(|e| has_element(e)) => EchoMode::HalfDuplex,
        mode => mode,
    }
}

/// Why `cancel` became `half-duplex`, for the log; `None` when it did not.
pub fn fallback_reason(config: &Config, mode: EchoMode) -> Option<String> {
    (config.talk.echo == EchoMode::Cancel && mode == EchoMode::HalfDuplex).then(|| {
        format!(
            "talk.echo = \"cancel\" needs {} (Debian package gstreamer1.0-plugins-bad); \
             the microphone is muted while a viewer talks instead",
            CANCEL_ELEMENTS.join(" and ")
        )
    })
}

/// The canceller, for the microphone's description after [`CANCEL_CAPS`]:
/// echo only, the rest of what `webrtcdsp` can do (noise suppression, gain
/// control, a high-pass filter) is off, so the room sounds as it did.
pub fn canceller_description() -> String {
    format!(
        "webrtcdsp probe={PROBE} echo-cancel=true \
         noise-suppression=false gain-control=false high-pass-filter=false"
    )
}

/// Puts `pipeline` on the echo path's time line: the system clock, and
/// the base time of the first pipeline put on it. Before it plays.
pub fn share_time(pipeline: &gst::Pipeline) {
    static BASE: OnceLock<gst::ClockTime> = OnceLock::new();
    let clock = gst::SystemClock::obtain();
    let base = *BASE.get_or_init(|| clock.time());
    pipeline.use_clock(Some(&clock));
    // No start time: the base time is ours, not set again at PLAYING.
    pipeline.set_start_time(gst::ClockTime::NONE);
    pipeline.set_base_time(base);
}

/// The process's probe, made at its first use.
pub fn probe() -> anyhow::Result<gst::Element> {
    static PROBE_ELEMENT: OnceLock<gst::Element> = OnceLock::new();
    if let Some(probe) = PROBE_ELEMENT.get() {
        return Ok(probe.clone());
    }
    let made = gst::ElementFactory::make("webrtcechoprobe")
        .name(PROBE)
        .build()
        .context("making the echo probe (webrtcechoprobe, gstreamer1.0-plugins-bad)")?;
    Ok(PROBE_ELEMENT.get_or_init(|| made).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpeakerConfig;

    fn config(echo: EchoMode, sink: SpeakerSink) -> Config {
        let mut config = Config::from_toml("").unwrap();
        config.talk.echo = echo;
        config.speaker = SpeakerConfig {
            sink,
            pipeline: "fakesink".into(),
            ..SpeakerConfig::default()
        };
        config
    }

    #[test]
    fn cancel_needs_both_elements_and_falls_back_to_half_duplex() {
        let cancel = config(EchoMode::Cancel, SpeakerSink::Pipeline);
        assert_eq!(mode(&cancel, |_| true), EchoMode::Cancel);
        assert_eq!(fallback_reason(&cancel, EchoMode::Cancel), None);
        let missing = mode(&cancel, |e| e != "webrtcechoprobe");
        assert_eq!(missing, EchoMode::HalfDuplex);
        let reason = fallback_reason(&cancel, missing).unwrap();
        assert!(reason.contains("gstreamer1.0-plugins-bad"), "{reason}");
    }

    #[test]
    fn without_a_speaker_there_is_no_echo_and_other_modes_stay() {
        assert_eq!(
            mode(&config(EchoMode::Cancel, SpeakerSink::None), |_| true),
            EchoMode::Off
        );
        let half = config(EchoMode::HalfDuplex, SpeakerSink::Alsa);
        assert_eq!(mode(&half, |_| false), EchoMode::HalfDuplex);
        assert_eq!(fallback_reason(&half, EchoMode::HalfDuplex), None);
        assert_eq!(
            mode(&config(EchoMode::Off, SpeakerSink::Alsa), |_| true),
            EchoMode::Off
        );
    }

    #[test]
    fn the_canceller_takes_its_probe_by_name_and_only_cancels_echo() {
        let desc = canceller_description();
        assert!(desc.starts_with(&format!("webrtcdsp probe={PROBE} echo-cancel=true ")));
        for off in ["noise-suppression", "gain-control", "high-pass-filter"] {
            assert!(desc.contains(&format!("{off}=false")), "{off}");
        }
    }
}
