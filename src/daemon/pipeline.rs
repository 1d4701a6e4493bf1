//! The capture pipeline's supervisor: it starts the pipeline, follows its
//! state, rebuilds it with backoff when it fails or stalls, and changes its
//! bitrate while it runs.
//!
//! It owns the running [`Capture`] and everything about its health. It must
//! not publish or decide anything else: each step says whether the device
//! status changed ([`StatusEffect`]) and the daemon passes that on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::LOG_TARGET;
use crate::config::VideoConfig;
use crate::media::{
    Capture, KeyframeTarget, MediaEvent, MissingElements, VideoLayers, VideoParams,
};
use crate::room::retry_backoff;

/// A pipeline that played this long has recovered: its backoff starts over.
const STABLE_RUN: Duration = Duration::from_secs(30);

/// A stalled pipeline (playing, yet no frame for this long) is rebuilt.
const STALL: Duration = Duration::from_secs(10);

/// Where the pipeline stands, as telemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PipelineState {
    /// Built, not playing yet.
    Starting,
    Playing,
    /// Failed and stopped; it is built again at `restart_at`.
    Failed {
        restart_at: Instant,
    },
}

impl PipelineState {
    /// The name in telemetry's `pipeline.state`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Playing => "playing",
            Self::Failed { .. } => "error",
        }
    }

    /// Playing, or failed and reported: start-up is over either way.
    pub(super) fn counts_as_started(self) -> bool {
        matches!(self, Self::Playing | Self::Failed { .. })
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

pub(super) struct Pipeline {
    capture: Option<Capture>,
    state: PipelineState,
    /// The last failure, reported until the pipeline plays again.
    error: Option<String>,
    restarts: u64,
    /// Failures since the pipeline last played for `STABLE_RUN`: the backoff.
    failures_in_row: u32,
    playing_since: Option<Instant>,
    progress: Progress,
    layers: VideoLayers,
    /// One per layer.
    targets: Vec<KeyframeTarget>,
    events: mpsc::UnboundedSender<MediaEvent>,
}

impl Pipeline {
    /// Starts the first pipeline. A camera that is unplugged at boot is a
    /// state to report and retry, not a reason to exit: its error comes back
    /// beside the pipeline, for [`Pipeline::failed`] once the daemon runs.
    /// A GStreamer element missing from the installation is a reason to exit
    /// (status 2, naming its package): that is the `Err`.
    pub(super) fn start(
        video: &VideoConfig,
        layers: VideoLayers,
        targets: Vec<KeyframeTarget>,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> anyhow::Result<(Self, Option<String>)> {
        let mut pipeline = Self {
            capture: None,
            state: PipelineState::Starting,
            error: None,
            restarts: 0,
            failures_in_row: 0,
            playing_since: None,
            progress: Progress {
                frames: 0,
                since: Instant::now(),
            },
            layers,
            targets,
            events,
        };
        let error = match pipeline.launch(video) {
            Ok(capture) => {
                tracing::info!(target: LOG_TARGET, encoder = ?capture.encoder, "capture started");
                pipeline.capture = Some(capture);
                None
            }
            Err(e) if e.is::<MissingElements>() => return Err(e),
            Err(e) => Some(format!("{e:#}")),
        };
        Ok((pipeline, error))
    }

    fn launch(&self, video: &VideoConfig) -> anyhow::Result<Capture> {
        Capture::start(
            video,
            &VideoParams::from_config(video),
            &self.layers,
            &self.targets,
            self.events.clone(),
        )
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

    pub(super) fn playing(&mut self, now: Instant) -> StatusEffect {
        tracing::info!(target: LOG_TARGET, "pipeline playing");
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
            tracing::debug!(target: LOG_TARGET, %error, "after the pipeline failed");
            return StatusEffect::Unchanged;
        }
        tracing::error!(target: LOG_TARGET, %error, restarts = self.restarts, "pipeline failed");
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

    /// Stops the pipeline if it runs and builds it again from `video`.
    pub(super) fn rebuild(&mut self, video: &VideoConfig, now: Instant) -> StatusEffect {
        self.stop();
        self.restart(video, now)
    }

    /// The timers: a stalled pipeline fails, a failed one is rebuilt when
    /// its backoff is over.
    pub(super) fn supervise(&mut self, video: &VideoConfig, now: Instant) -> StatusEffect {
        let frames = self.layers.top().counters.frames.load(Ordering::Relaxed);
        let playing = self.state == PipelineState::Playing;
        if self.progress.stalled(frames, playing, now) {
            return self.failed(format!("no frame for {STALL:?}"), now);
        }
        match self.state {
            PipelineState::Failed { restart_at } if now >= restart_at => self.restart(video, now),
            _ => StatusEffect::Unchanged,
        }
    }

    fn restart(&mut self, video: &VideoConfig, now: Instant) -> StatusEffect {
        self.restarts += 1;
        // A new pipeline: its failures are its own (see `failed`).
        self.state = PipelineState::Starting;
        match self.launch(video) {
            Ok(capture) => {
                self.capture = Some(capture);
                for feed in self.layers.iter() {
                    feed.keyframes.request();
                }
                StatusEffect::Unchanged
            }
            Err(e) => self.failed(format!("{e:#}"), now),
        }
    }

    /// Changes the encoders' bitrates (top layer first); a pipeline that is
    /// down takes them when it is rebuilt.
    pub(super) fn set_bitrates(&self, video: &VideoConfig) -> anyhow::Result<()> {
        let params = VideoParams::from_config(video);
        for (feed, layer) in self.layers.iter().zip(params.layers()) {
            feed.state.set(&layer, feed.state.is_available());
        }
        match &self.capture {
            Some(capture) => {
                let kbps: Vec<u32> = params.layers().iter().map(|l| l.bitrate_kbps).collect();
                capture.set_bitrates(&kbps)
            }
            None => Ok(()),
        }
    }

    /// Stops the capture, if one runs.
    pub(super) fn stop(&mut self) {
        if let Some(capture) = self.capture.take() {
            capture.stop(&self.targets);
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
        assert!(!PipelineState::Starting.counts_as_started());
        assert!(PipelineState::Playing.counts_as_started());
        assert!(failed.counts_as_started());
    }
}
