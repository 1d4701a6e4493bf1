//! What each fuzz target checks, in one place for the `cargo fuzz` targets
//! (`fuzz/fuzz_targets/*.rs`) and for the corpus replay of the normal test
//! run (`tests/fuzz_corpus.rs`); both include this file with `#[path]`.
//!
//! Every function takes raw bytes as they come off the broker, hands them to
//! the very function the daemon calls on them, and asserts what PROTOCOL.md
//! and the decoders promise of the outcome. A panic is a bug, in the parser
//! or in what we believe of it.

// Each fuzz target calls one of these functions, the replay all of them.
#![allow(dead_code)]

use meshcam::config::{BITRATE_RANGE, FPS_RANGE, HEIGHT_RANGE, MAX_VIEWERS_RANGE, WIDTH_RANGE};
use meshcam::control::{self, Refusal, Request};
use meshcam::peer::answer::accepts_video;
use meshcam::protocol::ids::{is_peer_id, is_room, is_session};
use meshcam::protocol::{
    Candidate, Command, DecodeError, DeviceStatus, MAX_PAYLOAD, MAX_SDP, Presence, Reply, Signal,
    SignalBody, Topic, Topics, VERSION, encode_presence,
};
use serde_json::Value;

/// What a target does with one input: returns, or panics on a bug.
pub type Check = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus folder.
pub const TARGETS: [(&str, Check); 6] = [
    ("presence", presence),
    ("signal", signal),
    ("command", command),
    ("status", status),
    ("answer_sdp", answer_sdp),
    ("topic", topic),
];

/// The default topic prefix, the one the PROTOCOL.md examples use.
const PREFIX: &str = "meshcam";
/// The peer (or device) whose topic a presence (or status) arrives on.
const PEER: &str = "cam-kitchen";
/// Another valid peer id: the same payload on its topic must be refused.
const OTHER_PEER: &str = "v-8f2c";
/// A camera's session (16 characters, as `new_session` makes them) and a
/// viewer's, for the signals the camera builds itself.
const CAMERA_SESSION: &str = "Zk3pQ9vR2mX7tY4w";
const VIEWER_SESSION: &str = "q3V8xK2m";
/// The largest candidate line a signal may carry.
const MAX_CANDIDATE: usize = 1024;

/// Every decoder refuses an oversized payload before parsing it.
fn assert_size_rule<T: std::fmt::Debug>(data: &[u8], decoded: &Result<T, DecodeError>) {
    if data.len() > MAX_PAYLOAD {
        assert_eq!(
            decoded.as_ref().err(),
            Some(&DecodeError::TooLarge(data.len())),
            "an oversized payload must be refused as too large"
        );
    }
}

/// `Presence::decode` on `P/rooms/{room}/peers/cam-kitchen`, as
/// `Participant::on_message` calls it.
pub fn presence(data: &[u8]) {
    let decoded = Presence::decode(data, PEER);
    assert_size_rule(data, &decoded);
    match decoded {
        Ok(None) => assert!(data.is_empty(), "only an empty payload is a leave"),
        Ok(Some(p)) => {
            assert_eq!(p.v, VERSION);
            assert_eq!(p.id, PEER, "a presence speaks for its topic's peer");
            assert!(is_session(&p.session));
            assert!(p.name.len() <= 256);
            assert!(
                Presence::decode(data, OTHER_PEER).is_err(),
                "the same presence on another peer's topic is refused"
            );
            // What we publish of it decodes to the same presence.
            let bytes = encode_presence(&p);
            assert!(bytes.len() <= MAX_PAYLOAD);
            assert_eq!(Presence::decode(&bytes, PEER), Ok(Some(p)));
        }
        Err(_) => assert!(!data.is_empty()),
    }
}

/// `Signal::decode` on `P/rooms/{room}/signal/{to}/{from}`; an answer then
/// goes through the same checks as the `answer_sdp` target.
pub fn signal(data: &[u8]) {
    let decoded = Signal::decode(data);
    assert_size_rule(data, &decoded);
    let Ok(s) = decoded else { return };
    assert_eq!(s.v, VERSION);
    assert!(is_session(&s.session) && is_session(&s.to_session));
    match &s.body {
        SignalBody::Offer { sdp, .. } | SignalBody::Answer { sdp } => assert!(sdp.len() <= MAX_SDP),
        SignalBody::Candidate { candidate: Some(c) } => {
            assert!(c.candidate.len() <= MAX_CANDIDATE)
        }
        SignalBody::Candidate { candidate: None }
        | SignalBody::Talk { .. }
        | SignalBody::Bye { .. } => {}
    }
    // Encoding (to forward or to test) and decoding again changes nothing,
    // and `kind` names the `type` on the wire.
    let bytes = s.encode();
    assert!(
        bytes.len() <= MAX_PAYLOAD,
        "a valid signal re-encodes within the limit"
    );
    assert_eq!(Signal::decode(&bytes).as_ref(), Ok(&s));
    let json: Value = serde_json::from_slice(&bytes).expect("a signal encodes to JSON");
    assert_eq!(json["type"], s.body.kind());
    if let SignalBody::Answer { sdp } = &s.body {
        check_answer(sdp);
    }
}

