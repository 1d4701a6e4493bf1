//! Every rule of PROTOCOL.md's "Who offers" and "Signal messages", driven
//! through [`Mesh`] with no sockets and no sleeps: time is an input.

use super::*;
use crate::protocol::Candidate;

const CAM_SESSION: &str = "camsession1";

/// The start of every test's timeline.
fn t() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn camera() -> Mesh {
    Mesh::new(
        Me {
            id: "cam".into(),
            role: Role::Camera,
            name: "Cam".into(),
        },
        2,
    )
}

fn viewer(id: &str) -> Mesh {
    Mesh::new(
        Me {
            id: id.into(),
            role: Role::Viewer,
            name: id.into(),
        },
        8,
    )
}

fn presence(id: &str, session: &str, role: Role) -> Option<Presence> {
    Some(Presence::new(id, session, role, id))
}

/// A mesh that joined `home` and had its subscription acknowledged.
fn joined(mut mesh: Mesh, session: &str) -> Mesh {
    assert_eq!(
        mesh.join("home", session),
        vec![Action::Subscribe {
            room: "home".into()
        }]
    );
    let actions = mesh.subscribed("home", t());
    assert!(matches!(&actions[..], [Action::PublishPresence { .. }]));
    mesh
}

fn connects(actions: &[Action]) -> Vec<(LinkId, String, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect {
                link,
                peer,
                offerer,
                ..
            } => Some((*link, peer.clone(), *offerer)),
            _ => None,
        })
        .collect()
}

fn sent_byes(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                signal:
                    Signal {
                        body: SignalBody::Bye { reason, .. },
                        ..
                    },
                ..
            } => Some((to.clone(), reason.to_string())),
            _ => None,
        })
        .collect()
}

fn sig(session: &str, to_session: &str, body: SignalBody) -> Signal {
    Signal::new(session, to_session, body)
}

/// A host candidate numbered `n` (also used by the participant's tests).
pub(crate) fn cand(n: u16) -> Option<Candidate> {
    Some(Candidate {
        candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    })
}

fn answer() -> SignalBody {
    SignalBody::Answer { sdp: "v=0".into() }
}

/// Camera that offered to viewer `v1` (session `v1session`); returns the link.
fn camera_offering_to_v1() -> (Mesh, LinkId) {
    let mut cam = joined(camera(), CAM_SESSION);
    let actions = cam.on_presence("home", "v1", presence("v1", "v1session", Role::Viewer), t());
    let c = connects(&actions);
    assert_eq!(c.len(), 1);
    assert!(c[0].2, "the camera offers to a viewer");
    (cam, c[0].0)
}

// ── Who offers ─────────────────────────────────────────────────────────────

#[test]
fn camera_offers_to_viewer() {
    camera_offering_to_v1();
}

#[test]
fn viewer_waits_for_the_camera_offer() {
    let mut v = joined(viewer("v1"), "v1session");
    let actions = v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    assert!(connects(&actions).is_empty());
    let actions = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(CAM_SESSION, "v1session", SignalBody::offer("v=0")),
            t(),
        )
        .unwrap();
    let c = connects(&actions);
    assert_eq!(c.len(), 1);
    assert!(!c[0].2, "the viewer answers");
    assert!(matches!(actions.last(), Some(Action::ApplyOffer { .. })));
}

#[test]
fn between_viewers_the_smaller_id_offers() {
    let mut a = joined(viewer("alice"), "alicesession");
    let mut b = joined(viewer("bob"), "bobsession");
    let to_bob = a.on_presence(
        "home",
        "bob",
        presence("bob", "bobsession", Role::Viewer),
        t(),
    );
    let to_alice = b.on_presence(
        "home",
        "alice",
        presence("alice", "alicesession", Role::Viewer),
        t(),
    );
    assert_eq!(connects(&to_bob).len(), 1);
    assert!(connects(&to_alice).is_empty());
    // Byte-wise: "B" (0x42) sorts before "a" (0x61).
    let mut upper = joined(viewer("B"), "uppersession");
    let acts = upper.on_presence("home", "a", presence("a", "asession1", Role::Viewer), t());
    assert_eq!(connects(&acts).len(), 1);
}

#[test]
fn cameras_do_not_connect_to_cameras() {
    let mut cam = joined(camera(), CAM_SESSION);
    let acts = cam.on_presence(
        "home",
        "cam2",
        presence("cam2", "cam2session", Role::Camera),
        t(),
    );
    assert!(acts.is_empty());
    let err = cam
        .on_signal(
            "home",
            "cam",
            "cam2",
            sig("cam2session", CAM_SESSION, SignalBody::offer("v=0")),
            t(),
        )
        .unwrap_err();
    assert_eq!(err, DropReason::UnexpectedOffer);
}

