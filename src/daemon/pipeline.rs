//! The capture pipelines' supervisor: it starts a pipeline, follows its
//! state, rebuilds it with backoff when it fails or stalls. The picture and
//! the sound each have one ([`VideoSource`], [`AudioSource`]), so a
//! microphone that fails is retried on its own while the video flows.
//!
//! It owns the running capture and everything about its health. It must
//! not publish or decide anything else: each step says whether the device
//! status changed ([`StatusEffect`]) and the daemon passes that on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::LOG_TARGET;
use crate::config::Config;
use crate::media::speaker::{SpeakerFeed, SpeakerPlayback};
use crate::media::{
    AudioCapture, AudioFeed, Capture, KeyframeTarget, MediaEvent, MissingElements, VideoLayers,
    VideoParams,
};
use crate::room::retry_backoff;

/// A pipeline that played this long has recovered: its backoff starts over.
const STABLE_RUN: Duration = Duration::from_secs(30);

/// A stalled pipeline (playing, yet no frame for this long) is rebuilt.
const STALL: Duration = Duration::from_secs(10);

/// Where a pipeline stands, as telemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PipelineState {
    /// Built, not playing yet.
    Starting,
    Playing,
    /// Failed and stopped; it is built again at `restart_at`.
    Failed {
        restart_at: Instant,
    },
    /// Nothing to capture (no sound configured).
    Off,
}

impl PipelineState {
    /// The name in telemetry's `pipeline.state` and `audio.state`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Playing => "playing",
            Self::Failed { .. } => "error",
            Self::Off => "off",
        }
    }

    /// Playing, failed and reported, or off: start-up is over either way.
    pub(super) fn counts_as_started(self) -> bool {
        !matches!(self, Self::Starting)
    }
}

/// Whether a step of the pipeline changed what the device status reports.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusEffect {
    Unchanged,
    Changed,
}

/// The frame count last seen to grow, and when: a playing pipeline whose
/// count stops growing is stuck.
#[derive(Debug, Clone, Copy)]
struct Progress {
    frames: u64,
    since: Instant,
}

impl Progress {
    /// Whether a pipeline that has sent `frames` so far has stalled.
    fn stalled(&mut self, frames: u64, playing: bool, now: Instant) -> bool {
        if frames != self.frames || !playing {
            *self = Self { frames, since: now };
            return false;
        }
        now >= self.since + STALL
    }
}

/// What one kind of capture needs from its supervisor.
pub(super) trait Source {
    type Running;
    /// In the log: "video", "audio".
    const NAME: &'static str;
    /// Builds and starts the pipeline; `None` when there is nothing to
    /// capture.
    fn launch(&self, config: &Config) -> anyhow::Result<Option<Self::Running>>;
    /// Frames (or packets) produced so far.
    fn frames(&self) -> u64;
    /// A playing pipeline whose frames stop is stuck: not for a speaker,
    /// silent whenever nobody talks.
    const STALLS: bool = true;
    fn stop(&self, running: Self::Running) {
        drop(running);
    }
    /// A rebuilt pipeline runs.
    fn restarted(&self) {}
}

/// The camera's picture, in every layer.
pub(super) struct VideoSource {
    pub layers: VideoLayers,
    /// One per layer.
    pub targets: Vec<KeyframeTarget>,
    pub events: mpsc::UnboundedSender<MediaEvent>,
}

impl Source for VideoSource {
    type Running = Capture;
    const NAME: &'static str = "video";

    fn launch(&self, config: &Config) -> anyhow::Result<Option<Capture>> {
        Capture::start(
            &config.video,
            &VideoParams::from_config(&config.video),
            &self.layers,
            &self.targets,
            self.events.clone(),
        )
        .map(Some)
    }

    fn frames(&self) -> u64 {
        self.layers.top().counters.frames.load(Ordering::Relaxed)
    }

    fn stop(&self, running: Capture) {
        running.stop(&self.targets);
    }

    fn restarted(&self) {
        for feed in self.layers.iter() {
            feed.keyframes.request();
        }
    }
}

/// The camera's microphone.
pub(super) struct AudioSource {
    pub feed: AudioFeed,
    pub events: mpsc::UnboundedSender<MediaEvent>,
    /// The speaker's sound is taken out of what the microphone hears.
    pub cancel_echo: bool,
    /// Muted while a viewer talks (half duplex), whatever `mute` says.
    pub ducked: bool,
}

impl Source for AudioSource {
    type Running = AudioCapture;
    const NAME: &'static str = "audio";

    fn launch(&self, config: &Config) -> anyhow::Result<Option<AudioCapture>> {
        let source = config.audio.source_for(config.video.source);
        let mut audio = config.audio.clone();
        audio.muted |= self.ducked;
        AudioCapture::start(
            &audio,
            source,
            self.cancel_echo,
            &self.feed,
            self.events.clone(),
        )
    }

