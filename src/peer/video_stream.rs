//! What one viewer is sent of the picture, decided frame by frame: the
//! rules of a viewer's video sender, without its channels, timers or
//! track (those are the caller's: [`super::sender`]).
//!
//! Frames of the layers the viewer watches come in; what to send, which
//! layers to watch and which to ask for a key frame go out:
//!
//! - until the connection is ready, the frames from the latest key frame
//!   on are kept (at most [`MAX_PRELOAD`]; older ones are not worth a
//!   burst), and sent the moment it is: the viewer's first frame costs the
//!   connection set-up and nothing more;
//! - a viewer that fell behind the fan-out loses frames alone, then waits
//!   for the next key frame so that its picture recovers cleanly;
//! - every [`TICK`] the viewer's feedback goes to its [`LinkEstimator`] and
//!   [`LayerController`]. A switch watches the target layer and asks it for
//!   a key frame, and happens at that key frame, on the same stream (the
//!   decoder sees a new resolution at an IDR); a step down holds the
//!   current layer back meanwhile, so that the key frame finds the link's
//!   queue drained. A probe adds filler to the frames ([`Padding`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::padding::Padding;
use crate::adapt::{Decision, Estimate, Heard, LayerController, LinkEstimator};
use crate::media::EncodedFrame;

/// Frames kept while the connection is being set up (half a second at
/// 30 fps); a longer preload is dropped rather than sent as a burst.
pub const MAX_PRELOAD: usize = 15;
/// How often the layer choice is made again.
pub const TICK: Duration = Duration::from_millis(100);
/// A layer switch whose key frame has not come by then asks again.
pub const SWITCH_RETRY: Duration = Duration::from_secs(1);

/// What the sender is to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send the frame, with the filler payloads before its last packet.
    Send {
        frame: Arc<EncodedFrame>,
        filler: Vec<Bytes>,
    },
    /// Receive this layer's frames (and keep it encoded).
    Watch(usize),
    /// No longer receive this layer's frames.
    Unwatch(usize),
    /// Ask this layer's encoder for a key frame.
    RequestKeyframe(usize),
}

/// The same action: a frame is the same when it is the same shared frame.
impl PartialEq for Action {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Send {
                    frame: a,
                    filler: x,
                },
                Self::Send {
                    frame: b,
                    filler: y,
                },
            ) => Arc::ptr_eq(a, b) && x == y,
            (Self::Watch(a), Self::Watch(b))
            | (Self::Unwatch(a), Self::Unwatch(b))
            | (Self::RequestKeyframe(a), Self::RequestKeyframe(b)) => a == b,
            _ => false,
        }
    }
}

/// A switch under way: the target layer, watched until its key frame.
#[derive(Debug, Clone, Copy)]
struct Switch {
    target: usize,
    asked: Instant,
}

/// One viewer's video, as rules.
#[derive(Debug)]
pub struct VideoStream {
    current: usize,
    /// Until the connection is ready: the frames since the latest key frame.
    preload: Option<Vec<Arc<EncodedFrame>>>,
    waiting_for_keyframe: bool,
    switch: Option<Switch>,
    estimator: LinkEstimator,
    controller: LayerController,
    padding: Padding,
    actions: VecDeque<Action>,
}

impl VideoStream {
    /// Starts on `layer` at `now`, the link believed to carry `top_bps`.
    pub fn new(now: Instant, layer: usize, top_bps: f64, pin: Option<usize>) -> Self {
        let mut controller = LayerController::new(now, layer);
        controller.pin(pin);
        Self {
            current: layer,
            preload: Some(Vec::new()),
            waiting_for_keyframe: false,
            switch: None,
            estimator: LinkEstimator::new(top_bps),
            controller,
            padding: Padding::default(),
            actions: VecDeque::from([Action::Watch(layer), Action::RequestKeyframe(layer)]),
        }
    }

    /// The layer being sent.
    pub fn layer(&self) -> usize {
        self.current
    }

    /// The layer a switch is waiting on, if one is under way.
    pub fn target(&self) -> Option<usize> {
        self.switch.map(|s| s.target)
    }

    pub fn controller(&self) -> &LayerController {
        &self.controller
    }

    /// Holds the viewer on a layer, or (`None`) lets it adapt.
    pub fn pin(&mut self, layer: Option<usize>) {
        self.controller.pin(layer);
    }

