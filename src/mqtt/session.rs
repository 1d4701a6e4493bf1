//! The broker session's state, apart from its I/O: whether we are
//! connected, how long to wait before the next connection attempt, and
//! which subscription request a SUBACK acknowledges.
//!
//! rumqttc hides packet ids from the caller, so a subscription request
//! carries a token: the tokens are queued in the order the requests enter
//! rumqttc's request queue, the next SUBSCRIBE that goes out takes the
//! first of them with its packet id, and its SUBACK gives it back as
//! [`MqttEvent::Subscribed`]. The event loop (`super::drive`) feeds
//! [`Session`] what rumqttc reports and carries out what it returns; the
//! session itself reads no socket, no clock and no global random source.
//!
//! What is owed after a reconnect is not decided here: the rooms'
//! subscriptions and presences (and the 10 s and 2 s rules of PROTOCOL.md)
//! belong to `crate::room`, the device's command subscription and status to
//! the daemon; both act on [`MqttEvent::Connected`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{Event, Outgoing, Packet};

/// What the broker session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttEvent {
    /// Connected (again): subscriptions must be made anew.
    Connected,
    /// The connection was lost; reconnecting is under way.
    Disconnected(String),
    /// The subscription request with this token was acknowledged.
    Subscribed(u64),
    Message {
        topic: String,
        payload: Bytes,
    },
}

/// What the event loop does after an event of the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to report; poll on.
    Continue,
    /// Report this, then poll on.
    Report(MqttEvent),
    /// Our own clean disconnect went out: the session is over once the
    /// broker closes the connection.
    Close,
}

/// What the event loop does after the connection failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// To report first ([`MqttEvent::Disconnected`], when we were connected).
    pub report: Option<MqttEvent>,
    /// How long to wait before the next attempt.
    pub delay: Duration,
}

/// The longest wait between two connection attempts. A camera is back at
/// most this long (plus the connect itself) after its broker is, however
/// long the outage was: viewers and controllers see a fleet as down for no
/// longer than it is.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(4);

/// The reconnect delay after `failures` failed attempts in a row, drawn from
/// `rng`: exponential from 0.5 s up to [`MAX_RECONNECT_DELAY`], each drawn
/// uniformly from the upper half of its ceiling. After a long outage a
/// fleet's attempts are spread evenly over 2 to 4 s, so cameras do not all
/// reconnect in one instant when the broker comes back.
pub fn reconnect_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = Duration::from_millis(500 * (1u64 << failures.min(6))).min(MAX_RECONNECT_DELAY);
    let ceiling_ms = ceiling.as_millis() as u64;
    Duration::from_millis(rng.random_range(ceiling_ms / 2..=ceiling_ms))
}

/// The state of one broker session, across its connections.
#[derive(Debug, Default)]
pub struct Session {
    connected: bool,
    /// Connection attempts failed in a row since the last CONNACK.
    failures: u32,
    /// Tokens of subscription requests in the order they were queued.
    queued: VecDeque<u64>,
    /// Tokens of SUBSCRIBEs sent on this connection, by packet id, until
    /// their SUBACK.
    sent: HashMap<u16, u64>,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A subscription request with `token` entered rumqttc's request queue.
    /// The caller keeps the queue and this call in the same order (one lock
    /// around both).
    pub fn subscription_queued(&mut self, token: u64) {
        self.queued.push_back(token);
    }

