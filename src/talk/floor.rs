//! Who may speak through the camera: one talker at a time, across all of
//! its rooms. A viewer asks for the floor and gets it, or hears who holds
//! it; it gives it back, or loses it when it leaves, when it has been
//! silent for `silence`, when it has held it for `max`, or when talking
//! back is turned off.
//!
//! A rule: requests, releases, sound heard and time in; decisions out.
//! Nothing here knows of connections or messages.

use std::time::{Duration, Instant};

/// A talker: the room it talks from and its peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Talker {
    pub room: String,
    pub peer: String,
}

/// Why a talker lost the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It gave the floor back.
    Released,
    /// It left, or its connection ended.
    Gone,
    /// Nothing was heard from it for the silence limit.
    Silent,
    /// It held the floor for the most a turn may last.
    TooLong,
    /// Talking back was turned off.
    Off,
}

impl Ended {
    /// As the `talk` signal's `reason` names it (PROTOCOL.md).
    pub fn name(self) -> &'static str {
        match self {
            Ended::Released => "released",
            Ended::Gone => "gone",
            Ended::Silent => "silent",
            Ended::TooLong => "too_long",
            Ended::Off => "off",
        }
    }
}

/// What the floor decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `talker` may speak now.
    Granted(Talker),
    /// `talker` may not: `holder` speaks, or (`None`) talking back is off.
    Refused {
        talker: Talker,
        holder: Option<Talker>,
    },
    /// `talker` no longer holds the floor.
    Ended { talker: Talker, why: Ended },
}

/// The limits of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max: Duration,
    pub silence: Duration,
}

#[derive(Debug)]
struct Turn {
    talker: Talker,
    since: Instant,
    heard: Instant,
}

/// The camera's floor.
#[derive(Debug)]
pub struct Floor {
    limits: Limits,
    enabled: bool,
    turn: Option<Turn>,
}

impl Floor {
    pub fn new(limits: Limits, enabled: bool) -> Self {
        Self {
            limits,
            enabled,
            turn: None,
        }
    }

