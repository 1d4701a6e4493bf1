//! Talking back: a viewer speaks and the camera plays it on its speaker,
//! one talker at a time across all of the camera's rooms.
//!
//! The sound comes on the connection the viewer already has: the camera
//! offers its own sound `sendrecv`; a viewer that says nothing answers
//! `recvonly`, and one granted the floor adds its microphone and answers
//! the camera's next offer `sendrecv` (no new connection, no ICE restart;
//! the engine's `talk` tests hold this).

pub mod floor;
