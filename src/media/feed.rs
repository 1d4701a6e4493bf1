//! The fan-out of encoded frames: one feed per layer.
//!
//! Each layer's frames are broadcast as `Arc<EncodedFrame>` on a
//! [`tokio::sync::broadcast`] channel. Each viewer's sender reads the feed
//! of its layer at its own pace: a viewer that falls behind loses frames for
//! itself alone (and then waits for a key frame), while the encoder and the
//! other viewers never wait.
//!
//! A layer below the top one is encoded only while someone watches it
//! ([`VideoFeed::watch`]): the first watcher opens its branch's valve, the
//! last one to go closes it again. The top layer always runs (status,
//! snapshots and the stall watchdog rely on its frames).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::broadcast;

use super::{EncodedFrame, KeyframeRequests};
use crate::config::LayerConfig;

/// Frames kept for slow viewers before they lag (about 1 s at 30 fps).
pub const FANOUT_DEPTH: usize = 32;

/// Counters of one layer's encoded stream, read by telemetry.
#[derive(Debug, Default)]
pub struct MediaCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes: AtomicU64,
}

/// What one layer is now: its size and bitrate, and whether the running
/// pipeline encodes it at all.
#[derive(Debug, Default)]
pub struct LayerState {
    pub width: AtomicU32,
    pub height: AtomicU32,
    pub bitrate_kbps: AtomicU32,
    pub available: AtomicBool,
}

impl LayerState {
    pub fn set(&self, layer: &LayerConfig, available: bool) {
        self.width.store(layer.width, Ordering::Relaxed);
        self.height.store(layer.height, Ordering::Relaxed);
        self.bitrate_kbps
            .store(layer.bitrate_kbps, Ordering::Relaxed);
        self.available.store(available, Ordering::Relaxed);
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}

/// Who watches a layer, and the valve in front of its encoder.
#[derive(Debug, Default)]
struct Gate {
    inner: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    watchers: usize,
    valve: Option<gst::Element>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.inner.lock().expect("gate lock is never poisoned")
    }

    fn apply(state: &GateState) {
        if let Some(valve) = &state.valve {
            valve.set_property("drop", state.watchers == 0);
        }
    }
}

/// Keeps a layer encoded while held.
#[derive(Debug)]
pub struct Watching(Arc<Gate>);

impl Drop for Watching {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.watchers -= 1;
        Gate::apply(&state);
    }
}

/// One layer's end of the fan-out: subscribe to get its encoded frames.
#[derive(Clone)]
pub struct VideoFeed {
    frames: broadcast::Sender<Arc<EncodedFrame>>,
    pub keyframes: KeyframeRequests,
    pub counters: Arc<MediaCounters>,
    pub state: Arc<LayerState>,
    gate: Arc<Gate>,
}

impl VideoFeed {
    fn new() -> Self {
        Self {
            frames: broadcast::channel(FANOUT_DEPTH).0,
            keyframes: KeyframeRequests::new(),
            counters: Arc::default(),
            state: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// The frames of this layer, and the guard that keeps it encoded.
    pub fn watch(&self) -> (broadcast::Receiver<Arc<EncodedFrame>>, Watching) {
        let mut state = self.gate.lock();
        state.watchers += 1;
        Gate::apply(&state);
        (self.frames.subscribe(), Watching(self.gate.clone()))
    }

    /// Whoever watches now.
    pub fn watchers(&self) -> usize {
        self.gate.lock().watchers
    }

    /// The valve of the running pipeline's branch, or none.
    pub(super) fn set_valve(&self, valve: Option<gst::Element>) {
        let mut state = self.gate.lock();
        state.valve = valve;
        Gate::apply(&state);
    }

    /// Publishes a frame to whoever listens; no listener is fine.
    pub fn publish(&self, frame: EncodedFrame) {
        let c = &self.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(frame.size as u64, Ordering::Relaxed);
        if frame.keyframe {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.frames.send(Arc::new(frame));
    }
}

/// Every layer's feed, the top one first; cheap to clone.
#[derive(Clone)]
pub struct VideoLayers(Arc<[VideoFeed]>);

impl VideoLayers {
    /// A feed per layer, sharing one RTP clock; not encoded until a
    /// pipeline runs.
    pub fn new(layers: &[LayerConfig]) -> Self {
        super::clock::epoch();
        let feeds: Arc<[VideoFeed]> = layers.iter().map(|_| VideoFeed::new()).collect();
        for (feed, layer) in feeds.iter().zip(layers) {
            feed.state.set(layer, false);
        }
        assert!(!feeds.is_empty(), "there is always a top layer");
        Self(feeds)
    }

    /// Whether both are the same camera's feeds.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The top layer: the configured size and bitrate.
    pub fn top(&self) -> &VideoFeed {
        &self.0[0]
    }

    pub fn get(&self, layer: usize) -> Option<&VideoFeed> {
        self.0.get(layer)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = &VideoFeed> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_encoded_while_watched_and_stops_with_its_last_watcher() {
        gst::init().unwrap();
        let layer = LayerConfig {
            width: 640,
            height: 360,
            bitrate_kbps: 400,
        };
        let layers = VideoLayers::new(&[layer, layer]);
        let valve = gst::ElementFactory::make("valve").build().unwrap();
        valve.set_property("drop", true);
        let low = layers.get(1).unwrap();
        low.set_valve(Some(valve.clone()));
        assert!(valve.property::<bool>("drop"), "nobody watches");
        let (_frames, first) = low.watch();
        assert!(!valve.property::<bool>("drop"));
        let (_more, second) = low.watch();
        drop(first);
        assert!(!valve.property::<bool>("drop"), "one watcher is left");
        drop(second);
        assert!(valve.property::<bool>("drop"));
        assert_eq!(low.watchers(), 0);
        // A rebuilt pipeline's valve takes the current state.
        let (_frames, _watching) = low.watch();
        let rebuilt = gst::ElementFactory::make("valve").build().unwrap();
        rebuilt.set_property("drop", true);
        low.set_valve(Some(rebuilt.clone()));
        assert!(!rebuilt.property::<bool>("drop"));
    }
}