    /// The connection can take media: what was kept goes out.
    pub fn ready(&mut self) {
        let Some(kept) = self.preload.take() else {
            return;
        };
        if kept.is_empty() {
            self.waiting_for_keyframe = true;
            self.actions
                .push_back(Action::RequestKeyframe(self.current));
        }
        for frame in kept {
            self.actions.push_back(Action::Send {
                frame,
                filler: Vec::new(),
            });
        }
    }

    /// A frame of `layer`.
    pub fn on_frame(&mut self, now: Instant, layer: usize, frame: &Arc<EncodedFrame>) {
        if let Some(kept) = &mut self.preload {
            if layer != self.current {
                return;
            }
            if frame.keyframe {
                *kept = vec![frame.clone()];
            } else if !kept.is_empty() {
                kept.push(frame.clone());
                if kept.len() > MAX_PRELOAD {
                    kept.clear();
                }
            }
            return;
        }
        if layer == self.current {
            if self.switch.is_some_and(|s| s.target > self.current) {
                // Stepping down: this layer overruns the link, so it waits,
                // and the bottleneck's queue drains before the target's key
                // frame comes. It resumes at a key frame.
                self.waiting_for_keyframe = true;
                return;
            }
            if self.waiting_for_keyframe {
                if !frame.keyframe {
                    return;
                }
                self.waiting_for_keyframe = false;
            }
            let filler = self.padding.filler(now);
            self.actions.push_back(Action::Send {
                frame: frame.clone(),
                filler,
            });
        } else if self.target() == Some(layer) && frame.keyframe {
            self.actions.push_back(Action::Unwatch(self.current));
            self.current = layer;
            self.switch = None;
            self.waiting_for_keyframe = false;
            self.actions.push_back(Action::Send {
                frame: frame.clone(),
                filler: Vec::new(),
            });
        }
    }

    /// Frames of `layer` were lost to this viewer (it fell behind).
    pub fn on_lagged(&mut self, layer: usize) {
        if let Some(kept) = &mut self.preload {
            kept.clear();
            return;
        }
        if layer == self.current && !self.waiting_for_keyframe {
            self.waiting_for_keyframe = true;
            self.actions.push_back(Action::RequestKeyframe(layer));
        }
    }

