//! When the camera publishes to the SFU, and what it does when that fails,
//! sans I/O.
//!
//! [`Publication`] takes the mode, the demand (rooms joined, viewers the
//! mesh turned away), the outcome of each attempt and the time, and says
//! when to publish and when to stop. A refused request (4xx: a wrong token,
//! an endpoint that does not exist) is not repeated for
//! [`REFUSED_RETRY`]: the same request would be refused again, and fifty
//! cameras retrying a misconfiguration every second is a storm. A server
//! that fails or cannot be reached (5xx, the network, an answer that cannot
//! be used, a connection lost) is tried again after 1 s, 2 s, 4 s, … capped
//! at [`MAX_RETRY_BACKOFF`].
//!
//! Owns: the publication's state, its retry and linger timers. Must not
//! touch: HTTP, peer connections, the clock (every time is an argument;
//! [`Publication::next_deadline`] says when to call
//! [`Publication::on_tick`]).

use std::time::{Duration, Instant};

use crate::config::WhipMode;

/// The longest wait between two attempts on a server that fails.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// The wait before a refused request is made again.
pub const REFUSED_RETRY: Duration = Duration::from_secs(600);

/// What the publication needs from the rooms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Rooms the camera is in.
    pub rooms: usize,
    /// Viewers present that the mesh turned away (`bye "full"`).
    pub overflow: usize,
}

/// Why an attempt or a publication ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server refused the request (4xx).
    Refused(String),
    /// The server failed, could not be reached, or its answer could not be
    /// used.
    Unavailable(String),
    /// The connection to the SFU was lost after it was up.
    Lost(String),
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Self::Refused(r) | Self::Unavailable(r) | Self::Lost(r) => r,
        }
    }
}

/// The state telemetry reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishState {
    Off,
    Connecting,
    Publishing,
    Error,
}

impl PublishState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Connecting => "connecting",
            Self::Publishing => "publishing",
            Self::Error => "error",
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start an attempt: a new connection, its offer POSTed.
    Publish,
    /// End the attempt or publication: close the connection, DELETE the
    /// resource if there is one.
    Unpublish,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    Publishing,
    /// The last attempt failed; the next one is due at `retry_at`.
    Failed {
        failure: Failure,
        retry_at: Instant,
    },
}

#[derive(Debug)]
pub struct Publication {
    mode: WhipMode,
    linger: Duration,
    demand: Demand,
    /// When the last overflow viewer left, while the linger runs.
    overflow_ended: Option<Instant>,
    phase: Phase,
    /// Failed attempts in a row.
    failures: u32,
}

/// The wait after `failures` failures in a row of a server that fails.
pub fn retry_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_RETRY_BACKOFF)
}

impl Publication {
    pub fn new(mode: WhipMode, linger: Duration) -> Self {
        Self {
            mode,
            linger,
            demand: Demand::default(),
            overflow_ended: None,
            phase: Phase::Idle,
            failures: 0,
        }
    }

    pub fn mode(&self) -> WhipMode {
        self.mode
    }

    pub fn state(&self) -> PublishState {
        match self.phase {
            Phase::Idle => PublishState::Off,
            Phase::Connecting => PublishState::Connecting,
            Phase::Publishing => PublishState::Publishing,
            Phase::Failed { .. } => PublishState::Error,
        }
    }

    /// Why the last attempt failed, while it is the latest news.
    pub fn error(&self) -> Option<&str> {
        match &self.phase {
            Phase::Failed { failure, .. } => Some(failure.reason()),
            _ => None,
        }
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the camera should be published at `now`.
    fn wanted(&self, now: Instant) -> bool {
        if self.demand.rooms == 0 {
            return false;
        }
        match self.mode {
            WhipMode::Off => false,
            WhipMode::Always => true,
            WhipMode::Overflow => {
                self.demand.overflow > 0
                    || self
                        .overflow_ended
                        .is_some_and(|ended| now < ended + self.linger)
            }
        }
    }

    /// An attempt or a publication is under way (something to unpublish).
    fn active(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::Publishing)
    }

    /// Starts or stops to match what is wanted now.
    fn settle(&mut self, now: Instant) -> Vec<Action> {
        let wanted = self.wanted(now);
        match &self.phase {
            Phase::Idle if wanted => {
                self.phase = Phase::Connecting;
                vec![Action::Publish]
            }
            Phase::Failed { retry_at, .. } if wanted && now >= *retry_at => {
                self.phase = Phase::Connecting;
                vec![Action::Publish]
            }
            Phase::Failed { .. } if !wanted => {
                self.phase = Phase::Idle;
                self.failures = 0;
                Vec::new()
            }
            Phase::Connecting | Phase::Publishing if !wanted => {
                self.phase = Phase::Idle;
                self.failures = 0;
                vec![Action::Unpublish]
            }
            _ => Vec::new(),
        }
    }

    /// A new mode (`set whip_mode=…`): a refused or failing endpoint is
    /// tried again at once, as someone just asked for it.
    pub fn set_mode(&mut self, mode: WhipMode, now: Instant) -> Vec<Action> {
        self.mode = mode;
        if let Phase::Failed { retry_at, .. } = &mut self.phase {
            *retry_at = now;
        }
        self.failures = 0;
        self.settle(now)
    }

    pub fn set_demand(&mut self, demand: Demand, now: Instant) -> Vec<Action> {
        if demand.overflow == 0 && self.demand.overflow > 0 {
            self.overflow_ended = Some(now);
        }
        if demand.overflow > 0 {
            self.overflow_ended = None;
        }
        self.demand = demand;
        self.settle(now)
    }

    /// The attempt's connection is up: media flows to the SFU.
    pub fn connected(&mut self) {
        if self.phase == Phase::Connecting {
            self.phase = Phase::Publishing;
            self.failures = 0;
        }
    }

