//! Measuring and testing tools: not part of the installed product.
//!
//! Compiled only with the `tools` feature, which `cargo build --release`
//! (the binary of the Debian package) leaves out. They exist to check the
//! product from outside, on real processes: [`bench`] (`meshcam bench`, the
//! cost per viewer) and [`outage`] (`meshcam bench --outage`, a broker
//! outage under a streaming camera) and [`shaped`] (`meshcam bench
//! --shaped`, a viewer's adaptation on a shaped link) and [`endurance`]
//! (`meshcam bench --soak-minutes`, receivers held for minutes, judged)
//! give the figures of `docs/BENCHMARKS.md`; [`receivers`] runs the
//! receivers they measure with, ours or others' (webrtcbin, Chromium),
//! and [`stage`] the broker and camera they stand on; [`soak`]
//! (`meshcam soak`) churns viewers and checks that the camera gives back
//! what they took; [`testbed`] starts Mosquitto, the camera daemon and
//! `meshcam view` processes for them and for the integration tests under
//! `tests/`. They use the product as a user does:
//! its binary, its configuration and its MQTT topics.
//!
//! Owns: the measuring and test tools. Must not touch: the product's
//! internals (they drive its binary from outside); nothing in the product may
//! depend on them.

mod cli;

pub mod bench;
pub mod endurance;
pub mod outage;
pub mod receivers;
pub mod shaped;
pub mod soak;
pub mod stage;
pub mod testbed;

pub use cli::Command;