    /// The layer choice, made again from what the viewer's feedback says
    /// and what each layer needs (bit/s, `None` when it cannot be sent).
    pub fn tick(
        &mut self,
        now: Instant,
        heard: Heard,
        needs: &[Option<f64>],
    ) -> (Estimate, Decision) {
        let estimate = self.estimator.update(now, heard);
        let decision = self.controller.update(now, &estimate, needs);
        self.padding.set_rate(decision.padding_bps);
        if decision.layer == self.current {
            if let Some(old) = self.switch.take() {
                self.actions.push_back(Action::Unwatch(old.target));
                if self.waiting_for_keyframe {
                    self.actions
                        .push_back(Action::RequestKeyframe(self.current));
                }
            }
        } else {
            match &mut self.switch {
                Some(s) if s.target == decision.layer => {
                    if now.duration_since(s.asked) >= SWITCH_RETRY {
                        self.actions.push_back(Action::RequestKeyframe(s.target));
                        s.asked = now;
                    }
                }
                _ => {
                    if let Some(old) = self.switch.take() {
                        self.actions.push_back(Action::Unwatch(old.target));
                    }
                    self.switch = Some(Switch {
                        target: decision.layer,
                        asked: now,
                    });
                    self.actions.push_back(Action::Watch(decision.layer));
                    self.actions
                        .push_back(Action::RequestKeyframe(decision.layer));
                }
            }
        }
        (estimate, decision)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(keyframe: bool, n: u32) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            payloads: vec![Bytes::from_static(b"x")],
            rtp_timestamp: n,
            keyframe,
            size: 1,
            access_unit: Bytes::from_static(b"x"),
        })
    }

    fn actions(stream: &mut VideoStream) -> Vec<Action> {
        std::iter::from_fn(|| stream.poll_action()).collect()
    }

    /// The RTP timestamps of the frames sent.
    fn sent(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { frame, .. } => Some(frame.rtp_timestamp),
                _ => None,
            })
            .collect()
    }

    fn ready_stream(now: Instant) -> VideoStream {
        let mut stream = VideoStream::new(now, 0, 2e6, None);
        stream.on_frame(now, 0, &frame(true, 0));
        stream.ready();
        actions(&mut stream);
        stream
    }

    #[test]
    fn a_new_viewer_watches_its_layer_and_asks_for_a_key_frame() {
        let mut stream = VideoStream::new(Instant::now(), 1, 2e6, None);
        assert_eq!(
            actions(&mut stream),
            [Action::Watch(1), Action::RequestKeyframe(1)]
        );
    }

    #[test]
    fn preload_keeps_the_frames_since_the_latest_key_frame() {
        let now = Instant::now();
        let mut stream = VideoStream::new(now, 0, 2e6, None);
        for (i, key) in [false, true, false, true, false, false]
            .into_iter()
            .enumerate()
        {
            stream.on_frame(now, 0, &frame(key, i as u32));
        }
        stream.on_frame(now, 1, &frame(true, 99));
        actions(&mut stream);
        stream.ready();
        assert_eq!(sent(&actions(&mut stream)), [3, 4, 5]);
    }

    #[test]
    fn a_long_preload_is_dropped_not_burst() {
        let now = Instant::now();
        let mut stream = VideoStream::new(now, 0, 2e6, None);
        stream.on_frame(now, 0, &frame(true, 0));
        for i in 1..=MAX_PRELOAD as u32 {
            stream.on_frame(now, 0, &frame(false, i));
        }
        actions(&mut stream);
        stream.ready();
        assert_eq!(actions(&mut stream), [Action::RequestKeyframe(0)]);
        stream.on_frame(now, 0, &frame(false, 20));
        stream.on_frame(now, 0, &frame(true, 21));
        assert_eq!(sent(&actions(&mut stream)), [21], "starts at a key frame");
    }

    #[test]
    fn a_viewer_that_fell_behind_waits_for_a_key_frame() {
        let now = Instant::now();
        let mut stream = ready_stream(now);
        stream.on_lagged(0);
        assert_eq!(actions(&mut stream), [Action::RequestKeyframe(0)]);
        stream.on_lagged(0);
        assert!(actions(&mut stream).is_empty(), "asked once");
        stream.on_frame(now, 0, &frame(false, 1));
        stream.on_frame(now, 0, &frame(true, 2));
        stream.on_frame(now, 0, &frame(false, 3));
        assert_eq!(sent(&actions(&mut stream)), [2, 3]);
    }

    #[test]
    fn a_switch_happens_at_the_target_layers_key_frame() {
        let now = Instant::now();
        let mut stream = ready_stream(now);
        stream.pin(Some(1));
        let needs = [Some(2e6), Some(4e5)];
        stream.tick(now, Heard::default(), &needs);
        assert_eq!(
            actions(&mut stream),
            [Action::Watch(1), Action::RequestKeyframe(1)]
        );
        assert_eq!(stream.target(), Some(1));
        // Stepping down: the top layer is held back meanwhile.
        stream.on_frame(now, 0, &frame(false, 1));
        stream.on_frame(now, 1, &frame(false, 2));
        assert!(actions(&mut stream).is_empty());
        stream.on_frame(now, 1, &frame(true, 3));
        stream.on_frame(now, 0, &frame(false, 4));
        stream.on_frame(now, 1, &frame(false, 5));
        let done = actions(&mut stream);
        assert_eq!(done[0], Action::Unwatch(0));
        assert_eq!(sent(&done), [3, 5]);
        assert_eq!((stream.layer(), stream.target()), (1, None));
    }

    #[test]
    fn a_switch_whose_key_frame_is_late_asks_again_and_can_be_called_off() {
        let now = Instant::now();
        let mut stream = ready_stream(now);
        let needs = [Some(2e6), Some(4e5)];
        stream.pin(Some(1));
        stream.tick(now, Heard::default(), &needs);
        actions(&mut stream);
        stream.tick(now + TICK, Heard::default(), &needs);
        assert!(actions(&mut stream).is_empty(), "asked a moment ago");
        stream.tick(now + SWITCH_RETRY, Heard::default(), &needs);
        assert_eq!(actions(&mut stream), [Action::RequestKeyframe(1)]);
        // Held back on the top layer meanwhile, so it asks for a key frame
        // when the switch is called off.
        stream.on_frame(now, 0, &frame(false, 1));
        stream.pin(Some(0));
        stream.tick(now + SWITCH_RETRY + TICK, Heard::default(), &needs);
        assert_eq!(
            actions(&mut stream),
            [Action::Unwatch(1), Action::RequestKeyframe(0)]
        );
        assert_eq!(stream.target(), None);
    }
}