    /// Who holds the floor.
    pub fn holder(&self) -> Option<&Talker> {
        self.turn.as_ref().map(|t| &t.talker)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `talker` asks for the floor. Asking again while holding it is
    /// granted again (a lost reply), and starts no new turn.
    pub fn request(&mut self, now: Instant, talker: Talker) -> Decision {
        if !self.enabled {
            return Decision::Refused {
                talker,
                holder: None,
            };
        }
        match &self.turn {
            Some(turn) if turn.talker == talker => Decision::Granted(talker),
            Some(turn) => Decision::Refused {
                talker,
                holder: Some(turn.talker.clone()),
            },
            None => {
                self.turn = Some(Turn {
                    talker: talker.clone(),
                    since: now,
                    heard: now,
                });
                Decision::Granted(talker)
            }
        }
    }

    /// `talker` gives the floor back; nothing when it does not hold it.
    pub fn release(&mut self, talker: &Talker) -> Option<Decision> {
        self.end_if(talker, Ended::Released)
    }

    /// `talker` left or its connection ended.
    pub fn gone(&mut self, talker: &Talker) -> Option<Decision> {
        self.end_if(talker, Ended::Gone)
    }

    /// Every talker of `room` is gone (the camera left it).
    pub fn room_gone(&mut self, room: &str) -> Option<Decision> {
        let talker = self
            .turn
            .as_ref()
            .filter(|t| t.talker.room == room)?
            .talker
            .clone();
        self.end_if(&talker, Ended::Gone)
    }

    /// Sound came from `talker`.
    pub fn heard(&mut self, now: Instant, talker: &Talker) {
        if let Some(turn) = self.turn.as_mut().filter(|t| t.talker == *talker) {
            turn.heard = now;
        }
    }

    /// Turns talking back on or off; off ends the turn under way.
    pub fn set_enabled(&mut self, enabled: bool) -> Option<Decision> {
        self.enabled = enabled;
        if enabled {
            return None;
        }
        let talker = self.turn.take()?.talker;
        Some(Decision::Ended {
            talker,
            why: Ended::Off,
        })
    }

    /// When [`Floor::tick`] has something to decide.
    pub fn deadline(&self) -> Option<Instant> {
        let turn = self.turn.as_ref()?;
        Some((turn.since + self.limits.max).min(turn.heard + self.limits.silence))
    }

    /// Time has come to `now`: a turn past its limits ends.
    pub fn tick(&mut self, now: Instant) -> Option<Decision> {
        let turn = self.turn.as_ref()?;
        let why = if now >= turn.since + self.limits.max {
            Ended::TooLong
        } else if now >= turn.heard + self.limits.silence {
            Ended::Silent
        } else {
            return None;
        };
        let talker = self.turn.take()?.talker;
        Some(Decision::Ended { talker, why })
    }

    fn end_if(&mut self, talker: &Talker, why: Ended) -> Option<Decision> {
        if self.holder() != Some(talker) {
            return None;
        }
        let talker = self.turn.take()?.talker;
        Some(Decision::Ended { talker, why })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max: Duration::from_secs(60),
        silence: Duration::from_secs(10),
    };

    fn talker(room: &str, peer: &str) -> Talker {
        Talker {
            room: room.into(),
            peer: peer.into(),
        }
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn one_talker_at_a_time_across_rooms_and_the_second_hears_who() {
        let t0 = Instant::now();
        let mut floor = Floor::new(LIMITS, true);
        let (a, b) = (talker("home", "v-a"), talker("garden", "v-b"));
        assert_eq!(floor.request(t0, a.clone()), Decision::Granted(a.clone()));
        assert_eq!(
            floor.request(at(t0, 1), b.clone()),
            Decision::Refused {
                talker: b.clone(),
                holder: Some(a.clone())
            }
        );
        // Asking again while holding: granted, the same turn.
        assert_eq!(
            floor.request(at(t0, 2), a.clone()),
            Decision::Granted(a.clone())
        );
        assert_eq!(floor.deadline(), Some(at(t0, 10)));
        assert_eq!(
            floor.release(&a),
            Some(Decision::Ended {
                talker: a.clone(),
                why: Ended::Released
            })
        );
        assert_eq!(floor.request(at(t0, 3), b.clone()), Decision::Granted(b));
    }

    #[test]
    fn only_the_holder_can_give_the_floor_back_or_lose_it_by_leaving() {
        let t0 = Instant::now();
        let mut floor = Floor::new(LIMITS, true);
        let (a, b) = (talker("home", "v-a"), talker("home", "v-b"));
        floor.request(t0, a.clone());
        assert_eq!(floor.release(&b), None);
        assert_eq!(floor.gone(&b), None);
        assert_eq!(floor.holder(), Some(&a));
        assert_eq!(
            floor.gone(&a),
            Some(Decision::Ended {
                talker: a,
                why: Ended::Gone
            })
        );
        assert_eq!(floor.holder(), None);
    }

    #[test]
    fn a_silent_talker_loses_the_floor_and_sound_keeps_it() {
        let t0 = Instant::now();
        let mut floor = Floor::new(LIMITS, true);
        let a = talker("home", "v-a");
        floor.request(t0, a.clone());
        floor.heard(at(t0, 8), &a);
        assert_eq!(floor.tick(at(t0, 17)), None, "heard 9 s ago");
        assert_eq!(floor.deadline(), Some(at(t0, 18)));
        assert_eq!(
            floor.tick(at(t0, 18)),
            Some(Decision::Ended {
                talker: a,
                why: Ended::Silent
            })
        );
        assert_eq!(floor.deadline(), None);
    }

    #[test]
    fn a_turn_ends_at_its_longest_however_much_is_said() {
        let t0 = Instant::now();
        let mut floor = Floor::new(LIMITS, true);
        let a = talker("home", "v-a");
        floor.request(t0, a.clone());
        for s in 1..60 {
            floor.heard(at(t0, s), &a);
            assert_eq!(floor.tick(at(t0, s)), None);
        }
        assert_eq!(
            floor.tick(at(t0, 60)),
            Some(Decision::Ended {
                talker: a,
                why: Ended::TooLong
            })
        );
    }

    #[test]
    fn turned_off_the_floor_ends_the_turn_and_refuses_everyone() {
        let t0 = Instant::now();
        let mut floor = Floor::new(LIMITS, true);
        let a = talker("home", "v-a");
        floor.request(t0, a.clone());
        assert_eq!(
            floor.set_enabled(false),
            Some(Decision::Ended {
                talker: a.clone(),
                why: Ended::Off
            })
        );
        assert_eq!(
            floor.request(at(t0, 1), a.clone()),
            Decision::Refused {
                talker: a.clone(),
                holder: None
            }
        );
        assert_eq!(floor.set_enabled(true), None);
        assert_eq!(floor.request(at(t0, 2), a.clone()), Decision::Granted(a));
    }

    #[test]
    fn leaving_a_room_ends_the_turn_of_its_talker_only() {
        let t0 = Instant::now();
        let mut floor = Floor::new(LIMITS, true);
        let a = talker("home", "v-a");
        floor.request(t0, a.clone());
        assert_eq!(floor.room_gone("garden"), None);
        assert_eq!(
            floor.room_gone("home"),
            Some(Decision::Ended {
                talker: a,
                why: Ended::Gone
            })
        );
    }
}