/// `Command::decode` on `P/devices/{dev}/cmd`, then `control::interpret`
/// (which holds the `set` range checks), as `Daemon::on_command` does; and
/// the reply the daemon would publish for every refusal.
pub fn command(data: &[u8]) {
    let topics = Topics::new(PREFIX);
    let command = match Command::decode(data) {
        Ok(command) => command,
        Err(e) => {
            if data.len() > MAX_PAYLOAD {
                assert_eq!(e.error, DecodeError::TooLarge(data.len()));
                assert_eq!(e.id, None, "an oversized command is not parsed for its id");
            }
            if let Some(id) = &e.id {
                assert!(
                    !id.is_empty() && id.len() <= 128,
                    "only a valid id is echoed"
                );
            }
            let reply = Reply::for_decode_error(&e);
            assert_eq!(reply.id, e.id);
            check_refusal_reply(&reply);
            return;
        }
    };
    assert!(data.len() <= MAX_PAYLOAD);
    assert!(!command.id.is_empty() && command.id.len() <= 128);
    assert_eq!(command.args.get("v").and_then(Value::as_u64), Some(1));
    assert_eq!(
        command.args.get("id"),
        Some(&Value::String(command.id.clone()))
    );
    assert_eq!(
        command.args.get("cmd"),
        Some(&Value::String(command.cmd.clone()))
    );
    let outcome = control::interpret(&command, &topics);
    check_outcome(&command, &outcome, &topics);

    // The command's own object, sent again, is the same command: decoding
    // depends on nothing but the object. (Skipped when re-encoding grows it
    // past the limit, which serde_json's float notation can: `1e15`.)
    let again = serde_json::to_vec(&command.args).expect("a JSON object serialises");
    if again.len() <= MAX_PAYLOAD {
        let again = Command::decode(&again).expect("a decoded command decodes again");
        assert_eq!(
            (&again.id, &again.cmd, &again.reply_to),
            (&command.id, &command.cmd, &command.reply_to)
        );
        assert_eq!(control::interpret(&again, &topics), outcome);
    }
}

fn check_outcome(
    command: &Command,
    outcome: &Result<(Request, Option<String>), Refusal>,
    topics: &Topics,
) {
    let refusal = match outcome {
        Ok((request, reply_to)) => {
            assert_eq!(reply_to, &command.reply_to);
            if let Some(topic) = reply_to {
                assert!(topics.is_client_topic(topic));
            }
            let name = match request {
                Request::Join(room) | Request::Leave(room) => {
                    assert!(is_room(room));
                    assert_eq!(command.args.get("room"), Some(&Value::String(room.clone())));
                    if matches!(request, Request::Join(_)) {
                        "join"
                    } else {
                        "leave"
                    }
                }
                Request::Set(set) => {
                    check_set(command, set);
                    "set"
                }
                Request::Pin(pin) => {
                    if let Some(peer) = &pin.peer {
                        assert_eq!(command.args.get("peer"), Some(&Value::String(peer.clone())));
                    }
                    assert_eq!(
                        pin.layer.map(|l| l as u64),
                        command.args.get("layer").and_then(Value::as_u64)
                    );
                    "pin"
                }
                Request::Snapshot(topic) => {
                    if let Some(topic) = topic {
                        assert!(topics.is_client_topic(topic));
                    }
                    "snapshot"
                }
                Request::Status => "status",
                Request::Stats => "stats",
                Request::Keyframe => "keyframe",
                Request::Restart => "restart",
                Request::Mute(true) => "mute",
                Request::Mute(false) => "unmute",
            };
            assert_eq!(command.cmd, name);
            return;
        }
        Err(refusal) => refusal,
    };
    assert_eq!(refusal.reply.id.as_deref(), Some(command.id.as_str()));
    // Refused on the controller's inbox when that was valid, else on the
    // device's default reply topic: never on a topic the command made up.
    if let Some(topic) = &refusal.reply_to {
        assert_eq!(Some(topic), command.reply_to.as_ref());
        assert!(topics.is_client_topic(topic));
    }
    check_refusal_reply(&refusal.reply);
}

