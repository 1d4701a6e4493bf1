//! The speaker: the talker's sound, as the send loop receives it (Opus in
//! RTP), through a jitter buffer and one decoder to the configured sink.
//!
//! A pipeline of its own, like the microphone's: a speaker that is
//! unplugged or busy fails this one alone, and its supervisor retries it
//! while the picture and the microphone go on. The send loop hands
//! packets to [`SpeakerFeed`], which outlives the pipelines it feeds: a
//! rebuilt pipeline takes over where the last one stopped.
//!
//! It also says whether what it plays has a voice in it ([`SpeakerFeed::voiced`]):
//! a talker whose browser sends packets of silence (no DTX, Chromium's
//! default) is silent all the same, and the floor needs to know.
//!
//! Owns: the playback pipeline and its source. Must not touch peer
//! connections or decide who talks ([`crate::talk`] does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::audio::description::OPUS_CLOCK_RATE;
use super::{MediaCounters, MediaEvent, Running, echo, elements, launch, named};
use crate::config::{SpeakerConfig, SpeakerSink};
use crate::peer::factory::OPUS_PAYLOAD_TYPE;

/// Where the talker's packets go: the running speaker's source, if one
/// runs. Cloned into the send loop.
#[derive(Clone, Default)]
pub struct SpeakerFeed {
    source: Arc<Mutex<Option<gst_app::AppSrc>>>,
    /// Packets handed to a running speaker.
    pub counters: Arc<MediaCounters>,
    /// Decoded buffers louder than [`VOICE_DBFS`].
    voiced: Arc<AtomicU64>,
}

/// Sound below this (RMS, dBFS) is silence: the noise floor of a quiet
/// room's microphone is 20 dB or more below it, a voice 20 dB above.
const VOICE_DBFS: f64 = -50.0;

impl SpeakerFeed {
    /// Plays one RTP packet of Opus; dropped when no speaker runs.
    pub fn play(&self, packet: Bytes) {
        let source = self.source.lock().expect("speaker lock is never poisoned");
        let Some(source) = source.as_ref() else {
            return;
        };
        self.counters.frames.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        // A full queue (a stuck sink) drops the packet: the send loop
        // never waits for the speaker.
        let _ = source.push_buffer(gst::Buffer::from_slice(packet));
    }

    /// How many decoded buffers had a voice in them so far: growing while
    /// the talker makes a sound.
    pub fn voiced(&self) -> u64 {
        self.voiced.load(Ordering::Relaxed)
    }

    fn attach(&self, source: Option<gst_app::AppSrc>) {
        *self.source.lock().expect("speaker lock is never poisoned") = source;
    }
}

/// The sink part of the description; `None` for no speaker.
pub fn sink_description(speaker: &SpeakerConfig) -> Option<String> {
    Some(match speaker.sink {
        SpeakerSink::Alsa => format!("alsasink device={}", speaker.device),
        SpeakerSink::Pulse => "pulsesink".to_owned(),
        SpeakerSink::Pipeline => speaker.pipeline.trim().to_owned(),
        SpeakerSink::None => return None,
    })
}

/// What comes before the sink: the talker's packets carry the payload type
/// of the camera's offer (an answer takes the offerer's), the jitter buffer puts the talker's
/// packets back in order and waits 60 ms for late ones, the decoder
/// conceals what is lost, `volume` (`speaker`) is the speaker's volume.
fn playback_description(speaker: &SpeakerConfig) -> String {
    format!(
        "appsrc name=talk is-live=true format=time do-timestamp=true \
         max-bytes=65536 leaky-type=downstream \
         caps=\"application/x-rtp,media=audio,clock-rate={OPUS_CLOCK_RATE},encoding-name=OPUS,\
         payload={OPUS_PAYLOAD_TYPE}\" ! \
         rtpjitterbuffer latency=60 drop-on-latency=true ! rtpopusdepay ! opusdec name=decoder plc=true ! \
         audioconvert ! audioresample ! volume name=speaker volume={volume}",
        volume = volume(speaker.volume),
    )
}

