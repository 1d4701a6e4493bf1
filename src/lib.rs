//! meshcam: a WebRTC camera agent.
//!
//! It captures video through GStreamer, encodes it once, joins the rooms it is
//! told about over MQTT, and keeps one WebRTC connection to every viewer of
//! those rooms. `PROTOCOL.md` is the wire contract; [`room`] is its
//! negotiation logic, free of I/O; [`daemon`] wires the parts together.
//! [`view`] and [`ctl`] are the client commands of the same binary.
//!
//! The benchmark, the soak and the testbed of the integration tests live in
//! `tools`, built only with the `tools` feature.

pub mod adapt;
pub mod broker;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod engine;
pub mod log_limit;
pub mod media;
pub mod mqtt;
pub mod participant;
pub mod peer;
pub mod procstat;
pub mod protocol;
pub mod room;
pub mod service;
pub mod store;
pub mod talk;
pub mod telemetry;
#[cfg(feature = "tools")]
pub mod tools;
pub mod turn_rest;
pub mod view;
pub mod web;
pub mod whip;