    fn frames(&self) -> u64 {
        self.feed.counters.frames.load(Ordering::Relaxed)
    }
}

/// The camera's speaker, where a viewer that talks is played.
pub(super) struct SpeakerOutput {
    pub feed: SpeakerFeed,
    pub events: mpsc::UnboundedSender<MediaEvent>,
    /// What is played is handed to the microphone's echo canceller.
    pub cancel_echo: bool,
}

impl Source for SpeakerOutput {
    type Running = SpeakerPlayback;
    const NAME: &'static str = "speaker";
    const STALLS: bool = false;

    fn launch(&self, config: &Config) -> anyhow::Result<Option<SpeakerPlayback>> {
        SpeakerPlayback::start(
            &config.speaker,
            self.cancel_echo,
            &self.feed,
            self.events.clone(),
        )
    }

    fn frames(&self) -> u64 {
        self.feed.counters.frames.load(Ordering::Relaxed)
    }
}

impl Pipeline<SpeakerOutput> {
    /// Sets the running speaker's volume; a pipeline started later takes
    /// `speaker.volume` from the configuration.
    pub(super) fn set_volume(&self, percent: u32) {
        if let Some(playback) = &self.running {
            playback.set_volume(percent);
        }
    }
}

pub(super) struct Pipeline<S: Source> {
    pub source: S,
    running: Option<S::Running>,
    state: PipelineState,
    /// The last failure, reported until the pipeline plays again.
    error: Option<String>,
    restarts: u64,
    /// Failures since the pipeline last played for `STABLE_RUN`: the backoff.
    failures_in_row: u32,
    playing_since: Option<Instant>,
    progress: Progress,
}

impl<S: Source> Pipeline<S> {
    /// Starts the first pipeline. A camera or microphone that is unplugged
    /// at boot is a state to report and retry, not a reason to exit: its
    /// error comes back beside the pipeline, for [`Pipeline::failed`] once
    /// the daemon runs. A GStreamer element missing from the installation
    /// is a reason to exit (status 2, naming its package): that is the
    /// `Err`.
    pub(super) fn start(config: &Config, source: S) -> anyhow::Result<(Self, Option<String>)> {
        let mut pipeline = Self {
            source,
            running: None,
            state: PipelineState::Starting,
            error: None,
            restarts: 0,
            failures_in_row: 0,
            playing_since: None,
            progress: Progress {
                frames: 0,
                since: Instant::now(),
            },
        };
        let error = match pipeline.source.launch(config) {
            Ok(Some(running)) => {
                tracing::info!(target: LOG_TARGET, capture = S::NAME, "capture started");
                pipeline.running = Some(running);
                None
            }
            Ok(None) => {
                pipeline.state = PipelineState::Off;
                None
            }
            Err(e) if e.is::<MissingElements>() => return Err(e),
            Err(e) => Some(format!("{e:#}")),
        };
        Ok((pipeline, error))
    }

    pub(super) fn state(&self) -> PipelineState {
        self.state
    }

    pub(super) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub(super) fn restarts(&self) -> u64 {
        self.restarts
    }

    /// What the pipeline's bus said.
    pub(super) fn on_event(&mut self, event: MediaEvent, now: Instant) -> StatusEffect {
        match event {
            MediaEvent::Playing => self.playing(now),
            MediaEvent::Error(error) => self.failed(error, now),
            MediaEvent::EndOfStream => self.failed("end of stream".into(), now),
        }
    }

    fn playing(&mut self, now: Instant) -> StatusEffect {
        tracing::info!(target: LOG_TARGET, capture = S::NAME, "pipeline playing");
        self.state = PipelineState::Playing;
        self.playing_since = Some(now);
        match self.error.take() {
            Some(_) => StatusEffect::Changed,
            None => StatusEffect::Unchanged,
        }
    }

    /// Stops the pipeline and schedules its rebuild.
    pub(super) fn failed(&mut self, error: String, now: Instant) -> StatusEffect {
        if matches!(self.state, PipelineState::Failed { .. }) {
            // What a dying pipeline says after its first error (the source's
            // own error, an end of stream) is the same failure: the first
            // message names the cause, and the backoff counts it once.
            tracing::debug!(target: LOG_TARGET, capture = S::NAME, %error, "after the pipeline failed");
            return StatusEffect::Unchanged;
        }
        tracing::error!(target: LOG_TARGET, capture = S::NAME, %error, restarts = self.restarts, "pipeline failed");
        self.stop();
        if self
            .playing_since
            .take()
            .is_some_and(|since| now - since >= STABLE_RUN)
        {
            self.failures_in_row = 0;
        }
        // The room's retry backoff: 1 s, doubling, at most 30 s.
        let restart_at = now + retry_backoff(self.failures_in_row);
        self.failures_in_row += 1;
        self.state = PipelineState::Failed { restart_at };
        self.error = Some(error);
        StatusEffect::Changed
    }

