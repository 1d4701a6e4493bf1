//! The participant driven with no broker and no peer connections: inputs
//! are calls with the time given, and the effects are collected in a
//! `Vec<Effect>` and looked at in order.

use std::time::Duration;

use super::*;
use crate::protocol::DeviceStatus;
use crate::room::tests::cand;
use crate::room::{NEGOTIATION_TIMEOUT, PRESENCE_CONFIRM_TIMEOUT, SIGNAL_BURST, retry_backoff};

type Fake = Participant<Vec<Effect>>;

/// The start of every test's timeline, an hour from the real clock's now:
/// nothing here reads the clock, so any time will do.
fn t() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(|| Instant::now() + Duration::from_secs(3600))
}

fn at(ms: u64) -> Instant {
    t() + Duration::from_millis(ms)
}

fn topics() -> Topics {
    Topics::new("meshcam")
}

fn participant(id: &str, role: Role, max_viewers: usize) -> Fake {
    let me = Me {
        id: id.into(),
        role,
        name: id.into(),
    };
    Participant::with_effects(me, max_viewers, topics(), Vec::new())
}

fn camera() -> Fake {
    participant("cam", Role::Camera, 2)
}

fn viewer(id: &str) -> Fake {
    participant(id, Role::Viewer, 1)
}

/// The effects so far, taken out.
fn drain(p: &mut Fake) -> Vec<Effect> {
    std::mem::take(&mut p.effects)
}

fn session_of(id: &str) -> String {
    format!("{id}session")
}

/// `p` joined `home`, its subscription acknowledged and its presence out.
fn in_home(mut p: Fake) -> Fake {
    let me = p.mesh.me().id.clone();
    p.join("home");
    assert!(
        drain(&mut p).is_empty(),
        "no subscription before the broker"
    );
    p.broker_connected(t());
    let [Effect::Subscribe { token, .. }] = drain(&mut p)[..] else {
        panic!("one subscription for the room");
    };
    assert!(p.subscribed(token, t()));
    let session = p.mesh.session("home").expect("joined").to_owned();
    let presence = Presence::new(&me, &session, p.mesh.me().role, &me);
    assert_eq!(
        drain(&mut p),
        vec![Effect::Publish {
            topic: topics().presence("home", &me),
            payload: encode_presence(&presence),
            retain: true,
        }]
    );
    p
}

/// `peer`'s presence in `home` (session `{peer}session`) arrives at `now`.
fn arrives(p: &mut Fake, peer: &str, role: Role, now: Instant) {
    let presence = Presence::new(peer, &session_of(peer), role, peer);
    let payload = Bytes::from(encode_presence(&presence));
    assert!(p.on_message(&presence_topic(peer), &payload, now));
}

fn presence_topic(peer: &str) -> Topic {
    Topic::Presence {
        room: "home".into(),
        peer: peer.into(),
    }
}

/// A signal from `from` (its session `{from}session`) to `p` in `home`.
fn signal_from(p: &mut Fake, from: &str, body: SignalBody, now: Instant) {
    let me = p.mesh.me().id.clone();
    let to_session = p.mesh.session("home").expect("joined").to_owned();
    let payload = Bytes::from(Signal::new(&session_of(from), &to_session, body).encode());
    let topic = Topic::Signal {
        room: "home".into(),
        to: me,
        from: from.into(),
    };
    assert!(p.on_message(&topic, &payload, now));
}

/// The signal `p` published to `to` in `home`, decoded.
fn sent_to(p: &Fake, effect: &Effect, to: &str) -> Signal {
    let me = &p.mesh.me().id;
    let Effect::Publish {
        topic,
        payload,
        retain: false,
    } = effect
    else {
        panic!("expected a signal, got {effect:?}");
    };
    assert_eq!(*topic, topics().signal("home", to, me));
    Signal::decode(payload).expect("a valid signal")
}

fn open(link: LinkId, offerer: bool) -> Effect {
    Effect::OpenPeer { link, offerer }
}

/// Who `link` connects to, in the room `home`.
fn peer_of(p: &Fake, link: LinkId) -> Option<&str> {
    p.mesh.link_peer(link).map(|(room, peer)| {
        assert_eq!(room, "home");
        peer
    })
}

