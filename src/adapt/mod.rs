//! Adaptation: which shared layer each viewer gets, from what its own link
//! carries. Sans-I/O: time and what the viewer reported go in, a layer and a
//! probing rate come out; no sockets, no clock reads, no async.
//!
//! The camera encodes a few layers once (`[[video.layers]]`) and never
//! re-encodes for a viewer. What adapts per viewer is the choice of layer:
//!
//! - [`estimate`] turns the viewer's feedback into one estimate. With
//!   transport-wide congestion control (TWCC) it is the WebRTC stack's own
//!   Google congestion control run on that viewer's feedback; a viewer that
//!   sends only REMB, or nothing but receiver reports, is estimated from
//!   those (REMB's rate, or loss). Either way the estimate is capped to what
//!   the viewer acknowledged (1.5 × acked + 10 kbit/s), so it cannot run
//!   away on an idle link. A TWCC viewer's acknowledged rate is read on
//!   its own clock ([`delivered`]).
//! - [`controller`] picks the layer with hysteresis: down within about a
//!   second of sustained congestion, up only after the higher layer's rate
//!   has been carried. A viewer on a lower layer sends less than the higher
//!   layer needs, so it probes first: the sender pads its stream (filler
//!   NAL units, which decoders skip) up to the higher rate, in steps, and
//!   backs off when the link objects.
//!
//! The sender carries the decisions out: it switches at a key frame of the
//! target layer, on the same SSRC, with continuous sequence numbers.

pub mod controller;
pub mod delivered;
pub mod estimate;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use controller::{Decision, LayerController};
pub use delivered::DeliveredRate;
pub use estimate::{Estimate, Heard, LinkEstimator, Source};