#[test]
fn offers_wait_until_our_presence_is_announced() {
    let mut cam = camera();
    cam.join("home", CAM_SESSION);
    let acts = cam.on_presence("home", "v1", presence("v1", "v1session", Role::Viewer), t());
    assert!(connects(&acts).is_empty(), "not announced yet");
    let acts = cam.subscribed("home", t());
    assert!(matches!(acts[0], Action::PublishPresence { .. }));
    assert_eq!(connects(&acts).len(), 1, "offer right after the presence");
}

#[test]
fn a_new_session_replaces_the_old_connection() {
    let (mut cam, old) = camera_offering_to_v1();
    let acts = cam.on_presence(
        "home",
        "v1",
        presence("v1", "v1session2", Role::Viewer),
        t(),
    );
    assert_eq!(acts[0], Action::Close { link: old });
    let c = connects(&acts);
    assert_eq!(c.len(), 1);
    assert_ne!(c[0].0, old);
    // The same session again (a re-announce after reconnect) changes nothing.
    let acts = cam.on_presence(
        "home",
        "v1",
        presence("v1", "v1session2", Role::Viewer),
        t(),
    );
    assert!(acts.is_empty());
}

#[test]
fn the_answerer_drops_its_link_when_the_offerer_rejoins() {
    let mut v = joined(viewer("v1"), "v1session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    let acts = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(CAM_SESSION, "v1session", SignalBody::offer("o")),
            t(),
        )
        .unwrap();
    let link = connects(&acts)[0].0;
    let acts = v.on_presence(
        "home",
        "cam",
        presence("cam", "camsession2", Role::Camera),
        t(),
    );
    assert_eq!(acts, vec![Action::Close { link }]);
}

// ── Signal messages ────────────────────────────────────────────────────────

#[test]
fn stale_sessions_are_dropped() {
    let (mut cam, _) = camera_offering_to_v1();
    let wrong_to = cam.on_signal(
        "home",
        "cam",
        "v1",
        sig("v1session", "oldcamsess", answer()),
        t(),
    );
    assert_eq!(wrong_to.unwrap_err(), DropReason::StaleToSession);
    let wrong_from = cam.on_signal(
        "home",
        "cam",
        "v1",
        sig("v1oldsess", CAM_SESSION, answer()),
        t(),
    );
    assert_eq!(wrong_from.unwrap_err(), DropReason::StaleSession);
    let ok = cam.on_signal(
        "home",
        "cam",
        "v1",
        sig("v1session", CAM_SESSION, answer()),
        t(),
    );
    assert!(matches!(&ok.unwrap()[..], [Action::ApplyAnswer { .. }]));
}

#[test]
fn signals_from_strangers_are_dropped() {
    let (mut cam, _) = camera_offering_to_v1();
    let spoof = cam.on_signal(
        "home",
        "cam",
        "mallory",
        sig("mallorysess", CAM_SESSION, answer()),
        t(),
    );
    assert_eq!(spoof.unwrap_err(), DropReason::UnknownSender);
    let other_room = cam.on_signal(
        "attic",
        "cam",
        "v1",
        sig("v1session", CAM_SESSION, answer()),
        t(),
    );
    assert_eq!(other_room.unwrap_err(), DropReason::UnknownRoom);
    let not_me = cam.on_signal(
        "home",
        "cam2",
        "v1",
        sig("v1session", CAM_SESSION, answer()),
        t(),
    );
    assert_eq!(not_me.unwrap_err(), DropReason::NotForMe);
}

#[test]
fn early_candidates_are_queued_until_the_description() {
    let (mut cam, link) = camera_offering_to_v1();
    for n in 1..=2 {
        let acts = cam
            .on_signal(
                "home",
                "cam",
                "v1",
                sig(
                    "v1session",
                    CAM_SESSION,
                    SignalBody::Candidate { candidate: cand(n) },
                ),
                t(),
            )
            .unwrap();
        assert!(acts.is_empty(), "queued, not applied");
    }
    let acts = cam
        .on_signal(
            "home",
            "cam",
            "v1",
            sig("v1session", CAM_SESSION, answer()),
            t(),
        )
        .unwrap();
    assert_eq!(
        acts,
        vec![
            Action::ApplyAnswer {
                link,
                sdp: "v=0".into()
            },
            Action::AddCandidate {
                link,
                candidate: cand(1)
            },
            Action::AddCandidate {
                link,
                candidate: cand(2)
            },
        ]
    );
    // After the description, candidates (and end-of-candidates) go straight in.
    let acts = cam
        .on_signal(
            "home",
            "cam",
            "v1",
            sig(
                "v1session",
                CAM_SESSION,
                SignalBody::Candidate { candidate: None },
            ),
            t(),
        )
        .unwrap();
    assert_eq!(
        acts,
        vec![Action::AddCandidate {
            link,
            candidate: None
        }]
    );
}