/// Every value of an accepted `set` is the integer given, within its range.
fn check_set(command: &Command, set: &control::SetRequest) {
    assert_ne!(
        set,
        &control::SetRequest::default(),
        "set changes something"
    );
    let given = |key: &str| command.args.get(key).and_then(Value::as_u64);
    let check = |key: &str, value: Option<u64>, (min, max): (u64, u64)| {
        assert_eq!(value, given(key), "{key}");
        if let Some(v) = value {
            assert!((min..=max).contains(&v), "{key} = {v}");
        }
    };
    let wide = |(min, max): (u32, u32)| (u64::from(min), u64::from(max));
    check(
        "bitrate_kbps",
        set.bitrate_kbps.map(u64::from),
        wide(BITRATE_RANGE),
    );
    check("fps", set.fps.map(u64::from), wide(FPS_RANGE));
    check("width", set.width.map(u64::from), wide(WIDTH_RANGE));
    check("height", set.height.map(u64::from), wide(HEIGHT_RANGE));
    let (min, max) = MAX_VIEWERS_RANGE;
    check(
        "max_viewers",
        set.max_viewers.map(|n| n as u64),
        (min as u64, max as u64),
    );
    if let Some(bitrates) = &set.layer_bitrates_kbps {
        assert!(bitrates.windows(2).all(|w| w[0] > w[1]), "{bitrates:?}");
        assert!(bitrates.len() <= meshcam::config::MAX_LOWER_LAYERS);
    }
    if let Some(mode) = set.whip_mode {
        assert_eq!(
            command.args.get("whip_mode").and_then(Value::as_str),
            Some(mode.as_str())
        );
    }
}

/// A refusal is an error reply that reaches the controller: valid JSON,
/// `"v":1`, and within the 64 KiB every payload of the protocol keeps to.
fn check_refusal_reply(reply: &Reply) {
    assert!(!reply.ok);
    assert!(reply.error.is_some() && reply.result.is_none());
    let bytes = reply.encode();
    assert!(
        bytes.len() <= MAX_PAYLOAD,
        "a reply of {} bytes is over the protocol's 64 KiB limit",
        bytes.len()
    );
    let back: Reply = serde_json::from_slice(&bytes).expect("a reply decodes");
    assert_eq!(&back, reply);
    assert_eq!(back.v, VERSION);
}

/// `DeviceStatus::decode` on `P/devices/cam-kitchen/status`, as a viewer's
/// `Participant::on_message` calls it to see a camera go offline.
pub fn status(data: &[u8]) {
    let decoded = DeviceStatus::decode(data, PEER);
    assert_size_rule(data, &decoded);
    let Ok(s) = decoded else { return };
    assert_eq!(s.v, VERSION);
    assert_eq!(s.id, PEER);
    assert!(is_peer_id(&s.id));
    assert!(DeviceStatus::decode(data, OTHER_PEER).is_err());
    let bytes = s.encode();
    assert!(bytes.len() <= MAX_PAYLOAD);
    assert_eq!(DeviceStatus::decode(&bytes, PEER), Ok(s));
}

/// Our own SDP and candidate handling, on any text: the viewer's answer as
/// it travels in a signal and meets `accepts_video` (and the `bye` that a
/// refusal sends back), and the same text as a trickled candidate line.
pub fn answer_sdp(data: &[u8]) {
    // An SDP or a candidate reaches us as a JSON string: always UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let answer = Signal::new(
        VIEWER_SESSION,
        CAMERA_SESSION,
        SignalBody::Answer { sdp: text.into() },
    );
    let wire = answer.encode();
    let arrived = Signal::decode(&wire);
    if wire.len() > MAX_PAYLOAD {
        assert_eq!(arrived, Err(DecodeError::TooLarge(wire.len())));
    } else if text.len() > MAX_SDP {
        assert!(matches!(arrived, Err(DecodeError::Invalid(_))));
    } else {
        assert_eq!(arrived.as_ref(), Ok(&answer));
    }
    check_answer(text);
    check_candidate(text);
}

/// The longest refusal reason: bounded whatever the answer held, so that
/// the `bye` carrying it always fits in a payload.
const MAX_REASON: usize = 2048;

