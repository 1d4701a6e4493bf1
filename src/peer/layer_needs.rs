//! What each layer needs from a viewer's link: the rate the layer
//! controller weighs against the link's estimate. A layer's configured
//! bitrate is what the encoder aims at; what it spends depends on the
//! picture (a still scene a fraction, noise all of it), so the need is the
//! rate measured over the last seconds while the layer runs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::media::VideoLayers;

/// What RTP, SRTP, UDP and IP add to a layer's encoded rate, about.
pub const OVERHEAD: f64 = 1.06;

/// What each layer needs from a link now (bit/s), `None` for a layer the
/// pipeline does not encode: its measured rate while it runs, else its
/// configured bitrate; with the transport's overhead.
pub struct LayerNeeds {
    /// (when, bytes of each layer so far).
    last: Option<(Instant, Vec<u64>)>,
    rates: Vec<Option<f64>>,
}

impl LayerNeeds {
    pub fn new() -> Self {
        Self {
            last: None,
            rates: Vec::new(),
        }
    }

    pub fn update(&mut self, now: Instant, layers: &VideoLayers) -> Vec<Option<f64>> {
        let bytes: Vec<u64> = layers
            .iter()
            .map(|f| f.counters.bytes.load(Ordering::Relaxed))
            .collect();
        match &self.last {
            Some((at, before)) if now.duration_since(*at) >= Duration::from_secs(2) => {
                let span = now.duration_since(*at).as_secs_f64();
                self.rates = bytes
                    .iter()
                    .zip(before)
                    .map(|(b, a)| (b > a).then(|| (b - a) as f64 * 8.0 / span))
                    .collect();
                self.last = Some((now, bytes));
            }
            None => self.last = Some((now, bytes)),
            _ => {}
        }
        layers
            .iter()
            .enumerate()
            .map(|(i, feed)| {
                feed.state.is_available().then(|| {
                    let configured =
                        f64::from(feed.state.bitrate_kbps.load(Ordering::Relaxed)) * 1000.0;
                    self.rates.get(i).copied().flatten().unwrap_or(configured) * OVERHEAD
                })
            })
            .collect()
    }
}