#[test]
fn the_answerer_queues_candidates_that_beat_the_offer() {
    let mut v = joined(viewer("v1"), "v1session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    let acts = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(
                CAM_SESSION,
                "v1session",
                SignalBody::Candidate { candidate: cand(7) },
            ),
            t(),
        )
        .unwrap();
    assert!(acts.is_empty());
    let acts = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(CAM_SESSION, "v1session", SignalBody::offer("o")),
            t(),
        )
        .unwrap();
    let link = connects(&acts)[0].0;
    assert_eq!(
        &acts[1..],
        &[
            Action::ApplyOffer {
                link,
                sdp: "o".into()
            },
            Action::AddCandidate {
                link,
                candidate: cand(7)
            }
        ]
    );
}

#[test]
fn the_candidate_queue_is_bounded() {
    let (mut cam, _) = camera_offering_to_v1();
    for n in 0..MAX_QUEUED_CANDIDATES as u16 {
        cam.on_signal(
            "home",
            "cam",
            "v1",
            sig(
                "v1session",
                CAM_SESSION,
                SignalBody::Candidate { candidate: cand(n) },
            ),
            t(),
        )
        .unwrap();
    }
    let over = cam.on_signal(
        "home",
        "cam",
        "v1",
        sig(
            "v1session",
            CAM_SESSION,
            SignalBody::Candidate {
                candidate: cand(999),
            },
        ),
        t(),
    );
    assert_eq!(over.unwrap_err(), DropReason::CandidateQueueFull);
}

#[test]
fn an_answer_without_an_offer_is_dropped() {
    let mut v = joined(viewer("v1"), "v1session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    let err = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(CAM_SESSION, "v1session", answer()),
            t(),
        )
        .unwrap_err();
    assert_eq!(err, DropReason::UnexpectedAnswer);
}

#[test]
fn bye_closes_the_pair_and_ends_the_session() {
    let (mut cam, link) = camera_offering_to_v1();
    let acts = cam
        .on_signal(
            "home",
            "cam",
            "v1",
            sig(
                "v1session",
                CAM_SESSION,
                SignalBody::Bye {
                    reason: "leaving".into(),
                    watch: None,
                },
            ),
            t(),
        )
        .unwrap();
    assert_eq!(acts, vec![Action::Close { link }]);
    assert_eq!(cam.viewer_count(), 0);
    // No offer again to that session, even after a failure timer would fire.
    let t0 = Instant::now();
    assert!(cam.on_tick(t0 + Duration::from_secs(60)).is_empty());
    // A new session of the same peer is offered to.
    let acts = cam.on_presence(
        "home",
        "v1",
        presence("v1", "v1session2", Role::Viewer),
        t(),
    );
    assert_eq!(connects(&acts).len(), 1);
}

#[test]
fn max_viewers_answers_bye_full() {
    let mut cam = joined(camera(), CAM_SESSION);
    for id in ["v1", "v2"] {
        let acts = cam.on_presence(
            "home",
            id,
            presence(id, &format!("{id}session"), Role::Viewer),
            t(),
        );
        assert_eq!(connects(&acts).len(), 1);
    }
    let acts = cam.on_presence("home", "v3", presence("v3", "v3session", Role::Viewer), t());
    assert!(connects(&acts).is_empty());
    assert_eq!(
        sent_byes(&acts),
        vec![("v3".to_string(), "full".to_string())]
    );
    assert_eq!(cam.viewer_count(), 2);
    // A leave frees a slot, but the refused session is not offered to.
    cam.on_presence("home", "v1", None, t());
    assert!(cam.on_tick(t() + Duration::from_secs(5)).is_empty());
    // It may try again with a new session.
    let acts = cam.on_presence(
        "home",
        "v3",
        presence("v3", "v3session2", Role::Viewer),
        t(),
    );
    assert_eq!(connects(&acts).len(), 1);
}