    /// The attempt or the publication failed; what it held must go.
    pub fn failed(&mut self, failure: Failure, now: Instant) -> Vec<Action> {
        if !self.active() {
            return Vec::new();
        }
        self.failures += 1;
        let wait = match failure {
            Failure::Refused(_) => REFUSED_RETRY,
            Failure::Unavailable(_) | Failure::Lost(_) => retry_backoff(self.failures),
        };
        self.phase = Phase::Failed {
            failure,
            retry_at: now + wait,
        };
        vec![Action::Unpublish]
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = match &self.phase {
            Phase::Failed { retry_at, .. } => Some(*retry_at),
            _ => None,
        };
        let linger_end = self
            .overflow_ended
            .filter(|_| self.mode == WhipMode::Overflow && self.demand.overflow == 0)
            .map(|ended| ended + self.linger);
        retry.into_iter().chain(linger_end).min()
    }

    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if self
            .overflow_ended
            .is_some_and(|ended| now >= ended + self.linger)
        {
            self.overflow_ended = None;
        }
        self.settle(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_secs(30);

    fn demand(rooms: usize, overflow: usize) -> Demand {
        Demand { rooms, overflow }
    }

    #[test]
    fn always_publishes_while_in_a_room() {
        let t0 = Instant::now();
        let mut p = Publication::new(WhipMode::Always, LINGER);
        assert_eq!(p.set_demand(demand(0, 0), t0), vec![]);
        assert_eq!(p.state(), PublishState::Off);
        assert_eq!(p.set_demand(demand(1, 0), t0), vec![Action::Publish]);
        assert_eq!(p.state(), PublishState::Connecting);
        p.connected();
        assert_eq!(p.state(), PublishState::Publishing);
        assert_eq!(p.set_demand(demand(2, 0), t0), vec![], "one publication");
        assert_eq!(p.set_demand(demand(0, 0), t0), vec![Action::Unpublish]);
        assert_eq!(p.state(), PublishState::Off);
    }

    #[test]
    fn off_never_publishes() {
        let t0 = Instant::now();
        let mut p = Publication::new(WhipMode::Off, LINGER);
        assert_eq!(p.set_demand(demand(1, 5), t0), vec![]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn overflow_publishes_while_viewers_are_turned_away_and_lingers() {
        let t0 = Instant::now();
        let mut p = Publication::new(WhipMode::Overflow, LINGER);
        assert_eq!(p.set_demand(demand(1, 0), t0), vec![]);
        assert_eq!(p.set_demand(demand(1, 1), t0), vec![Action::Publish]);
        p.connected();
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(p.set_demand(demand(1, 0), t1), vec![], "lingers");
        assert_eq!(p.next_deadline(), Some(t1 + LINGER));
        // A viewer turned away during the linger keeps the publication.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(p.set_demand(demand(1, 1), t2), vec![]);
        assert_eq!(p.next_deadline(), None);
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(p.set_demand(demand(1, 0), t3), vec![]);
        assert_eq!(p.on_tick(t3 + LINGER - Duration::from_millis(1)), vec![]);
        assert_eq!(p.on_tick(t3 + LINGER), vec![Action::Unpublish]);
        assert_eq!(p.state(), PublishState::Off);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_failing_server_is_retried_with_backoff() {
        let t0 = Instant::now();
        let mut p = Publication::new(WhipMode::Always, LINGER);
        assert_eq!(p.set_demand(demand(1, 0), t0), vec![Action::Publish]);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let failure = Failure::Unavailable("503 Janus unavailable".into());
            assert_eq!(p.failed(failure, now), vec![Action::Unpublish]);
            assert_eq!(p.state(), PublishState::Error);
            assert_eq!(p.error(), Some("503 Janus unavailable"));
            let due = p.next_deadline().expect("a retry is due");
            waits.push((due - now).as_secs());
            assert_eq!(p.on_tick(due - Duration::from_millis(1)), vec![]);
            now = due;
            assert_eq!(p.on_tick(now), vec![Action::Publish]);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        p.connected();
        assert_eq!(p.failures(), 0, "a connection resets the backoff");
        assert_eq!(
            p.failed(Failure::Lost("ICE failed".into()), now),
            vec![Action::Unpublish]
        );
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn a_refused_request_is_not_repeated_until_asked() {
        let t0 = Instant::now();
        let mut p = Publication::new(WhipMode::Always, LINGER);
        p.set_demand(demand(1, 0), t0);
        p.failed(Failure::Refused("403 Unauthorized".into()), t0);
        assert_eq!(p.next_deadline(), Some(t0 + REFUSED_RETRY));
        assert_eq!(p.on_tick(t0 + Duration::from_secs(599)), vec![]);
        // Someone sets the mode again: tried at once.
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(p.set_mode(WhipMode::Always, t1), vec![Action::Publish]);
    }

    #[test]
    fn a_failure_after_stopping_changes_nothing() {
        let t0 = Instant::now();
        let mut p = Publication::new(WhipMode::Always, LINGER);
        p.set_demand(demand(1, 0), t0);
        assert_eq!(p.set_mode(WhipMode::Off, t0), vec![Action::Unpublish]);
        assert_eq!(p.failed(Failure::Lost("closed".into()), t0), vec![]);
        assert_eq!(p.state(), PublishState::Off);
        // A failed state is left when publishing is no longer wanted.
        let mut p = Publication::new(WhipMode::Always, LINGER);
        p.set_demand(demand(1, 0), t0);
        p.failed(Failure::Unavailable("timeout".into()), t0);
        assert_eq!(p.set_demand(demand(0, 0), t0), vec![]);
        assert_eq!(p.state(), PublishState::Off);
        assert_eq!(p.next_deadline(), None);
    }
}