    /// Something happened on the connection.
    pub fn on_event(&mut self, event: Event) -> Step {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.failures = 0;
                self.connected = true;
                self.sent.clear();
                Step::Report(MqttEvent::Connected)
            }
            Event::Incoming(Packet::Publish(p)) => Step::Report(MqttEvent::Message {
                topic: p.topic,
                payload: p.payload,
            }),
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                if let Some(token) = self.queued.pop_front() {
                    self.sent.insert(pkid, token);
                }
                Step::Continue
            }
            Event::Incoming(Packet::SubAck(ack)) => match self.sent.remove(&ack.pkid) {
                Some(token) => Step::Report(MqttEvent::Subscribed(token)),
                None => Step::Continue,
            },
            Event::Outgoing(Outgoing::Disconnect) => Step::Close,
            _ => Step::Continue,
        }
    }

    /// The connection (or an attempt) failed with `reason`; the delay is
    /// drawn from `rng`.
    pub fn on_error(&mut self, reason: String, rng: &mut impl Rng) -> Retry {
        let report = std::mem::take(&mut self.connected).then_some(MqttEvent::Disconnected(reason));
        let delay = reconnect_delay(self.failures, rng);
        self.failures = self.failures.saturating_add(1);
        Retry { report, delay }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rumqttc::{ConnAck, ConnectReturnCode, Publish, QoS, SubAck, SubscribeReasonCode};

    use super::*;

    fn connack() -> Event {
        Event::Incoming(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
    }

    fn sent(pkid: u16) -> Event {
        Event::Outgoing(Outgoing::Subscribe(pkid))
    }

    fn suback(pkid: u16) -> Event {
        Event::Incoming(Packet::SubAck(SubAck::new(
            pkid,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        )))
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn a_suback_gives_back_the_token_of_its_own_request() {
        let mut s = Session::new();
        assert_eq!(s.on_event(connack()), Step::Report(MqttEvent::Connected));
        s.subscription_queued(10);
        s.subscription_queued(20);
        assert_eq!(s.on_event(sent(1)), Step::Continue);
        assert_eq!(s.on_event(sent(2)), Step::Continue);
        // Acknowledged out of order: each SUBACK names its own request.
        assert_eq!(
            s.on_event(suback(2)),
            Step::Report(MqttEvent::Subscribed(20))
        );
        assert_eq!(
            s.on_event(suback(1)),
            Step::Report(MqttEvent::Subscribed(10))
        );
        // Once only, and an unknown packet id is nobody's.
        assert_eq!(s.on_event(suback(1)), Step::Continue);
        assert_eq!(s.on_event(suback(9)), Step::Continue);
    }

    #[test]
    fn a_subscribe_without_a_token_takes_none() {
        // A SUBSCRIBE that no queued request stands for (rumqttc resending
        // after a reconnect) takes no token from the next request.
        let mut s = Session::new();
        s.on_event(connack());
        assert_eq!(s.on_event(sent(1)), Step::Continue);
        s.subscription_queued(5);
        s.on_event(sent(2));
        assert_eq!(s.on_event(suback(1)), Step::Continue);
        assert_eq!(
            s.on_event(suback(2)),
            Step::Report(MqttEvent::Subscribed(5))
        );
    }

    #[test]
    fn a_new_connection_forgets_the_requests_sent_on_the_old_one() {
        let mut s = Session::new();
        s.on_event(connack());
        s.subscription_queued(1);
        s.on_event(sent(1));
        s.on_error("reset".into(), &mut rng());
        s.on_event(connack());
        // The broker of the new connection never saw packet 1.
        assert_eq!(s.on_event(suback(1)), Step::Continue);
        // A request queued while disconnected is matched once it goes out.
        s.subscription_queued(2);
        s.on_event(sent(1));
        assert_eq!(
            s.on_event(suback(1)),
            Step::Report(MqttEvent::Subscribed(2))
        );
    }

    #[test]
    fn a_lost_connection_is_reported_once_and_retried_with_backoff() {
        let mut s = Session::new();
        // Attempts that never connected are not reported.
        let first = s.on_error("refused".into(), &mut rng());
        assert_eq!(first.report, None);
        assert!(first.delay <= Duration::from_millis(500), "{first:?}");
        s.on_event(connack());
        let lost = s.on_error("reset".into(), &mut rng());
        assert_eq!(lost.report, Some(MqttEvent::Disconnected("reset".into())));
        // The CONNACK reset the count: the first retry is quick again.
        assert!(lost.delay <= Duration::from_millis(500), "{lost:?}");
        let mut last = lost;
        for _ in 0..10 {
            last = s.on_error("refused".into(), &mut rng());
            assert_eq!(last.report, None);
        }
        assert!(last.delay >= MAX_RECONNECT_DELAY / 2, "{last:?}");
        assert!(last.delay <= MAX_RECONNECT_DELAY, "{last:?}");
    }

    #[test]
    fn messages_are_reported_and_our_disconnect_closes() {
        let mut s = Session::new();
        let publish = Publish::new("meshcam/x", QoS::AtLeastOnce, "hi");
        assert_eq!(
            s.on_event(Event::Incoming(Packet::Publish(publish))),
            Step::Report(MqttEvent::Message {
                topic: "meshcam/x".into(),
                payload: Bytes::from_static(b"hi"),
            })
        );
        assert_eq!(
            s.on_event(Event::Incoming(Packet::PingResp)),
            Step::Continue
        );
        assert_eq!(
            s.on_event(Event::Outgoing(Outgoing::Disconnect)),
            Step::Close
        );
    }

    #[test]
    fn reconnect_delays_grow_are_capped_and_spread() {
        let mut rng = rng();
        let mut delays = |failures: u32| -> Vec<Duration> {
            (0..200)
                .map(|_| reconnect_delay(failures, &mut rng))
                .collect()
        };
        for d in delays(0) {
            assert!((Duration::from_millis(250)..=Duration::from_millis(500)).contains(&d));
        }
        for failures in [3, 10, 1000] {
            let (min, max) = delays(failures)
                .into_iter()
                .fold((Duration::MAX, Duration::ZERO), |(lo, hi), d| {
                    (lo.min(d), hi.max(d))
                });
            assert!(max <= MAX_RECONNECT_DELAY, "{max:?} after {failures}");
            assert!(min >= MAX_RECONNECT_DELAY / 2, "{min:?} after {failures}");
            // Jittered: 200 draws over 2 s do not land on one instant.
            assert!(max - min >= Duration::from_millis(500), "{min:?}..{max:?}");
        }
    }
}