#[test]
fn a_retry_that_finds_the_camera_full_hears_bye_full() {
    let (mut cam, link) = camera_offering_to_v1();
    cam.on_link_state(link, LinkState::Failed, t());
    for v in ["v2", "v3"] {
        let acts = cam.on_presence(
            "home",
            v,
            presence(v, &format!("{v}session"), Role::Viewer),
            t(),
        );
        assert_eq!(connects(&acts).len(), 1, "{v} takes a free place");
    }
    let acts = cam.on_tick(t() + retry_backoff(0));
    assert!(connects(&acts).is_empty(), "no place is left: {acts:?}");
    assert_eq!(sent_byes(&acts), vec![("v1".to_owned(), "full".to_owned())]);
    assert_eq!(
        cam.next_deadline().map(|d| d > t() + retry_backoff(0)),
        Some(true)
    );
}

#[test]
fn a_leave_closes_the_connection() {
    let (mut cam, link) = camera_offering_to_v1();
    assert_eq!(cam.viewer_count(), 1);
    assert_eq!(
        cam.on_presence("home", "v1", None, t()),
        vec![Action::Close { link }]
    );
    assert_eq!(cam.viewer_count(), 0);
    // Signals from the departed peer are dropped now.
    let late = cam.on_signal(
        "home",
        "cam",
        "v1",
        sig("v1session", CAM_SESSION, answer()),
        t(),
    );
    assert_eq!(late.unwrap_err(), DropReason::UnknownSender);
}