fn command(link: LinkId, command: PeerCommand) -> Effect {
    Effect::Command { link, command }
}

fn answer() -> SignalBody {
    SignalBody::Answer {
        sdp: "v=0 a".into(),
    }
}

/// A camera in `home` that opened link 1 to viewer `v1`.
fn camera_with_v1() -> Fake {
    let mut cam = in_home(camera());
    arrives(&mut cam, "v1", Role::Viewer, t());
    assert_eq!(drain(&mut cam), vec![open(1, true)]);
    assert_eq!(peer_of(&cam, 1), Some("v1"));
    cam
}

// ── Joining ────────────────────────────────────────────────────────────────

#[test]
fn a_viewer_joining_opens_a_connection_and_its_offer_is_signalled() {
    let mut cam = camera_with_v1();
    // The peer connection made its offer: it goes to v1, in both sessions.
    let offer = SignalBody::offer("v=0 o");
    assert!(
        cam.on_peer_event(PeerEvent::Signal(1, offer.clone()), t())
            .is_none()
    );
    let effects = drain(&mut cam);
    assert_eq!(effects.len(), 1);
    let signal = sent_to(&cam, &effects[0], "v1");
    assert_eq!(signal.body, offer);
    assert_eq!(signal.session, cam.mesh.session("home").unwrap());
    assert_eq!(signal.to_session, "v1session");
    assert_eq!(cam.mesh.viewer_count(), 1);
}

#[test]
fn subscriptions_wait_for_the_broker_and_viewers_also_watch_statuses() {
    let mut v = viewer("v1");
    v.join("home");
    assert!(drain(&mut v).is_empty());
    v.broker_connected(t());
    let effects = drain(&mut v);
    let [Effect::Subscribe { filters, token }] = &effects[..] else {
        panic!("expected one subscription, got {effects:?}");
    };
    assert_eq!(
        *filters,
        vec![
            "meshcam/rooms/home/peers/+".to_string(),
            "meshcam/rooms/home/signal/v1/+".to_string(),
            "meshcam/devices/+/status".to_string(),
        ]
    );
    // Another token (the caller's own subscription) is not a room's.
    let own = v.subscription_token();
    assert!(!v.subscribed(own, t()));
    assert!(drain(&mut v).is_empty());
    // A room joined while connected subscribes at once; a camera does not
    // watch statuses.
    let mut cam = camera();
    cam.broker_connected(t());
    cam.join("home");
    let effects = drain(&mut cam);
    let [Effect::Subscribe { filters, .. }] = &effects[..] else {
        panic!("expected one subscription, got {effects:?}");
    };
    assert_eq!(filters.len(), 2);
    assert!(v.subscribed(*token, t()));
}

#[test]
fn the_viewer_answers_on_the_link_its_camera_offer_opened() {
    let mut v = in_home(viewer("v1"));
    arrives(&mut v, "cam", Role::Camera, t());
    assert!(drain(&mut v).is_empty(), "the camera offers, not us");
    signal_from(
        &mut v,
        "cam",
        SignalBody::Candidate { candidate: cand(1) },
        t(),
    );
    assert!(drain(&mut v).is_empty(), "queued until the offer");
    signal_from(&mut v, "cam", SignalBody::offer("o"), t());
    assert_eq!(
        drain(&mut v),
        vec![
            open(1, false),
            command(1, PeerCommand::ApplyOffer("o".into())),
            command(1, PeerCommand::AddCandidate(cand(1))),
        ]
    );
    assert_eq!(peer_of(&v, 1), Some("cam"));
    v.on_peer_event(PeerEvent::Signal(1, answer()), t());
    let effects = drain(&mut v);
    assert_eq!(sent_to(&v, &effects[0], "cam").body, answer());
}

// ── Routing ────────────────────────────────────────────────────────────────

