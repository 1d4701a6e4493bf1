//! `--decode` for the camera's sound: every Opus packet through
//! `appsrc ! opusdec ! appsink`, and what the decoded sound is: its pitch
//! (from the zero crossings of each second of samples) and its level (RMS,
//! dB below full scale). A viewer that reports the camera's test tone at its
//! frequency and level has heard it, not just counted packets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::ViewerStats;
use super::fed::FedPipeline;
use crate::media::audio::description::OPUS_CLOCK_RATE;
use bytes::Bytes;

/// One track's decoding pipeline; stopped when dropped.
pub struct SoundDecoder(FedPipeline);

/// Pitch and level of a stretch of mono samples.
#[derive(Debug, Default)]
pub struct Analysis {
    samples: u64,
    crossings: u64,
    sum_squares: f64,
    last_positive: bool,
}

impl Analysis {
    pub fn push(&mut self, samples: &[i16]) {
        for &s in samples {
            let positive = s > 0;
            if positive && !self.last_positive {
                self.crossings += 1;
            }
            self.last_positive = positive;
            let x = f64::from(s) / 32768.0;
            self.sum_squares += x * x;
        }
        self.samples += samples.len() as u64;
    }

    /// Whether a second of sound has been taken in.
    pub fn full(&self) -> bool {
        self.samples >= u64::from(OPUS_CLOCK_RATE)
    }

    /// `(Hz, dBFS)` of what was taken in; silence is -100 dBFS.
    pub fn result(&self) -> (f64, f64) {
        let seconds = self.samples as f64 / f64::from(OPUS_CLOCK_RATE);
        let hz = self.crossings as f64 / seconds.max(1e-9);
        let rms = (self.sum_squares / (self.samples.max(1) as f64)).sqrt();
        let dbfs = if rms > 1e-5 {
            20.0 * rms.log10()
        } else {
            -100.0
        };
        (hz, dbfs)
    }
}

impl SoundDecoder {
    /// Starts a pipeline that measures each second of decoded sound into
    /// `stats` (`audio_hz`, `audio_dbfs_x10`).
    pub fn start(stats: Arc<ViewerStats>) -> anyhow::Result<Self> {
        let mut analysis = Analysis::default();
        let pipeline = FedPipeline::start(
            &format!(
                "appsrc name=src is-live=true do-timestamp=true format=time \
                 caps=audio/x-opus,channel-mapping-family=0,channels=1,rate={OPUS_CLOCK_RATE} ! \
                 opusdec ! audioconvert ! audioresample ! \
                 audio/x-raw,format=S16LE,channels=1,rate={OPUS_CLOCK_RATE} ! \
                 appsink name=out sync=false max-buffers=50 drop=true"
            ),
            "the Opus decoder",
            move |sample| {
                let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) else {
                    return;
                };
                let samples: Vec<i16> = map
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                analysis.push(&samples);
                if analysis.full() {
                    let (hz, dbfs) = analysis.result();
                    stats.audio_hz.store(hz.round() as u32, Ordering::Relaxed);
                    stats
                        .audio_dbfs_x10
                        .store((dbfs * 10.0).round() as i32, Ordering::Relaxed);
                    analysis = Analysis::default();
                }
            },
        )?;
        Ok(Self(pipeline))
    }

    /// Queues one Opus packet.
    pub fn push(&self, payload: Bytes) {
        self.0.push(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sine_is_measured_at_its_pitch_and_level() {
        let rate = f64::from(OPUS_CLOCK_RATE);
        let amplitude = 0.3;
        let sine: Vec<i16> = (0..OPUS_CLOCK_RATE)
            .map(|n| {
                let t = f64::from(n) / rate;
                (amplitude * 32767.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect();
        let mut analysis = Analysis::default();
        analysis.push(&sine);
        assert!(analysis.full());
        let (hz, dbfs) = analysis.result();
        assert!((hz - 440.0).abs() <= 1.0, "{hz} Hz");
        // A sine's RMS is its amplitude over √2: 0.3 → −13.5 dBFS.
        assert!((dbfs - (-13.5)).abs() < 0.2, "{dbfs} dBFS");
        let mut silence = Analysis::default();
        silence.push(&[0; 480]);
        assert_eq!(silence.result(), (0.0, -100.0));
    }
}
