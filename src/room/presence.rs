//! Who is in the room: presences (with the 2 s and 10 s rules of
//! PROTOCOL.md), our broker link coming and going, device statuses.
//!
//! Owns the peer list's changes. Must not touch the signals' rules
//! ([`super::signals`]) or the time-driven ones ([`super::timers`]).

use super::*;

impl Mesh {
    /// Our broker connection dropped: presences cleared just before are not
    /// believed; after the reconnect they must come back within
    /// [`PRESENCE_CONFIRM_TIMEOUT`] like every other.
    pub fn broker_disconnected(&mut self) {
        for peer in self.rooms.values_mut().flat_map(|r| r.peers.values_mut()) {
            peer.cleared_at = None;
        }
    }

    /// Our broker connection is (re)established: subscribe to every room again.
    /// Peers must confirm their presence within [`PRESENCE_CONFIRM_TIMEOUT`].
    pub fn broker_connected(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for (room, r) in &mut self.rooms {
            r.announced = false;
            for peer in r.peers.values_mut() {
                peer.unconfirmed_since = Some(now);
            }
            actions.push(Action::Subscribe { room: room.clone() });
        }
        actions
    }

    /// The broker acknowledged the room's subscription: announce ourselves,
    /// then offer to the peers already known.
    pub fn subscribed(&mut self, room: &str, now: Instant) -> Vec<Action> {
        let Some(presence) = self.presence_of(room) else {
            return Vec::new();
        };
        let r = self
            .rooms
            .get_mut(room)
            .expect("presence_of found the room");
        if r.announced {
            return Vec::new();
        }
        r.announced = true;
        let mut actions = vec![Action::PublishPresence {
            room: room.to_owned(),
            presence,
        }];
        let peers: Vec<String> = r.peers.keys().cloned().collect();
        for peer in peers {
            actions.extend(self.offer_if_needed(room, &peer, now));
        }
        actions
    }

    /// A presence arrived (`None`: the peer left or its will fired).
    pub fn on_presence(
        &mut self,
        room: &str,
        peer: &str,
        presence: Option<Presence>,
        now: Instant,
    ) -> Vec<Action> {
        if peer == self.me.id {
            return Vec::new();
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let Some(presence) = presence else {
            let connected = r.links.get(peer).is_some_and(|l| l.connected);
            match r.peers.get_mut(peer) {
                Some(known) if connected => {
                    known.cleared_at.get_or_insert(now);
                    return Vec::new();
                }
                _ => return self.forget_peer(room, peer),
            }
        };
        let mut actions = Vec::new();
        match r.peers.get_mut(peer) {
            Some(known) if known.presence.session == presence.session => {
                known.unconfirmed_since = None;
                known.cleared_at = None;
                known.presence = presence;
                return actions;
            }
            _ => {
                r.peers.insert(
                    peer.to_owned(),
                    Peer {
                        presence,
                        ended: false,
                        unconfirmed_since: None,
                        cleared_at: None,
                        retry: None,
                        full: None,
                        budget: SignalBudget::new(now),
                    },
                );
            }
        }
        // A new session: whatever we held with the earlier one is gone.
        actions.extend(self.drop_link(room, peer));
        actions.extend(self.offer_if_needed(room, peer, now));
        actions
    }

    /// A device status said a camera is offline: a leave, except that a
    /// connection whose ICE is still connected is kept until ICE fails.
    pub fn on_device_offline(&mut self, device: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let r = &self.rooms[&room];
            let is_camera = r
                .peers
                .get(device)
                .is_some_and(|p| p.presence.role == Role::Camera);
            let connected = r.links.get(device).is_some_and(|l| l.connected);
            if is_camera && !connected {
                self.rooms
                    .get_mut(&room)
                    .expect("room listed above")
                    .peers
                    .remove(device);
                actions.extend(self.drop_link(&room, device));
            }
        }
        actions
    }
}