#[test]
fn answers_and_candidates_go_to_their_own_link() {
    let mut cam = camera_with_v1();
    arrives(&mut cam, "v2", Role::Viewer, t());
    assert_eq!(drain(&mut cam), vec![open(2, true)]);
    assert_eq!(peer_of(&cam, 2), Some("v2"));

    signal_from(&mut cam, "v2", answer(), t());
    assert_eq!(
        drain(&mut cam),
        vec![command(2, PeerCommand::ApplyAnswer("v=0 a".into()))]
    );
    // v1's candidate waits for v1's answer, then follows it to link 1.
    signal_from(
        &mut cam,
        "v1",
        SignalBody::Candidate { candidate: cand(7) },
        t(),
    );
    assert!(drain(&mut cam).is_empty());
    signal_from(&mut cam, "v1", answer(), t());
    assert_eq!(
        drain(&mut cam),
        vec![
            command(1, PeerCommand::ApplyAnswer("v=0 a".into())),
            command(1, PeerCommand::AddCandidate(cand(7))),
        ]
    );
    signal_from(
        &mut cam,
        "v2",
        SignalBody::Candidate { candidate: None },
        t(),
    );
    assert_eq!(
        drain(&mut cam),
        vec![command(2, PeerCommand::AddCandidate(None))]
    );
    assert_eq!(
        cam.signals,
        SignalCounters {
            received: 4,
            dropped: 0
        }
    );
}

#[test]
fn stale_and_unreadable_messages_are_dropped_and_counted() {
    let mut cam = camera_with_v1();
    // Not from v1's current session.
    let me_session = cam.mesh.session("home").unwrap().to_owned();
    let stale = Signal::new("v1oldsession", &me_session, answer()).encode();
    let topic = Topic::Signal {
        room: "home".into(),
        to: "cam".into(),
        from: "v1".into(),
    };
    assert!(cam.on_message(&topic, &Bytes::from(stale), t()));
    // Not JSON, and a presence that names someone else.
    assert!(cam.on_message(&topic, &Bytes::from_static(b"{nope"), t()));
    let other = encode_presence(&Presence::new("v9", "v9session", Role::Viewer, "v9"));
    assert!(cam.on_message(&presence_topic("v2"), &Bytes::from(other), t()));
    assert!(drain(&mut cam).is_empty());
    assert_eq!(
        cam.signals,
        SignalCounters {
            received: 2,
            dropped: 3
        }
    );
    // A topic that is not a room's is not ours.
    let command = Topic::DeviceCommand {
        device: "cam".into(),
    };
    assert!(!cam.on_message(&command, &Bytes::new(), t()));
}

#[test]
fn signals_are_rate_limited_by_the_time_given() {
    let mut cam = camera_with_v1();
    for n in 0..SIGNAL_BURST as u16 + 5 {
        signal_from(
            &mut cam,
            "v1",
            SignalBody::Candidate { candidate: cand(n) },
            t(),
        );
    }
    // Everything past the burst (and past the candidate queue) is dropped.
    assert!(cam.signals.dropped >= 5);
    let dropped = cam.signals.dropped;
    // A minute later on the timeline given, v1 may speak again, whatever
    // the real clock says.
    signal_from(&mut cam, "v1", answer(), at(60_000));
    assert_eq!(cam.signals.dropped, dropped);
    assert!(matches!(
        drain(&mut cam)[..],
        [
            Effect::Command {
                link: 1,
                command: PeerCommand::ApplyAnswer(_)
            },
            ..
        ]
    ));
}

// ── Teardown ───────────────────────────────────────────────────────────────

#[test]
fn a_bye_tears_the_pair_down() {
    let mut cam = camera_with_v1();
    signal_from(
        &mut cam,
        "v1",
        SignalBody::Bye {
            reason: "leaving".into(),
            watch: None,
        },
        t(),
    );
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    // What the closed link's peer connection still reports goes nowhere.
    cam.on_peer_event(
        PeerEvent::Signal(1, SignalBody::Candidate { candidate: cand(1) }),
        t(),
    );
    cam.on_peer_event(PeerEvent::State(1, LinkState::Failed), t());
    assert!(drain(&mut cam).is_empty());
    assert_eq!(cam.next_deadline(), None, "no retry after a bye");
}

#[test]
fn a_cleared_presence_closes_the_connection() {
    let mut cam = camera_with_v1();
    assert!(cam.on_message(&presence_topic("v1"), &Bytes::new(), t()));
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    assert_eq!(cam.mesh.viewer_count(), 0);
}