#[test]
fn a_cleared_presence_is_believed_two_seconds_later_while_connected() {
    let (mut cam, link) = camera_offering_to_v1();
    cam.on_link_state(link, LinkState::Connected, t());
    assert!(cam.on_presence("home", "v1", None, t()).is_empty());
    assert_eq!(cam.next_deadline(), Some(t() + PRESENCE_CLEAR_GRACE));
    assert!(
        cam.on_tick(t() + PRESENCE_CLEAR_GRACE - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(
        cam.on_tick(t() + PRESENCE_CLEAR_GRACE),
        vec![Action::Close { link }]
    );
    assert_eq!(cam.viewer_count(), 0);
}

#[test]
fn a_clear_followed_by_our_broker_dropping_waits_for_the_reconnect() {
    // A broker shutting down cleanly publishes every will, then goes.
    let (mut cam, link) = camera_offering_to_v1();
    cam.on_link_state(link, LinkState::Connected, t());
    assert!(cam.on_presence("home", "v1", None, t()).is_empty());
    cam.broker_disconnected();
    assert!(cam.on_tick(t() + PRESENCE_CLEAR_GRACE).is_empty());
    let back = t() + Duration::from_secs(3);
    cam.broker_connected(back);
    cam.subscribed("home", back);
    // The viewer's retained presence comes back: the connection stays.
    assert!(
        cam.on_presence("home", "v1", presence_of_v1(), back)
            .is_empty()
    );
    assert!(cam.on_tick(back + PRESENCE_CONFIRM_TIMEOUT).is_empty());
    assert_eq!(cam.viewer_count(), 1);
}

#[test]
fn a_cleared_peer_whose_connection_fails_is_not_offered_again() {
    let (mut cam, link) = camera_offering_to_v1();
    cam.on_link_state(link, LinkState::Connected, t());
    cam.on_presence("home", "v1", None, t());
    assert_eq!(
        cam.on_link_state(link, LinkState::Failed, t()),
        vec![Action::Close { link }]
    );
    assert_eq!(cam.next_deadline(), None, "no retry for a peer that left");
}

#[test]
fn outgoing_signals_carry_both_sessions_while_the_link_is_current() {
    let (mut cam, link) = camera_offering_to_v1();
    let Some(Action::Send { to, signal, .. }) = cam.outgoing(link, SignalBody::offer("o")) else {
        panic!("current link must produce a signal");
    };
    assert_eq!(to, "v1");
    assert_eq!(signal.session, CAM_SESSION);
    assert_eq!(signal.to_session, "v1session");
    cam.on_presence("home", "v1", None, t());
    assert_eq!(cam.outgoing(link, SignalBody::offer("o")), None);
}

#[test]
fn leaving_says_bye_to_everyone_and_clears_presence() {
    let (mut cam, link) = camera_offering_to_v1();
    let acts = cam.leave("home", "leaving");
    assert_eq!(
        sent_byes(&acts),
        vec![("v1".to_string(), "leaving".to_string())]
    );
    assert!(acts.contains(&Action::Close { link }));
    assert!(acts.contains(&Action::ClearPresence {
        room: "home".into()
    }));
    assert!(!cam.is_in("home"));
}

// ── Failures and retries ───────────────────────────────────────────────────

#[test]
fn disconnected_tries_an_ice_restart_once() {
    let (mut cam, link) = camera_offering_to_v1();
    let t0 = Instant::now();
    cam.on_link_state(link, LinkState::Connected, t0);
    assert_eq!(
        cam.on_link_state(link, LinkState::Disconnected, t0),
        vec![Action::RestartIce { link }]
    );
    assert!(
        cam.on_link_state(link, LinkState::Disconnected, t0)
            .is_empty()
    );
}

#[test]
fn a_connected_after_an_ice_restart_counts_only_once_the_peer_answers() {
    let (mut cam, link) = camera_offering_to_v1();
    let t0 = t();
    cam.on_link_state(link, LinkState::Connected, t0);
    assert_eq!(
        cam.on_link_state(link, LinkState::Disconnected, t0),
        vec![Action::RestartIce { link }]
    );
    // The ICE agent says Connected, but the peer has not answered the
    // restart: the reconnect deadline stands, and the silent peer is dropped.
    cam.on_link_state(link, LinkState::Connected, t0 + Duration::from_secs(2));
    assert_eq!(
        cam.on_tick(t0 + RECONNECT_TIMEOUT),
        vec![Action::Close { link }]
    );

    // A live peer answers its restart: the Connected seen before counts.
    let (mut cam, link) = camera_offering_to_v1();
    cam.on_link_state(link, LinkState::Connected, t0);
    cam.on_link_state(link, LinkState::Disconnected, t0);
    cam.on_link_state(link, LinkState::Connected, t0 + Duration::from_secs(1));
    let restart_answer = sig("v1session", CAM_SESSION, answer());
    let acts = cam
        .on_signal(
            "home",
            "cam",
            "v1",
            restart_answer,
            t0 + Duration::from_secs(1),
        )
        .unwrap();
    assert!(matches!(acts[..], [Action::ApplyAnswer { .. }, ..]));
    assert!(cam.on_tick(t0 + Duration::from_secs(60)).is_empty());
    assert_eq!(cam.viewer_count(), 1);
}

#[test]
fn a_failed_pair_is_offered_again_with_backoff() {
    let (mut cam, link) = camera_offering_to_v1();
    let t0 = Instant::now();
    assert_eq!(
        cam.on_link_state(link, LinkState::Failed, t0),
        vec![Action::Close { link }]
    );
    assert_eq!(cam.next_deadline(), Some(t0 + Duration::from_secs(1)));
    assert!(cam.on_tick(t0 + Duration::from_millis(999)).is_empty());
    let acts = cam.on_tick(t0 + Duration::from_secs(1));
    let second = connects(&acts)[0].0;
    assert_ne!(second, link);
    // Events of the replaced link are ignored.
    assert!(cam.on_link_state(link, LinkState::Failed, t0).is_empty());
    // The next failure waits twice as long; the cap is 30 s.
    let t1 = t0 + Duration::from_secs(1);
    cam.on_link_state(second, LinkState::Failed, t1);
    assert_eq!(cam.next_deadline(), Some(t1 + Duration::from_secs(2)));
    assert_eq!(retry_backoff(10), MAX_RETRY_BACKOFF);
}

#[test]
fn a_peer_that_answers_from_a_new_connection_is_offered_afresh_at_once() {
    let (mut cam, link) = camera_offering_to_v1();
    let t0 = Instant::now();
    let acts = cam.on_link_state(link, LinkState::Replaced, t0);
    assert_eq!(acts[0], Action::Close { link });
    let fresh = connects(&acts);
    assert_eq!(fresh.len(), 1, "{acts:?}");
    assert_ne!(fresh[0].0, link);
    assert_eq!((fresh[0].1.as_str(), fresh[0].2), ("v1", true));
    // The old link's events no longer count.
    assert!(cam.on_link_state(link, LinkState::Failed, t0).is_empty());
}

#[test]
fn the_answerer_does_not_retry() {
    let mut v = joined(viewer("v1"), "v1session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    let acts = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(CAM_SESSION, "v1session", SignalBody::offer("o")),
            t(),
        )
        .unwrap();
    let link = connects(&acts)[0].0;
    let t0 = Instant::now();
    assert_eq!(
        v.on_link_state(link, LinkState::Failed, t0),
        vec![Action::Close { link }]
    );
    assert_eq!(v.next_deadline(), None);
}

#[test]
fn a_reconnect_keeps_connections_and_republishes_the_same_presence() {
    let (mut cam, link) = camera_offering_to_v1();
    let t0 = Instant::now();
    cam.on_link_state(link, LinkState::Connected, t0);
    let acts = cam.broker_connected(t0);
    assert_eq!(
        acts,
        vec![Action::Subscribe {
            room: "home".into()
        }]
    );
    let acts = cam.subscribed("home", t());
    let [Action::PublishPresence { presence, .. }] = &acts[..] else {
        panic!("expected the presence again, got {acts:?}");
    };
    assert_eq!(presence.session, CAM_SESSION);
    // The viewer's retained presence comes back: nothing changes.
    assert!(
        cam.on_presence("home", "v1", presence_of_v1(), t())
            .is_empty()
    );
    assert!(cam.on_tick(t0 + PRESENCE_CONFIRM_TIMEOUT).is_empty());
    assert_eq!(cam.viewer_count(), 1);
}

fn presence_of_v1() -> Option<Presence> {
    presence("v1", "v1session", Role::Viewer)
}

#[test]
fn a_peer_whose_presence_does_not_come_back_is_gone() {
    let (mut cam, link) = camera_offering_to_v1();
    let t0 = Instant::now();
    cam.broker_connected(t0);
    cam.subscribed("home", t());
    assert_eq!(cam.next_deadline(), Some(t0 + PRESENCE_CONFIRM_TIMEOUT));
    assert!(cam.on_tick(t0 + Duration::from_secs(9)).is_empty());
    assert_eq!(
        cam.on_tick(t0 + PRESENCE_CONFIRM_TIMEOUT),
        vec![Action::Close { link }]
    );
}

#[test]
fn an_offline_camera_is_a_leave_unless_ice_is_connected() {
    let mut v = joined(viewer("v1"), "v1session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    let acts = v
        .on_signal(
            "home",
            "v1",
            "cam",
            sig(CAM_SESSION, "v1session", SignalBody::offer("o")),
            t(),
        )
        .unwrap();
    let link = connects(&acts)[0].0;
    v.on_link_state(link, LinkState::Connected, Instant::now());
    assert!(v.on_device_offline("cam").is_empty(), "ICE still connected");
    v.on_link_state(link, LinkState::Disconnected, Instant::now());
    assert_eq!(v.on_device_offline("cam"), vec![Action::Close { link }]);
}

#[test]
fn a_connection_that_never_comes_up_fails_and_is_offered_again() {
    let (mut cam, link) = camera_offering_to_v1();
    assert_eq!(cam.next_deadline(), Some(t() + NEGOTIATION_TIMEOUT));
    assert!(
        cam.on_tick(t() + NEGOTIATION_TIMEOUT - Duration::from_millis(1))
            .is_empty()
    );
    let failed_at = t() + NEGOTIATION_TIMEOUT;
    assert_eq!(cam.on_tick(failed_at), vec![Action::Close { link }]);
    assert_eq!(cam.viewer_count(), 0, "the stuck connection frees its slot");
    let again = cam.on_tick(failed_at + retry_backoff(0));
    assert_eq!(connects(&again).len(), 1);
}

#[test]
fn a_connected_link_has_no_negotiation_deadline() {
    let (mut cam, link) = camera_offering_to_v1();
    cam.on_link_state(link, LinkState::Connected, t());
    assert_eq!(cam.next_deadline(), None);
    assert!(cam.on_tick(t() + Duration::from_secs(3600)).is_empty());
}

#[test]
fn a_viewer_that_cannot_decode_is_refused_until_it_rejoins() {
    let (mut cam, link) = camera_offering_to_v1();
    let acts = cam.refuse(link, "no H.264: the viewer decodes only VP8");
    assert_eq!(
        sent_byes(&acts),
        vec![(
            "v1".to_string(),
            "no H.264: the viewer decodes only VP8".to_string()
        )]
    );
    assert!(acts.contains(&Action::Close { link }));
    assert_eq!(cam.viewer_count(), 0);
    // No retry for that session, however long we wait.
    assert!(cam.on_tick(t() + Duration::from_secs(120)).is_empty());
    // Refusing a link that is gone does nothing.
    assert!(cam.refuse(link, "again").is_empty());
    // A new session (another browser, say) is offered to.
    let acts = cam.on_presence(
        "home",
        "v1",
        presence("v1", "v1session2", Role::Viewer),
        t(),
    );
    assert_eq!(connects(&acts).len(), 1);
}

#[test]
fn a_flooding_peer_is_rate_limited_alone() {
    let (mut cam, _) = camera_offering_to_v1();
    cam.on_presence("home", "v2", presence("v2", "v2session", Role::Viewer), t());
    let candidate = |n| {
        sig(
            "v1session",
            CAM_SESSION,
            SignalBody::Candidate { candidate: cand(n) },
        )
    };
    let mut results: Vec<_> = (0..SIGNAL_BURST as u16 + 10)
        .map(|n| cam.on_signal("home", "cam", "v1", candidate(n), t()))
        .collect();
    let limited = results.split_off(SIGNAL_BURST as usize);
    // Within the burst, signals are handled (queued, here: no answer yet, and
    // the candidate queue has its own limit); beyond it they are dropped.
    assert!(results.iter().all(|r| r != &Err(DropReason::RateLimited)));
    assert!(limited.iter().all(|r| r == &Err(DropReason::RateLimited)));
    // Another peer is not affected.
    let other = sig("v2session", CAM_SESSION, answer());
    assert_ne!(
        cam.on_signal("home", "cam", "v2", other, t()),
        Err(DropReason::RateLimited)
    );
    // A second later, v1 may speak again.
    let later = t() + Duration::from_secs(1);
    assert!(
        cam.on_signal(
            "home",
            "cam",
            "v1",
            sig("v1session", CAM_SESSION, answer()),
            later
        )
        .is_ok()
    );
}

#[test]
fn rooms_are_limited_but_a_room_we_are_in_is_no_new_one() {
    let mut cam = camera();
    for n in 0..MAX_ROOMS {
        let room = format!("r{n}");
        assert!(cam.can_join(&room));
        cam.join(&room, &format!("session{n:04}"));
    }
    assert!(!cam.can_join("one-too-many"));
    assert!(cam.can_join("r0"));
    cam.leave("r0", "leaving");
    assert!(cam.can_join("one-too-many"));
}

// ── Order of actions ───────────────────────────────────────────────────────

fn bye(to: &str, to_session: &str, reason: &str) -> Action {
    Action::Send {
        room: "home".into(),
        to: to.into(),
        signal: sig(
            CAM_SESSION,
            to_session,
            SignalBody::Bye {
                reason: reason.into(),
                watch: None,
            },
        ),
    }
}

fn connect(link: LinkId, peer: &str) -> Action {
    Action::Connect {
        link,
        room: "home".into(),
        peer: peer.into(),
        offerer: true,
    }
}

#[test]
fn peers_known_before_the_announce_are_offered_in_id_order() {
    // Three viewers, seen in no particular order while the subscription is
    // being acknowledged, and room for two: which two get an offer and which
    // one hears "full" is decided by peer id, on every run.
    let mut cam = camera();
    cam.join("home", CAM_SESSION);
    for id in ["v3", "v1", "v2"] {
        let acts = cam.on_presence(
            "home",
            id,
            presence(id, &format!("{id}session"), Role::Viewer),
            t(),
        );
        assert!(acts.is_empty(), "not announced yet");
    }
    assert_eq!(
        cam.subscribed("home", t()),
        vec![
            Action::PublishPresence {
                room: "home".into(),
                presence: Presence::new("cam", CAM_SESSION, Role::Camera, "Cam"),
            },
            connect(1, "v1"),
            connect(2, "v2"),
            bye("v3", "v3session", "full"),
        ]
    );
}

#[test]
fn leaving_says_bye_in_id_order() {
    let mut cam = joined(camera(), CAM_SESSION);
    cam.set_max_viewers(8);
    for id in ["vc", "va", "vb"] {
        cam.on_presence(
            "home",
            id,
            presence(id, &format!("{id}session"), Role::Viewer),
            t(),
        );
    }
    // Links in arrival order: vc 1, va 2, vb 3; byes by peer id.
    assert_eq!(
        cam.leave("home", "leaving"),
        vec![
            bye("va", "vasession", "leaving"),
            Action::Close { link: 2 },
            bye("vb", "vbsession", "leaving"),
            Action::Close { link: 3 },
            bye("vc", "vcsession", "leaving"),
            Action::Close { link: 1 },
            Action::ClearPresence {
                room: "home".into()
            },
            Action::Unsubscribe {
                room: "home".into()
            },
        ]
    );
}

#[test]
fn a_tick_at_the_deadline_handles_everything_due_in_order() {
    let mut cam = joined(camera(), CAM_SESSION);
    cam.set_max_viewers(8);
    for id in ["vz", "vy", "vx"] {
        cam.on_presence(
            "home",
            id,
            presence(id, &format!("{id}session"), Role::Viewer),
            t(),
        );
    }
    let due = cam.next_deadline().expect("three negotiations under way");
    assert_eq!(due, t() + NEGOTIATION_TIMEOUT);
    // The three stuck connections fail together, by peer id.
    assert_eq!(
        cam.on_tick(due),
        vec![
            Action::Close { link: 3 },
            Action::Close { link: 2 },
            Action::Close { link: 1 },
        ]
    );
    // Nothing due is left behind: the next deadline is later.
    let retry = cam.next_deadline().expect("three retries");
    assert_eq!(retry, due + retry_backoff(0));
    assert_eq!(
        cam.on_tick(retry),
        vec![connect(4, "vx"), connect(5, "vy"), connect(6, "vz")]
    );
    assert!(cam.next_deadline().is_some_and(|d| d > retry));
}

fn pointer() -> Watch {
    Watch {
        kind: "janus-videoroom".into(),
        url: "http://sfu:8088/janus".into(),
        room: Some(1234),
    }
}

#[test]
fn viewers_turned_away_are_the_sfu_demand_and_hear_where_to_watch() {
    let mut cam = joined(camera(), CAM_SESSION);
    assert_eq!(
        cam.set_sfu(Some(pointer()), false),
        vec![],
        "not published yet"
    );
    for id in ["v1", "v2", "v3"] {
        cam.on_presence(
            "home",
            id,
            presence(id, &format!("{id}session"), Role::Viewer),
            t(),
        );
    }
    assert_eq!(cam.overflow_count(), 1);
    let acts = cam.on_presence("home", "v4", presence("v4", "v4session", Role::Viewer), t());
    let Some(Action::Send { signal, .. }) = acts.first() else {
        panic!("no bye: {acts:?}");
    };
    assert_eq!(
        signal.body,
        SignalBody::Bye {
            reason: "full".into(),
            watch: Some(pointer()),
        }
    );
    assert_eq!(cam.overflow_count(), 2);
    // Published: the presence carries the pointer, once.
    let acts = cam.set_sfu(Some(pointer()), true);
    let [Action::PublishPresence { presence, .. }] = &acts[..] else {
        panic!("one presence: {acts:?}");
    };
    assert_eq!(presence.watch, Some(pointer()));
    assert_eq!(cam.set_sfu(Some(pointer()), true), vec![]);
    // The viewers turned away leave: no demand is left.
    cam.on_presence("home", "v3", None, t());
    cam.on_presence("home", "v4", None, t());
    assert_eq!(cam.overflow_count(), 0);
    let acts = cam.set_sfu(Some(pointer()), false);
    let [Action::PublishPresence { presence, .. }] = &acts[..] else {
        panic!("one presence: {acts:?}");
    };
    assert_eq!(presence.watch, None, "no pointer once unpublished");
}

#[test]
fn a_viewer_turned_away_learns_the_pointer_from_the_bye_or_the_presence() {
    let mut v = joined(viewer("v1"), "v1session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    assert_eq!(v.sfu_pointer(), None);
    let bye = |watch| {
        Signal::new(
            CAM_SESSION,
            "v1session",
            SignalBody::Bye {
                reason: "full".into(),
                watch,
            },
        )
    };
    v.on_signal("home", "v1", "cam", bye(None), t()).unwrap();
    assert_eq!(v.sfu_pointer(), None, "full, with nowhere to go yet");
    // The camera starts publishing: its presence points there.
    let mut published = presence("cam", CAM_SESSION, Role::Camera).unwrap();
    published.watch = Some(pointer());
    v.on_presence("home", "cam", Some(published), t());
    assert_eq!(v.sfu_pointer(), Some(("cam", &pointer())));

    let mut v = joined(viewer("v2"), "v2session");
    v.on_presence(
        "home",
        "cam",
        presence("cam", CAM_SESSION, Role::Camera),
        t(),
    );
    let bye = Signal::new(
        CAM_SESSION,
        "v2session",
        SignalBody::Bye {
            reason: "full".into(),
            watch: Some(pointer()),
        },
    );
    v.on_signal("home", "v2", "cam", bye, t()).unwrap();
    assert_eq!(v.sfu_pointer(), Some(("cam", &pointer())));
}