    /// Stops the pipeline if it runs and builds it again from `config`.
    pub(super) fn rebuild(&mut self, config: &Config, now: Instant) -> StatusEffect {
        self.stop();
        self.restart(config, now)
    }

    /// The timers: a stalled pipeline fails, a failed one is rebuilt when
    /// its backoff is over.
    pub(super) fn supervise(&mut self, config: &Config, now: Instant) -> StatusEffect {
        let frames = self.source.frames();
        let playing = self.state == PipelineState::Playing;
        if S::STALLS && self.progress.stalled(frames, playing, now) {
            return self.failed(format!("no frame for {STALL:?}"), now);
        }
        match self.state {
            PipelineState::Failed { restart_at } if now >= restart_at => self.restart(config, now),
            _ => StatusEffect::Unchanged,
        }
    }

    fn restart(&mut self, config: &Config, now: Instant) -> StatusEffect {
        self.restarts += 1;
        // A new pipeline: its failures are its own (see `failed`).
        self.state = PipelineState::Starting;
        match self.source.launch(config) {
            Ok(Some(running)) => {
                self.running = Some(running);
                self.source.restarted();
                StatusEffect::Unchanged
            }
            Ok(None) => {
                self.state = PipelineState::Off;
                match self.error.take() {
                    Some(_) => StatusEffect::Changed,
                    None => StatusEffect::Unchanged,
                }
            }
            Err(e) => self.failed(format!("{e:#}"), now),
        }
    }

    /// Stops the capture, if one runs.
    pub(super) fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            self.source.stop(running);
        }
    }
}

impl Pipeline<AudioSource> {
    /// Mutes or unmutes the running microphone (`mute`); it stays muted
    /// while ducked. A pipeline started later takes `audio.muted` from the
    /// configuration.
    pub(super) fn set_muted(&self, muted: bool) {
        if let Some(capture) = &self.running {
            capture.set_muted(muted || self.source.ducked);
        }
    }

    /// Mutes the microphone while a viewer talks (half duplex), or gives it
    /// back to `muted`.
    pub(super) fn set_ducked(&mut self, ducked: bool, muted: bool) {
        self.source.ducked = ducked;
        self.set_muted(muted);
    }
}

impl Pipeline<VideoSource> {
    /// Changes the encoders' bitrates (top layer first); a pipeline that is
    /// down takes them when it is rebuilt.
    pub(super) fn set_bitrates(&self, config: &Config) -> anyhow::Result<()> {
        let params = VideoParams::from_config(&config.video);
        for (feed, layer) in self.source.layers.iter().zip(params.layers()) {
            feed.state.set(&layer, feed.state.is_available());
        }
        match &self.running {
            Some(capture) => {
                let kbps: Vec<u32> = params.layers().iter().map(|l| l.bitrate_kbps).collect();
                capture.set_bitrates(&kbps)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let waits: Vec<u64> = (0..8).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_playing_pipeline_stalls_after_ten_seconds_without_a_frame() {
        let t0 = Instant::now();
        let mut progress = Progress {
            frames: 0,
            since: t0,
        };
        assert!(!progress.stalled(5, true, t0), "frames grew");
        assert!(!progress.stalled(5, true, t0 + STALL - Duration::from_millis(1)));
        assert!(progress.stalled(5, true, t0 + STALL));
        // A frame starts the wait over.
        assert!(!progress.stalled(6, true, t0 + STALL));
        assert!(!progress.stalled(6, true, t0 + STALL + Duration::from_secs(9)));
    }

    #[test]
    fn a_pipeline_that_does_not_play_never_stalls() {
        let t0 = Instant::now();
        let mut progress = Progress {
            frames: 0,
            since: t0,
        };
        assert!(!progress.stalled(0, false, t0 + STALL * 3));
        // The wait counts from the last look at a pipeline that did not play.
        assert!(!progress.stalled(0, true, t0 + STALL * 3));
        assert!(progress.stalled(0, true, t0 + STALL * 4));
    }

    #[test]
    fn state_names_are_those_of_telemetry() {
        let failed = PipelineState::Failed {
            restart_at: Instant::now(),
        };
        assert_eq!(PipelineState::Starting.name(), "starting");
        assert_eq!(PipelineState::Playing.name(), "playing");
        assert_eq!(failed.name(), "error");
        assert_eq!(PipelineState::Off.name(), "off");
        assert!(PipelineState::Off.counts_as_started());
        assert!(!PipelineState::Starting.counts_as_started());
        assert!(PipelineState::Playing.counts_as_started());
        assert!(failed.counts_as_started());
    }
}
