//! What connection states and time decide: ICE restarts, retries with
//! backoff, negotiation and presence deadlines.
//!
//! Owns every deadline and [`Mesh::next_deadline`]. Must not touch
//! presences or signals beyond what a deadline ends.

use super::*;

impl Mesh {
    /// A peer connection changed state.
    pub fn on_link_state(&mut self, link: LinkId, state: LinkState, now: Instant) -> Vec<Action> {
        let Some((room, peer)) = self.index.get(&link).cloned() else {
            return Vec::new();
        };
        let r = self.rooms.get_mut(&room).expect("index follows rooms");
        let cleared = r.peers.get(&peer).is_some_and(|p| p.cleared_at.is_some());
        if cleared
            && matches!(
                state,
                LinkState::Failed | LinkState::Closed | LinkState::Replaced
            )
        {
            // It left while the connection held; now the connection is gone too.
            return self.forget_peer(&room, &peer);
        }
        let l = r.links.get_mut(&peer).expect("index follows links");
        match state {
            LinkState::Connected => {
                if let Restart::Pending { connected_seen } = &mut l.restart {
                    *connected_seen = true;
                } else {
                    l.mark_connected();
                }
                Vec::new()
            }
            LinkState::Disconnected => {
                l.connected = false;
                l.deadline = Some(now + RECONNECT_TIMEOUT);
                if l.offerer && l.restart == Restart::NotTried {
                    l.restart = Restart::Pending {
                        connected_seen: false,
                    };
                    vec![Action::RestartIce { link }]
                } else {
                    Vec::new()
                }
            }
            LinkState::Replaced => {
                let offerer = l.offerer;
                let mut actions = self.drop_link(&room, &peer);
                let r = self.rooms.get_mut(&room).expect("index follows rooms");
                if offerer && r.peers.get(&peer).is_some_and(|p| !p.ended) {
                    actions.extend(self.connect(&room, &peer, true, 0, now));
                }
                actions
            }
            LinkState::Failed | LinkState::Closed => {
                let (offerer, attempt) = (l.offerer, l.attempt);
                let actions = self.drop_link(&room, &peer);
                let r = self.rooms.get_mut(&room).expect("index follows rooms");
                if let Some(p) = r.peers.get_mut(&peer)
                    && offerer
                    && !p.ended
                {
                    p.retry = Some((now + retry_backoff(attempt), attempt + 1));
                }
                actions
            }
        }
    }

    /// The earliest time [`Mesh::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rooms
            .values()
            .flat_map(|r| r.peers.values())
            .flat_map(|p| {
                [
                    p.retry.map(|(at, _)| at),
                    p.unconfirmed_since.map(|t| t + PRESENCE_CONFIRM_TIMEOUT),
                    p.cleared_at.map(|t| t + PRESENCE_CLEAR_GRACE),
                ]
            })
            .flatten()
            .chain(
                self.rooms
                    .values()
                    .flat_map(|r| r.links.values())
                    .filter_map(|l| l.deadline),
            )
            .min()
    }

    /// Time passed: fail connections that never came up, offer again to
    /// failed pairs that are due, and forget peers whose cleared presence is
    /// now believed or whose presence did not come back after our reconnect.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let stuck: Vec<LinkId> = self
            .rooms
            .values()
            .flat_map(|r| r.links.values())
            .filter(|l| l.deadline.is_some_and(|d| now >= d))
            .map(|l| l.id)
            .collect();
        for link in stuck {
            actions.extend(self.on_link_state(link, LinkState::Failed, now));
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let r = &self.rooms[&room];
            let gone: Vec<String> = r
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.unconfirmed_since
                        .is_some_and(|t| now >= t + PRESENCE_CONFIRM_TIMEOUT)
                        || p.cleared_at
                            .is_some_and(|t| now >= t + PRESENCE_CLEAR_GRACE)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for peer in gone {
                actions.extend(self.forget_peer(&room, &peer));
            }
            let due: Vec<(String, u32)> = self.rooms[&room]
                .peers
                .iter()
                .filter_map(|(id, p)| match p.retry {
                    Some((at, attempt)) if at <= now => Some((id.clone(), attempt)),
                    _ => None,
                })
                .collect();
            for (peer, attempt) in due {
                let r = self.rooms.get_mut(&room).expect("room listed above");
                let p = r.peers.get_mut(&peer).expect("peer listed above");
                p.retry = None;
                let role = p.presence.role;
                if !r.announced || r.links.contains_key(&peer) {
                    continue;
                }
                if role == Role::Viewer && self.viewer_count() >= self.max_viewers {
                    // Its place was taken meanwhile: told, as a new viewer
                    // would be, rather than left waiting for an offer.
                    actions.extend(self.end_session(&room, &peer, ByeReason::Full));
                    continue;
                }
                actions.extend(self.connect(&room, &peer, true, attempt, now));
            }
        }
        actions
    }
}