/// The whole pipeline; `None` for no speaker. With `cancel_echo`, what is
/// played leaves `played` and comes back at `heard`: the echo probe goes
/// between them ([`SpeakerPlayback::start`]), right before the sink.
pub fn pipeline_description(speaker: &SpeakerConfig, cancel_echo: bool) -> Option<String> {
    let sink = sink_description(speaker)?;
    let playback = playback_description(speaker);
    Some(if cancel_echo {
        format!(
            "{playback} ! audioconvert ! capsfilter name=played caps={} \
             audioconvert name=heard ! {sink}",
            echo::CANCEL_CAPS
        )
    } else {
        format!("{playback} ! {sink}")
    })
}

/// GStreamer's `volume` for a volume in percent.
fn volume(percent: u32) -> f64 {
    f64::from(percent) / 100.0
}

/// A running speaker pipeline; stopped, and its feed detached, when
/// dropped.
pub struct SpeakerPlayback {
    running: Running,
    feed: SpeakerFeed,
    /// The echo probe, when the camera cancels echo: given back when the
    /// pipeline stops, for the next one.
    probe: Option<gst::Element>,
}

impl SpeakerPlayback {
    /// Builds and starts the pipeline for `speaker`, fed by `feed`;
    /// `Ok(None)` for no speaker. An element missing from the installation
    /// is a [`crate::media::MissingElements`] naming its package.
    pub fn start(
        speaker: &SpeakerConfig,
        cancel_echo: bool,
        feed: &SpeakerFeed,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<Option<Self>> {
        gst::init().context("GStreamer failed to initialise")?;
        let Some(desc) = pipeline_description(speaker, cancel_echo) else {
            return Ok(None);
        };
        // The user's own sink is left to GStreamer's parser.
        elements::require(&match speaker.sink {
            SpeakerSink::Pipeline => playback_description(speaker),
            _ => desc.clone(),
        })?;
        tracing::info!(pipeline = %desc, "starting the speaker");
        let pipeline = launch(&desc)?;
        let source: gst_app::AppSrc = named(&pipeline, "talk")?;
        let decoder: gst::Element = named(&pipeline, "decoder")?;
        let voiced = feed.voiced.clone();
        decoder
            .static_pad("src")
            .context("opusdec has no src pad")?
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer()
                    && let Ok(map) = buffer.map_readable()
                    && has_voice(&map)
                {
                    voiced.fetch_add(1, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
        let probe = cancel_echo.then(echo::probe).transpose()?;
        if let Some(probe) = &probe {
            insert_probe(&pipeline, probe)?;
            echo::share_time(&pipeline);
        }
        let running = Running::play(pipeline, &desc, events.clone())?;
        // Nothing plays until someone talks, and a sink reaches PLAYING
        // only with its first buffer: a pipeline that took the state (its
        // device opened) is a speaker ready to play.
        let _ = events.send(MediaEvent::Playing);
        feed.attach(Some(source));
        Ok(Some(Self {
            running,
            feed: feed.clone(),
            probe,
        }))
    }

    /// Sets the volume (percent) while it plays.
    pub fn set_volume(&self, percent: u32) {
        if let Some(element) = self.running.pipeline.by_name("speaker") {
            element.set_property("volume", volume(percent));
        }
    }
}

/// Whether decoded sound (`opusdec`'s 16-bit samples) is louder than
/// [`VOICE_DBFS`].
fn has_voice(bytes: &[u8]) -> bool {
    let samples = bytes.len() / 2;
    if samples == 0 {
        return false;
    }
    let sum: f64 = bytes
        .chunks_exact(2)
        .map(|b| (f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).powi(2))
        .sum();
    let mean = sum / samples as f64;
    mean > 10f64.powf(VOICE_DBFS / 10.0)
}

/// Puts the process's echo probe between `played` and `heard`, taking it
/// from a pipeline that still holds it.
fn insert_probe(pipeline: &gst::Pipeline, probe: &gst::Element) -> anyhow::Result<()> {
    if let Some(old) = probe.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) {
        let _ = probe.set_state(gst::State::Null);
        old.remove(probe).context("taking the echo probe back")?;
    }
    pipeline.add(probe).context("adding the echo probe")?;
    let played: gst::Element = named(pipeline, "played")?;
    let heard: gst::Element = named(pipeline, "heard")?;
    gst::Element::link_many([&played, probe, &heard]).context("linking the echo probe")?;
    Ok(())
}

impl Drop for SpeakerPlayback {
    fn drop(&mut self) {
        self.feed.attach(None);
        if let Some(probe) = &self.probe {
            let _ = self.running.pipeline.set_state(gst::State::Null);
            let _ = self.running.pipeline.remove(probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alsa_speaker_plays_the_talker_through_one_decoder_at_its_volume() {
        let speaker = SpeakerConfig {
            sink: SpeakerSink::Alsa,
            device: "plughw:CARD=Device,DEV=0".into(),
            volume: 50,
            ..SpeakerConfig::default()
        };
        let desc = pipeline_description(&speaker, false).unwrap();
        assert!(desc.starts_with("appsrc name=talk is-live=true "));
        assert!(desc.contains("encoding-name=OPUS"));
        assert_eq!(desc.matches("opusdec").count(), 1);
        assert!(desc.contains("volume name=speaker volume=0.5 ! "));
        assert!(desc.ends_with("alsasink device=plughw:CARD=Device,DEV=0"));
    }

    #[test]
    fn no_speaker_is_no_pipeline_and_a_pipeline_sink_is_the_users_own() {
        assert_eq!(pipeline_description(&SpeakerConfig::default(), false), None);
        let speaker = SpeakerConfig {
            sink: SpeakerSink::Pipeline,
            pipeline: " fakesink name=out ".into(),
            ..SpeakerConfig::default()
        };
        assert!(
            pipeline_description(&speaker, false)
                .unwrap()
                .ends_with("volume name=speaker volume=1 ! fakesink name=out")
        );
    }

    #[test]
    fn with_echo_cancelled_what_is_played_passes_the_probe_right_before_the_sink() {
        let speaker = SpeakerConfig {
            sink: SpeakerSink::Pipeline,
            pipeline: "fakesink name=out".into(),
            ..SpeakerConfig::default()
        };
        let desc = pipeline_description(&speaker, true).unwrap();
        assert!(desc.contains(
            "volume name=speaker volume=1 ! audioconvert ! capsfilter name=played \
             caps=audio/x-raw,format=S16LE,layout=interleaved,rate=48000 "
        ));
        assert!(desc.ends_with(" audioconvert name=heard ! fakesink name=out"));
    }

    #[test]
    fn the_echo_probe_moves_from_a_stopped_speaker_to_the_next_one() {
        gst::init().unwrap();
        let speaker = SpeakerConfig {
            sink: SpeakerSink::Pipeline,
            pipeline: "fakesink".into(),
            ..SpeakerConfig::default()
        };
        let feed = SpeakerFeed::default();
        for _ in 0..2 {
            let (events, _rx) = mpsc::unbounded_channel();
            let playback = SpeakerPlayback::start(&speaker, true, &feed, events)
                .unwrap()
                .unwrap();
            let probe = echo::probe().unwrap();
            assert_eq!(
                probe.parent().map(|p| p.name()),
                Some(playback.running.pipeline.name())
            );
            drop(playback);
            assert!(probe.parent().is_none());
        }
    }

    fn tone(amplitude: f64) -> Vec<u8> {
        (0..960)
            .flat_map(|i| {
                let x = amplitude
                    * (f64::from(i) * 2.0 * std::f64::consts::PI * 660.0 / 48_000.0).sin();
                ((x * 32767.0) as i16).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn a_voice_is_louder_than_fifty_db_below_full_scale() {
        // A sine's RMS is its amplitude less 3 dB.
        assert!(has_voice(&tone(0.1)), "-23 dBFS");
        assert!(has_voice(&tone(0.005)), "-49 dBFS");
        assert!(!has_voice(&tone(0.004)), "-51 dBFS");
        assert!(!has_voice(&[0; 1920]), "digital silence");
        assert!(!has_voice(&[]));
    }

    #[test]
    fn packets_without_a_running_speaker_are_dropped_uncounted() {
        let feed = SpeakerFeed::default();
        feed.play(Bytes::from_static(&[0x80, 111, 0, 1]));
        assert_eq!(feed.counters.frames.load(Ordering::Relaxed), 0);
    }
}