/// The H.264 check of an answer the camera received.
fn check_answer(sdp: &str) {
    let verdict = accepts_video(sdp);
    // Line endings do not matter, nor does a section after the video one.
    assert_eq!(accepts_video(&sdp.replace('\n', "\r\n")), verdict);
    let with_audio = format!("{sdp}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 H264/90000\r\n");
    assert_eq!(accepts_video(&with_audio), verdict);
    let reason = match verdict {
        Ok(()) => {
            assert!(sdp.contains("m=video "));
            assert!(sdp.to_ascii_lowercase().contains("h264"));
            return;
        }
        Err(reason) => reason,
    };
    // Either no H.264 at all, or H.264 in the wrong direction.
    assert!(
        reason.starts_with("no H.264: ")
            || (reason.starts_with("the answer's video is ")
                && reason.ends_with(", not recvonly: the camera only sends")),
        "{reason}"
    );
    assert!(
        reason.len() <= MAX_REASON,
        "a reason of {} bytes",
        reason.len()
    );
    // The reason goes back to the viewer in a `bye`, which must reach it.
    let bye = Signal::new(
        CAMERA_SESSION,
        VIEWER_SESSION,
        SignalBody::Bye {
            reason: meshcam::protocol::ByeReason::Said(reason),
            watch: None,
        },
    );
    let bytes = bye.encode();
    assert!(
        bytes.len() <= MAX_PAYLOAD,
        "the bye of {} bytes is over the protocol's 64 KiB limit",
        bytes.len()
    );
    assert_eq!(Signal::decode(&bytes), Ok(bye));
}

/// A trickled candidate in the shape browsers send survives the wire exactly
/// when it is within the limits.
fn check_candidate(line: &str) {
    let candidate = Signal::new(
        VIEWER_SESSION,
        CAMERA_SESSION,
        SignalBody::Candidate {
            candidate: Some(Candidate {
                candidate: line.into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            }),
        },
    );
    let wire = candidate.encode();
    match Signal::decode(&wire) {
        Ok(back) => {
            assert!(line.len() <= MAX_CANDIDATE);
            assert_eq!(back, candidate);
        }
        Err(e) => assert!(
            line.len() > MAX_CANDIDATE || wire.len() > MAX_PAYLOAD,
            "a candidate within the limits refused: {e}"
        ),
    }
}

/// `Topics::parse` on the topic of every inbound message, as
/// `Daemon::on_message` calls it, and the `reply_to`/`topic` check of
/// commands. Bytes before a NUL (which no MQTT topic holds) are the prefix.
pub fn topic(data: &[u8]) {
    // MQTT topic names are UTF-8: the client library hands us a `String`.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (prefix, topic) = match text.split_once('\0') {
        // The rules `mqtt.prefix` is checked against when the config loads.
        Some((prefix, topic)) => {
            if prefix.is_empty()
                || prefix.contains(['+', '#', '\0'])
                || prefix.starts_with('/')
                || prefix.ends_with('/')
                || topic.contains('\0')
            {
                return;
            }
            (prefix, topic)
        }
        None => (PREFIX, text),
    };
    let topics = Topics::new(prefix);
    let parsed = topics.parse(topic);
    if let Some(parsed) = &parsed {
        // Every id in a parsed topic is valid, and building the topic from
        // them gives back the very topic parsed.
        let rebuilt = match parsed {
            Topic::DeviceStatus { device } => {
                assert!(is_peer_id(device));
                topics.status(device)
            }
            Topic::DeviceCommand { device } => {
                assert!(is_peer_id(device));
                topics.command(device)
            }
            Topic::Presence { room, peer } => {
                assert!(is_room(room) && is_peer_id(peer));
                topics.presence(room, peer)
            }
            Topic::Signal { room, to, from } => {
                assert!(is_room(room) && is_peer_id(to) && is_peer_id(from));
                topics.signal(room, to, from)
            }
        };
        assert_eq!(rebuilt, topic);
    }
    if topics.is_client_topic(topic) {
        assert!(parsed.is_none(), "a client inbox is none of our topics");
        let rest = topic
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("/clients/"))
            .expect("a client topic is under P/clients/");
        let levels: Vec<&str> = rest.split('/').collect();
        assert!(levels.len() >= 2, "at least one level below the client");
        assert!(is_peer_id(levels[0]));
        assert!(
            levels
                .iter()
                .all(|l| !l.is_empty() && !l.contains(['+', '#']))
        );
    }
}