#[test]
fn leaving_says_bye_closes_and_clears_the_presence() {
    let mut cam = camera_with_v1();
    cam.leave("home", "leaving");
    let effects = drain(&mut cam);
    let bye = sent_to(&cam, &effects[0], "v1");
    assert_eq!(
        bye.body,
        SignalBody::Bye {
            reason: "leaving".into(),
            watch: None,
        }
    );
    assert_eq!(
        effects[1..],
        [
            Effect::ClosePeer { link: 1 },
            Effect::Publish {
                topic: "meshcam/rooms/home/peers/cam".into(),
                payload: Vec::new(),
                retain: true,
            },
            Effect::Unsubscribe {
                filter: "meshcam/rooms/home/peers/+".into()
            },
            Effect::Unsubscribe {
                filter: "meshcam/rooms/home/signal/cam/+".into()
            },
        ]
    );
    assert!(cam.mesh.rooms().is_empty());
}

#[test]
fn a_viewer_treats_an_offline_camera_as_gone_unless_ice_is_up() {
    let mut v = in_home(viewer("v1"));
    arrives(&mut v, "cam", Role::Camera, t());
    signal_from(&mut v, "cam", SignalBody::offer("o"), t());
    drain(&mut v);
    let status = Topic::DeviceStatus {
        device: "cam".into(),
    };
    let offline = Bytes::from(DeviceStatus::offline("cam").encode());
    v.on_peer_event(PeerEvent::State(1, LinkState::Connected), t());
    assert!(v.on_message(&status, &offline, t()));
    assert!(drain(&mut v).is_empty(), "ICE is still connected");
    v.on_peer_event(PeerEvent::State(1, LinkState::Disconnected), at(10));
    assert!(v.on_message(&status, &offline, at(20)));
    assert_eq!(drain(&mut v), vec![Effect::ClosePeer { link: 1 }]);
}

// ── Connection states ──────────────────────────────────────────────────────

#[test]
fn a_failed_connection_is_closed_and_offered_again_at_the_deadline() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::State(1, LinkState::Connected), at(100));
    cam.on_peer_event(PeerEvent::State(1, LinkState::Failed), at(500));
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    let due = at(500) + retry_backoff(0);
    assert_eq!(cam.next_deadline(), Some(due));
    cam.tick(due - Duration::from_millis(1));
    assert!(drain(&mut cam).is_empty(), "not due yet");
    cam.tick(due);
    assert_eq!(drain(&mut cam), vec![open(2, true)]);
    assert_eq!(peer_of(&cam, 2), Some("v1"));
}

#[test]
fn a_closed_connection_is_offered_again_too() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::State(1, LinkState::Closed), t());
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    cam.tick(cam.next_deadline().expect("a retry"));
    assert_eq!(drain(&mut cam), vec![open(2, true)]);
    assert_eq!(peer_of(&cam, 2), Some("v1"));
}

#[test]
fn a_peer_error_is_a_failure() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(
        PeerEvent::Error(1, crate::peer::PeerError::Setup("no route".into())),
        t(),
    );
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    assert_eq!(cam.next_deadline(), Some(t() + retry_backoff(0)));
}

#[test]
fn a_replaced_connection_is_offered_afresh_at_once() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::State(1, LinkState::Replaced), t());
    assert_eq!(
        drain(&mut cam),
        vec![Effect::ClosePeer { link: 1 }, open(2, true)]
    );
    assert_eq!(peer_of(&cam, 2), Some("v1"));
}

#[test]
fn a_lost_connection_gets_one_ice_restart() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::State(1, LinkState::Connected), t());
    cam.on_peer_event(PeerEvent::State(1, LinkState::Disconnected), at(10));
    assert_eq!(drain(&mut cam), vec![command(1, PeerCommand::RestartIce)]);
    cam.on_peer_event(PeerEvent::State(1, LinkState::Disconnected), at(20));
    assert!(drain(&mut cam).is_empty());
}

#[test]
fn a_viewer_that_cannot_decode_hears_why_and_is_not_offered_again() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::Incompatible(1, "no H.264".into()), t());
    let effects = drain(&mut cam);
    assert_eq!(
        sent_to(&cam, &effects[0], "v1").body,
        SignalBody::Bye {
            reason: "no H.264".into(),
            watch: None,
        }
    );
    assert_eq!(effects[1..], [Effect::ClosePeer { link: 1 }]);
    assert_eq!(cam.next_deadline(), None);
}

