//! The gatherer against a STUN server played here: its requests read, its
//! answers made, its time driven. A TURN server is real in the send
//! loop's tests (coturn).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::crypto::{self, RTCCryptoProvider};
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, METHOD_ALLOCATE, Message, Setter};
use rtc::stun::xoraddr::XorMappedAddress;

use super::client::RETRY_FIRST;
use super::*;

const LOCAL: &str = "192.168.1.20:50000";
const STUN: &str = "203.0.113.1:3478";
const MAPPED: &str = "198.51.100.7:61000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn crypto() -> Arc<dyn RTCCryptoProvider> {
    crypto::default_provider().unwrap()
}

fn stun_server() -> Server {
    Server {
        url: "stun:stun.example.net".into(),
        address: addr(STUN),
        turn: None,
    }
}

fn events(g: &mut Gatherer) -> Vec<Gathered> {
    std::iter::from_fn(|| g.poll_event()).collect()
}

/// The binding requests the gatherer sent, decoded.
fn requests(g: &mut Gatherer) -> Vec<Message> {
    std::iter::from_fn(|| g.poll_transmit())
        .flat_map(|t| {
            assert_eq!((t.local, t.remote), (addr(LOCAL), addr(STUN)));
            t.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
        })
        .map(|raw| {
            let mut m = Message::new();
            m.raw = raw;
            m.decode().unwrap();
            m
        })
        .collect()
}

/// The server's success answer to `request`, telling `mapped`.
fn answer(request: &Message, mapped: SocketAddr) -> Vec<u8> {
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: mapped.ip(),
            port: mapped.port(),
        }),
    ];
    m.build(&setters).unwrap();
    m.raw
}

#[test]
fn a_socket_behind_a_nat_gets_its_mapped_address_as_a_candidate_for_every_connection() {
    let now = Instant::now();
    let mut g = Gatherer::new(now, &[addr(LOCAL)], &[stun_server()], &crypto());
    let sent = requests(&mut g);
    assert_eq!(sent.len(), 1);
    assert!(g.owns(addr(LOCAL), addr(STUN)));
    assert!(!g.owns(addr(LOCAL), addr("203.0.113.2:3478")));

    g.handle_datagram(
        now,
        addr(LOCAL),
        addr(STUN),
        &answer(&sent[0], addr(MAPPED)),
    );
    let found = events(&mut g);
    let [Gathered::Candidate(c), Gathered::Complete] = &found[..] else {
        panic!("{found:?}");
    };
    assert!(
        c.candidate
            .contains("198.51.100.7 61000 typ srflx raddr 192.168.1.20 rport 50000"),
        "{}",
        c.candidate
    );
    assert_eq!(c.sdp_mline_index, Some(0), "the bundled section");
    assert_eq!(g.candidates(), std::slice::from_ref(c));
    assert!(g.complete());
}

#[test]
fn without_a_nat_the_mapped_address_is_the_host_candidate_and_adds_nothing() {
    let now = Instant::now();
    let mut g = Gatherer::new(now, &[addr(LOCAL)], &[stun_server()], &crypto());
    let sent = requests(&mut g);
    g.handle_datagram(now, addr(LOCAL), addr(STUN), &answer(&sent[0], addr(LOCAL)));
    assert_eq!(events(&mut g), [Gathered::Complete]);
    assert!(g.candidates().is_empty());
}

#[test]
fn a_silent_server_is_said_and_asked_again_with_backoff_and_a_late_answer_still_counts() {
    let start = Instant::now();
    let mut g = Gatherer::new(start, &[addr(LOCAL)], &[stun_server()], &crypto());
    let mut failed_at = None;
    // The client resends until its transaction times out.
    while failed_at.is_none() {
        let now = g.poll_timeout().expect("a deadline while asking");
        assert!(now - start < Duration::from_secs(30), "never gave up");
        g.handle_timeout(now);
        let state = &g.servers()[0];
        if let Some(error) = &state.error {
            assert_eq!(state.url, "stun:stun.example.net");
            assert_eq!(error, "binding: no answer");
            failed_at = Some(now);
        }
    }
    assert!(g.complete(), "a failure settles gathering");
    assert_eq!(events(&mut g), [Gathered::Complete]);
    requests(&mut g);
    // Asked again after the first backoff.
    let again = g.poll_timeout().unwrap();
    assert_eq!(again, failed_at.unwrap() + RETRY_FIRST);
    g.handle_timeout(again);
    let sent = requests(&mut g);
    assert_eq!(sent.len(), 1);
    g.handle_datagram(
        again,
        addr(LOCAL),
        addr(STUN),
        &answer(&sent[0], addr(MAPPED)),
    );
    assert!(matches!(&events(&mut g)[..], [Gathered::Candidate(_)]));
    let state = &g.servers()[0];
    assert_eq!(
        (state.error.as_deref(), state.mapped),
        (None, Some(addr(MAPPED)))
    );
}

#[test]
fn an_answer_to_no_request_of_ours_is_ignored() {
    let now = Instant::now();
    let mut g = Gatherer::new(now, &[addr(LOCAL)], &[stun_server()], &crypto());
    requests(&mut g);
    let mut stranger = Message::new();
    stranger
        .build(&[
            Box::<rtc::stun::message::TransactionId>::default(),
            Box::new(BINDING_SUCCESS),
        ])
        .unwrap();
    let forged = answer(&stranger, addr(MAPPED));
    g.handle_datagram(now, addr(LOCAL), addr(STUN), &forged);
    g.handle_datagram(now, addr(LOCAL), addr(STUN), b"not stun at all");
    assert!(events(&mut g).is_empty());
    assert!(g.candidates().is_empty());
}

#[test]
fn servers_of_the_other_address_family_are_not_asked() {
    let now = Instant::now();
    let v6 = Server {
        url: "stun:[2001:db8::1]".into(),
        address: addr("[2001:db8::1]:3478"),
        turn: None,
    };
    let mut g = Gatherer::new(now, &[addr(LOCAL)], &[v6], &crypto());
    assert!(g.poll_transmit().is_none());
    assert_eq!(events(&mut g), [Gathered::Complete]);
}

#[test]
fn a_stun_and_a_turn_url_of_one_server_are_one_client_asking_both() {
    let now = Instant::now();
    let turn = Server {
        url: "turn:stun.example.net".into(),
        address: addr(STUN),
        turn: Some(Credentials {
            username: "cam".into(),
            password: "secret".into(),
        }),
    };
    let mut g = Gatherer::new(now, &[addr(LOCAL)], &[stun_server(), turn], &crypto());
    let states = g.servers();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].url, "turn:stun.example.net");
    // A binding and an allocation, both to the one server.
    let sent = requests(&mut g);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().any(|m| m.typ == BINDING_REQUEST));
    assert!(sent.iter().any(|m| m.typ.method == METHOD_ALLOCATE));
}
