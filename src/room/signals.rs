//! Signal messages in and out: offers, answers and candidates checked for
//! staleness, rate and order; our own signals addressed to the current
//! sessions; refusing a peer that cannot take part.
//!
//! Owns the negotiation of one pair once it exists. Must not touch who is
//! present ([`super::presence`]) or timers ([`super::timers`]).

use super::*;

impl Mesh {
    /// The peer of `link` cannot take part (its answer has no codec we
    /// send): close the link and end its session with `bye` and `reason`,
    /// rather than offer again and again.
    pub fn refuse(&mut self, link: LinkId, reason: &str) -> Vec<Action> {
        let Some((room, peer)) = self.index.get(&link).cloned() else {
            return Vec::new();
        };
        let mut actions: Vec<Action> = self
            .end_session(&room, &peer, ByeReason::Said(reason.to_owned()))
            .into_iter()
            .collect();
        actions.extend(self.drop_link(&room, &peer));
        actions
    }

    /// A signal to `peer` of `room` on the pair's current sessions (a reply
    /// to its `talk`), if a connection with it is set up.
    pub fn signal_to(&self, room: &str, peer: &str, body: SignalBody) -> Option<Action> {
        let link = self.rooms.get(room)?.links.get(peer)?;
        self.outgoing(link.id, body)
    }

    /// Wraps a body produced by a link's peer connection (its offer, answer or
    /// candidates) into a signal, if the link is still current.
    pub fn outgoing(&self, link: LinkId, body: SignalBody) -> Option<Action> {
        let (room, peer) = self.index.get(&link)?;
        let r = self.rooms.get(room)?;
        let l = r.links.get(peer).filter(|l| l.id == link)?;
        Some(Action::Send {
            room: room.clone(),
            to: peer.clone(),
            signal: Signal::new(&r.session, &l.remote_session, body),
        })
    }

    /// A signal arrived on `P/rooms/{room}/signal/{to}/{from}`.
    pub fn on_signal(
        &mut self,
        room: &str,
        to: &str,
        from: &str,
        signal: Signal,
        now: Instant,
    ) -> Result<Vec<Action>, DropReason> {
        if to != self.me.id {
            return Err(DropReason::NotForMe);
        }
        let r = self.rooms.get_mut(room).ok_or(DropReason::UnknownRoom)?;
        let peer = r.peers.get_mut(from).ok_or(DropReason::UnknownSender)?;
        if !peer.budget.take(now) {
            return Err(DropReason::RateLimited);
        }
        if signal.to_session != r.session {
            return Err(DropReason::StaleToSession);
        }
        if signal.session != peer.presence.session {
            return Err(DropReason::StaleSession);
        }
        let i_offer = offerer_is_me(&self.me, &peer.presence);
        match signal.body {
            SignalBody::Bye { reason, watch } => {
                peer.ended = true;
                peer.retry = None;
                if reason == ByeReason::Full {
                    peer.full = Some(watch);
                }
                Ok(self.drop_link(room, from))
            }
            SignalBody::Offer { sdp, .. } => {
                if i_offer != Some(false) || peer.ended {
                    return Err(DropReason::UnexpectedOffer);
                }
                let mut actions = Vec::new();
                let existing = r.links.get(from).map(|l| (l.id, l.created));
                let link_id = match existing {
                    Some((id, true)) => id,
                    Some((id, false)) => {
                        let link = r.links.get_mut(from).expect("just found");
                        link.created = true;
                        link.deadline = Some(now + NEGOTIATION_TIMEOUT);
                        actions.push(Action::Connect {
                            link: id,
                            room: room.to_owned(),
                            peer: from.to_owned(),
                            offerer: false,
                        });
                        id
                    }
                    None => {
                        let acts = self.connect(room, from, false, 0, now);
                        let Some(Action::Connect { link, .. }) = acts.first() else {
                            unreachable!("connect returns one Connect action")
                        };
                        let id = *link;
                        actions.extend(acts);
                        id
                    }
                };
                actions.push(Action::ApplyOffer { link: link_id, sdp });
                actions.extend(self.flush_candidates(room, from));
                Ok(actions)
            }
            SignalBody::Answer { sdp } => {
                let link = r
                    .links
                    .get_mut(from)
                    .filter(|l| l.offerer && l.created)
                    .ok_or(DropReason::UnexpectedAnswer)?;
                // The peer is alive: a `Connected` seen while its answer
                // was awaited counts now.
                if let Restart::Pending { connected_seen } = link.restart {
                    link.restart = Restart::Answered;
                    if connected_seen {
                        link.mark_connected();
                    }
                }
                let mut actions = vec![Action::ApplyAnswer { link: link.id, sdp }];
                actions.extend(self.flush_candidates(room, from));
                Ok(actions)
            }
            SignalBody::Talk { action, .. } => {
                let link = r
                    .links
                    .get(from)
                    .filter(|l| l.created)
                    .ok_or(DropReason::NoConnection)?;
                match action {
                    TalkAction::Request | TalkAction::Release if self.me.role == Role::Camera => {
                        Ok(vec![Action::Talk {
                            link: link.id,
                            room: room.to_owned(),
                            peer: from.to_owned(),
                            action,
                        }])
                    }
                    _ => Err(DropReason::UnexpectedTalk),
                }
            }
            SignalBody::Candidate { candidate } => {
                if i_offer.is_none() || peer.ended {
                    return Err(DropReason::NoConnection);
                }
                if !r.links.contains_key(from) {
                    if i_offer == Some(true) {
                        return Err(DropReason::NoConnection);
                    }
                    // The answerer may see candidates before the offer: keep them.
                    self.new_link(room, from, false, 0);
                }
                let r = self.rooms.get_mut(room).expect("checked above");
                let link = r.links.get_mut(from).expect("ensured above");
                if link.remote_description {
                    Ok(vec![Action::AddCandidate {
                        link: link.id,
                        candidate,
                    }])
                } else if link.queue(candidate) {
                    Ok(Vec::new())
                } else {
                    Err(DropReason::CandidateQueueFull)
                }
            }
        }
    }

    /// The remote description is set: hand over the queued candidates.
    fn flush_candidates(&mut self, room: &str, peer: &str) -> Vec<Action> {
        let Some(link) = self.rooms.get_mut(room).and_then(|r| r.links.get_mut(peer)) else {
            return Vec::new();
        };
        link.remote_description = true;
        let id = link.id;
        link.queued
            .drain(..)
            .map(|candidate| Action::AddCandidate {
                link: id,
                candidate,
            })
            .collect()
    }
}
