//! The floor at work: viewers' `talk` steps come in from the rooms, the
//! floor ([`crate::talk::floor`]) decides, and the decisions go out as
//! replies to the viewers, as a command to the talker's connection (offer
//! again for its sound, play it or stop) and as the camera's presence,
//! which tells every viewer of every room who talks.
//!
//! Owns the floor and what it needs to judge a talker: whether its voice
//! still comes (the speaker's count of voiced sound: packets of silence,
//! which browsers send without DTX, are silence) and whether its
//! connection is still there. In half duplex, it mutes the microphone for
//! the length of each turn.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Daemon, LOG_TARGET};
use crate::config::{Config, EchoMode, SpeakerSink};
use crate::peer::{PeerCommand, SendPath};
use crate::protocol::{SignalBody, TalkAction, TalkState, Talker};
use crate::room::LinkId;
use crate::talk::floor::{self, Decision, Floor, Limits};

/// The floor, and what the daemon follows of its talker.
pub(super) struct TalkDesk {
    floor: Floor,
    /// There is a speaker: without one nobody can talk, and the presence
    /// says nothing of talking.
    speaker: bool,
    /// The talker's connection, and the speaker's voiced count when last
    /// looked at.
    talker_link: Option<(LinkId, u64)>,
    /// How the talker is kept from hearing itself ([`crate::media::echo`]).
    echo: EchoMode,
}

impl TalkDesk {
    pub(super) fn new(config: &Config, echo: EchoMode) -> Self {
        let speaker = config.speaker.sink != SpeakerSink::None;
        Self {
            floor: Floor::new(
                Limits {
                    max: Duration::from_secs(config.talk.max_s),
                    silence: Duration::from_secs(config.talk.silence_s),
                },
                config.talk.enabled && speaker,
            ),
            speaker,
            talker_link: None,
            echo,
        }
    }
}

impl Daemon {
    /// The `talk` steps viewers took, decided.
    pub(super) fn on_talk_steps(&mut self, now: Instant) {
        for step in self.participant.take_talk() {
            let talker = floor::Talker {
                room: step.room,
                peer: step.peer,
            };
            let decision = match step.action {
                TalkAction::Request if !self.on_the_send_loop(step.link) => {
                    // Only the send loop plays what a viewer says.
                    self.refuse(&talker, "unavailable", None);
                    continue;
                }
                TalkAction::Request => {
                    let decision = self.talk.floor.request(now, talker);
                    if matches!(decision, Decision::Granted(_)) {
                        self.talk.talker_link = Some((step.link, self.voiced()));
                    }
                    Some(decision)
                }
                TalkAction::Release => self.talk.floor.release(&talker),
                _ => None,
            };
            if let Some(decision) = decision {
                self.floor_decided(decision);
            }
        }
    }

    /// Every tick: the talker's sound keeps its turn, its connection's end
    /// ends it, and so do the floor's limits.
    pub(super) fn talk_tick(&mut self, now: Instant) {
        let Some((link, seen)) = self.talk.talker_link else {
            return;
        };
        let Some(holder) = self.talk.floor.holder().cloned() else {
            return;
        };
        let connected = self
            .participant
            .mesh
            .links()
            .iter()
            .any(|(room, peer, l, connected)| {
                *l == link && *connected && *room == holder.room && *peer == holder.peer
            });
        let decision = if connected {
            let voiced = self.voiced();
            if voiced > seen {
                self.talk.floor.heard(now, &holder);
                self.talk.talker_link = Some((link, voiced));
            }
            self.talk.floor.tick(now)
        } else {
            self.talk.floor.gone(&holder)
        };
        if let Some(decision) = decision {
            self.floor_decided(decision);
        }
    }

    /// Turns talking back on or off (`set talk`); off ends the turn under
    /// way.
    pub(super) fn set_talk_enabled(&mut self, enabled: bool) {
        let decision = self.talk.floor.set_enabled(enabled && self.talk.speaker);
        if let Some(decision) = decision {
            self.floor_decided(decision);
        }
        self.publish_talk();
    }

    /// The camera's presences say whether viewers may talk, and who does.
    pub(super) fn publish_talk(&mut self) {
        let talk = self.talk.speaker.then(|| TalkState {
            enabled: self.talk.floor.enabled(),
            holder: self.talk.floor.holder().map(|t| self.named(t)),
        });
        self.participant.set_talk(talk);
    }

    /// The floor's state for telemetry.
    pub(super) fn talk_telemetry(&self) -> serde_json::Value {
        serde_json::json!({
            "enabled": self.talk.floor.enabled(),
            "holder": self.talk.floor.holder().map(|t| self.named(t)),
            "echo": self.talk.echo.name(),
            "speaker": {
                "state": self.speaker.state().name(),
                "error": self.speaker.error(),
                "restarts": self.speaker.restarts(),
                "packets": self.speaker.source.feed.counters.frames.load(Ordering::Relaxed),
            },
        })
    }

    fn floor_decided(&mut self, decision: Decision) {
        match decision {
            Decision::Granted(talker) => {
                tracing::info!(target: LOG_TARGET, room = %talker.room, peer = %talker.peer, "the floor is granted");
                self.talk_signal(&talker, TalkAction::Granted, None, None);
                if let Some((link, _)) = self.talk.talker_link {
                    self.participant.command_link(link, PeerCommand::Talk(true));
                }
                self.duck(true);
            }
            Decision::Refused { talker, holder } => {
                let reason = if holder.is_some() { "taken" } else { "off" };
                self.refuse(&talker, reason, holder.as_ref());
            }
            Decision::Ended { talker, why } => {
                tracing::info!(target: LOG_TARGET, room = %talker.room, peer = %talker.peer, why = why.name(), "the floor is free");
                self.talk_signal(&talker, TalkAction::Ended, Some(why.name()), None);
                if let Some((link, _)) = self.talk.talker_link.take() {
                    self.participant
                        .command_link(link, PeerCommand::Talk(false));
                }
                self.duck(false);
            }
        }
        self.publish_talk();
    }

    /// In half duplex, the microphone is muted for the length of a turn.
    fn duck(&mut self, talking: bool) {
        if self.talk.echo == EchoMode::HalfDuplex {
            self.audio.set_ducked(talking, self.config.audio.muted);
        }
    }

    fn refuse(&mut self, talker: &floor::Talker, reason: &str, holder: Option<&floor::Talker>) {
        let holder = holder.map(|h| self.named(h));
        self.talk_signal(talker, TalkAction::Refused, Some(reason), holder);
    }

    fn talk_signal(
        &mut self,
        to: &floor::Talker,
        action: TalkAction,
        reason: Option<&str>,
        holder: Option<Talker>,
    ) {
        self.participant.signal(
            &to.room,
            &to.peer,
            SignalBody::Talk {
                action,
                reason: reason.map(str::to_owned),
                holder,
            },
        );
    }

    /// A talker as the protocol names it: with the name of its presence.
    fn named(&self, talker: &floor::Talker) -> Talker {
        Talker {
            room: talker.room.clone(),
            peer: talker.peer.clone(),
            name: self
                .participant
                .mesh
                .peer_name(&talker.room, &talker.peer)
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The speaker plays only the talker: its voice is the talker's.
    fn voiced(&self) -> u64 {
        self.speaker.source.feed.voiced()
    }

    fn on_the_send_loop(&self, link: LinkId) -> bool {
        self.participant
            .peer(link)
            .is_some_and(|p| SendPath::of(&p.counters) != SendPath::Tasks)
    }
}