#[test]
fn events_for_the_caller_are_handed_back() {
    let mut cam = camera_with_v1();
    let back = cam.on_peer_event(PeerEvent::KeyframeRequest(1), t());
    assert!(matches!(back, Some(PeerEvent::KeyframeRequest(1))));
    assert!(drain(&mut cam).is_empty());
}

#[test]
fn over_max_viewers_a_viewer_hears_full() {
    let mut cam = camera_with_v1();
    arrives(&mut cam, "v2", Role::Viewer, t());
    arrives(&mut cam, "v3", Role::Viewer, t());
    let effects = drain(&mut cam);
    assert_eq!(effects[0], open(2, true));
    assert_eq!(peer_of(&cam, 2), Some("v2"));
    assert_eq!(
        sent_to(&cam, &effects[1], "v3").body,
        SignalBody::Bye {
            reason: "full".into(),
            watch: None,
        }
    );
    assert_eq!(effects.len(), 2);
}

// ── Timers ─────────────────────────────────────────────────────────────────

#[test]
fn nothing_is_timed_without_a_negotiation_under_way() {
    let mut cam = in_home(camera());
    assert_eq!(cam.next_deadline(), None);
    cam.tick(at(3_600_000));
    assert!(drain(&mut cam).is_empty());
}

#[test]
fn a_connection_that_never_comes_up_fails_at_its_deadline() {
    let mut cam = camera_with_v1();
    let due = t() + NEGOTIATION_TIMEOUT;
    assert_eq!(cam.next_deadline(), Some(due));
    cam.tick(due - Duration::from_millis(1));
    assert!(drain(&mut cam).is_empty());
    cam.tick(due);
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    // The retry is the next deadline, and it opens a new link.
    let retry = cam.next_deadline().expect("a retry");
    assert_eq!(retry, due + retry_backoff(0));
    cam.tick(retry);
    assert_eq!(drain(&mut cam), vec![open(2, true)]);
    assert_eq!(peer_of(&cam, 2), Some("v1"));
}

#[test]
fn after_a_reconnect_a_peer_whose_presence_does_not_return_is_gone() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::State(1, LinkState::Connected), t());
    cam.broker_disconnected();
    cam.broker_connected(at(1000));
    let [Effect::Subscribe { token, .. }] = drain(&mut cam)[..] else {
        panic!("the room is subscribed again");
    };
    cam.subscribed(token, at(1100));
    drain(&mut cam);
    let due = at(1000) + PRESENCE_CONFIRM_TIMEOUT;
    assert_eq!(cam.next_deadline(), Some(due));
    cam.tick(due - Duration::from_millis(1));
    assert!(drain(&mut cam).is_empty());
    cam.tick(due);
    assert_eq!(drain(&mut cam), vec![Effect::ClosePeer { link: 1 }]);
    assert_eq!(cam.next_deadline(), None);
}

#[test]
fn a_presence_that_returns_after_a_reconnect_keeps_the_connection() {
    let mut cam = camera_with_v1();
    cam.on_peer_event(PeerEvent::State(1, LinkState::Connected), t());
    cam.broker_connected(at(1000));
    drain(&mut cam);
    arrives(&mut cam, "v1", Role::Viewer, at(1200));
    assert!(drain(&mut cam).is_empty());
    assert_eq!(cam.next_deadline(), None);
}

#[test]
fn a_tick_at_the_deadline_leaves_nothing_due() {
    // Driving the timer from next_deadline() never spins: after a tick at
    // the deadline, the next one is later (or there is none).
    let mut cam = in_home(participant("cam", Role::Camera, 8));
    for (n, id) in ["v1", "v2", "v3"].into_iter().enumerate() {
        arrives(&mut cam, id, Role::Viewer, at(n as u64 * 300));
    }
    cam.on_peer_event(PeerEvent::State(2, LinkState::Failed), at(1000));
    let mut now = t();
    let mut ticks = 0;
    while let Some(due) = cam.next_deadline() {
        assert!(
            due > now || ticks == 0,
            "deadline {due:?} not after {now:?}"
        );
        now = due;
        cam.tick(now);
        ticks += 1;
        if ticks == 20 {
            break;
        }
    }
    assert!(ticks > 3, "failures, retries and their timeouts came due");
}
