//! The offers the cameras in the room sent this viewer: the first one of
//! each connection, and every one after it (a connection the camera cut
//! and made again, or restarted). A benchmark reads their count to tell a
//! camera that keeps its viewers from one that keeps reconnecting them.
//!
//! Only cameras count: `meshcam view --count N` runs N viewers that also
//! connect to one another, as viewers in a room do, and their offers say
//! nothing about the camera. Pure: messages in, a count out.

use std::collections::HashSet;

use crate::protocol::{Presence, Role, Signal, SignalBody, Topic};

#[derive(Debug, Default)]
pub struct Offers {
    cameras: HashSet<String>,
    count: u64,
}

impl Offers {
    /// Reads one message for viewer `me`, whose session is `session`.
    pub fn observe(&mut self, topic: &Topic, payload: &[u8], me: &str, session: Option<&str>) {
        match topic {
            Topic::Presence { peer, .. } => match Presence::decode(payload, peer) {
                Ok(Some(p)) if p.role == Role::Camera => {
                    self.cameras.insert(peer.clone());
                }
                Ok(_) => {
                    self.cameras.remove(peer);
                }
                Err(_) => {}
            },
            Topic::Signal { to, from, .. } if to == me && self.cameras.contains(from) => {
                let ours = Signal::decode(payload).is_ok_and(|s| {
                    matches!(s.body, SignalBody::Offer { .. })
                        && Some(s.to_session.as_str()) == session
                });
                self.count += u64::from(ours);
            }
            _ => {}
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_presence;

    const ME: &str = "v-1";
    const MINE: &str = "viewersession1";

    fn presence(peer: &str, role: Role) -> (Topic, Vec<u8>) {
        let topic = Topic::Presence {
            room: "r".into(),
            peer: peer.into(),
        };
        let p = Presence::new(peer, "peersession1", role, peer);
        (topic, encode_presence(&p))
    }

    fn offer(from: &str, to_session: &str) -> (Topic, Vec<u8>) {
        let topic = Topic::Signal {
            room: "r".into(),
            to: ME.into(),
            from: from.into(),
        };
        let body = SignalBody::offer("v=0");
        (
            topic,
            Signal::new("peersession1", to_session, body).encode(),
        )
    }

    #[test]
    fn offers_from_cameras_to_our_session_count_and_others_do_not() {
        let mut offers = Offers::default();
        for (topic, payload) in [
            presence("cam", Role::Camera),
            presence("v-2", Role::Viewer),
            offer("cam", MINE),
            offer("v-2", MINE),
            offer("cam", "oldsession99"),
            offer("cam", MINE),
        ] {
            offers.observe(&topic, &payload, ME, Some(MINE));
        }
        assert_eq!(offers.count(), 2);
    }

    #[test]
    fn a_camera_that_left_is_no_longer_counted() {
        let mut offers = Offers::default();
        let (topic, payload) = presence("cam", Role::Camera);
        offers.observe(&topic, &payload, ME, Some(MINE));
        offers.observe(&topic, &[], ME, Some(MINE));
        let (topic, payload) = offer("cam", MINE);
        offers.observe(&topic, &payload, ME, Some(MINE));
        assert_eq!(offers.count(), 0);
    }
}
