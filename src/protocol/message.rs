//! The JSON payloads of PROTOCOL.md as types, with decoding that enforces the
//! size limit, the version and the id rules before anything else sees them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{is_peer_id, is_room, is_session};

/// The protocol version this program speaks.
pub const VERSION: u32 = 1;
/// Payloads larger than this are not parsed.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The largest MQTT packet a participant takes, and the broker limit
/// PROTOCOL.md asks for. An MQTT client drops its whole connection over a
/// bigger packet, and over a retained one again at every reconnect: anyone
/// in a room could cut a camera off. Within this, an oversized payload is
/// only dropped and counted.
pub const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Why an inbound payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is over the 64 KiB limit")]
    TooLarge(usize),
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("protocol version {0:?} is not supported (expected 1)")]
    WrongVersion(Option<u64>),
    #[error("{0}")]
    Invalid(String),
}

/// Parses a payload as a JSON object after checking its size and `v`.
fn parse_versioned(payload: &[u8]) -> Result<serde_json::Map<String, Value>, DecodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(DecodeError::NotJson("payload is not a JSON object".into()));
    };
    match map.get("v").map(Value::as_u64) {
        Some(Some(1)) => Ok(map),
        Some(v) => Err(DecodeError::WrongVersion(v)),
        None => Err(DecodeError::WrongVersion(None)),
    }
}

fn from_map<T: serde::de::DeserializeOwned>(
    map: serde_json::Map<String, Value>,
) -> Result<T, DecodeError> {
    serde_json::from_value(Value::Object(map)).map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// What a participant is in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Camera,
    Viewer,
}

/// A retained presence on `P/rooms/{room}/peers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub v: u32,
    pub id: String,
    pub session: String,
    pub role: Role,
    #[serde(default)]
    pub name: String,
    /// A camera's: where viewers watch it through an SFU, while it
    /// publishes there.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_watch"
    )]
    pub watch: Option<Watch>,
    /// A camera's, when it has a speaker: whether viewers may talk through
    /// it, and who does now.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub talk: Option<TalkState>,
}

/// Talking back through a camera (PROTOCOL.md, "Talking back").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalkState {
    pub enabled: bool,
    /// The viewer that talks now.
    #[serde(default)]
    pub holder: Option<Talker>,
}

/// An ICE server a camera gives a viewer in its offer, in the shape of
/// WebRTC's `RTCIceServer` (PROTOCOL.md, "ICE servers from the camera").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedIceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// A viewer that talks through a camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Talker {
    pub room: String,
    pub peer: String,
    #[serde(default)]
    pub name: String,
}

/// A `talk` signal's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TalkAction {
    /// Viewer to camera: may I talk?
    Request,
    /// Viewer to camera: I am done.
    Release,
    /// Camera to viewer: talk; the camera's next offer takes your sound.
    Granted,
    /// Camera to viewer: not now (`reason`, and the `holder`).
    Refused,
    /// Camera to viewer: your turn is over (`reason`).
    Ended,
}

/// Where a camera's viewers watch it through an SFU (PROTOCOL.md,
/// "Watching from an SFU"). `kind` is kept as a string: a viewer ignores a
/// kind it does not know, and the rest of the message with it stays valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// `janus-videoroom`; kinds a viewer does not know it ignores.
    pub kind: String,
    /// The Janus HTTP API.
    pub url: String,
    /// The Janus VideoRoom room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<u64>,
}

/// A pointer that does not parse is no pointer: the presence or `bye` that
/// carries it is still taken.
fn lenient_watch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Watch>, D::Error> {
    lenient(d)
}

/// An optional field that does not parse is absent: the message that
/// carries it is still taken.
fn lenient<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

impl Presence {
    pub fn new(id: &str, session: &str, role: Role, name: &str) -> Self {
        Self {
            v: VERSION,
            id: id.into(),
            session: session.into(),
            role,
            name: name.into(),
            watch: None,
            talk: None,
        }
    }

    /// Decodes a presence published on the topic of `topic_peer`.
    /// An empty payload is a leave and decodes to `Ok(None)`.
    pub fn decode(payload: &[u8], topic_peer: &str) -> Result<Option<Self>, DecodeError> {
        if payload.is_empty() {
            return Ok(None);
        }
        let presence: Presence = from_map(parse_versioned(payload)?)?;
        if presence.id != topic_peer {
            return Err(DecodeError::Invalid(format!(
                "presence id {:?} disagrees with its topic ({topic_peer:?})",
                presence.id
            )));
        }
        if !is_session(&presence.session) {
            return Err(DecodeError::Invalid(
                "session must match [A-Za-z0-9_-]{8,64}".into(),
            ));
        }
        if presence.name.len() > 256 {
            return Err(DecodeError::Invalid("name is longer than 256 bytes".into()));
        }
        Ok(Some(presence))
    }
}

/// An ICE candidate as browsers serialise `RTCIceCandidate.toJSON()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

/// The body of a signal message, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SignalBody {
    Offer {
        sdp: String,
        /// From a camera: the ICE servers this viewer may use, with
        /// credentials minted for it; absent when the camera has none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<OfferedIceServer>,
    },
    Answer {
        sdp: String,
    },
    /// `candidate: null` is end-of-candidates.
    Candidate {
        candidate: Option<Candidate>,
    },
    /// Talking back (PROTOCOL.md, "Talking back").
    Talk {
        action: TalkAction,
        /// Why refused or ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// With `refused`: who talks now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<Talker>,
    },
    Bye {
        #[serde(default)]
        reason: ByeReason,
        /// With `reason: "full"`: where to watch instead.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "lenient_watch"
        )]
        watch: Option<Watch>,
    },
}

impl SignalBody {
    /// An offer that gives no ICE servers.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self::Offer {
            sdp: sdp.into(),
            ice_servers: Vec::new(),
        }
    }
}

/// Why a `bye` ends a session. `full` is the reason a peer acts on (it
/// watches elsewhere, or waits); any other is text for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ByeReason {
    /// The camera has no place for another viewer.
    Full,
    /// Anything else, as it was said.
    Said(String),
}

impl Default for ByeReason {
    fn default() -> Self {
        Self::Said(String::new())
    }
}

impl From<String> for ByeReason {
    fn from(reason: String) -> Self {
        match reason.as_str() {
            "full" => Self::Full,
            _ => Self::Said(reason),
        }
    }
}

impl From<&str> for ByeReason {
    fn from(reason: &str) -> Self {
        reason.to_owned().into()
    }
}

impl From<ByeReason> for String {
    fn from(reason: ByeReason) -> Self {
        match reason {
            ByeReason::Full => "full".to_owned(),
            ByeReason::Said(text) => text,
        }
    }
}

impl std::fmt::Display for ByeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByeReason::Full => f.write_str("full"),
            ByeReason::Said(text) => f.write_str(text),
        }
    }
}

impl SignalBody {
    pub fn kind(&self) -> &'static str {
        match self {
            SignalBody::Offer { .. } => "offer",
            SignalBody::Answer { .. } => "answer",
            SignalBody::Candidate { .. } => "candidate",
            SignalBody::Talk { .. } => "talk",
            SignalBody::Bye { .. } => "bye",
        }
    }
}

/// A signal message on `P/rooms/{room}/signal/{to}/{from}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub v: u32,
    pub session: String,
    pub to_session: String,
    #[serde(flatten)]
    pub body: SignalBody,
}

/// The largest SDP we accept; a real offer for one video track is a few KiB.
pub const MAX_SDP: usize = 32 * 1024;

impl Signal {
    pub fn new(session: &str, to_session: &str, body: SignalBody) -> Self {
        Self {
            v: VERSION,
            session: session.into(),
            to_session: to_session.into(),
            body,
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let signal: Signal = from_map(parse_versioned(payload)?)?;
        if !is_session(&signal.session) || !is_session(&signal.to_session) {
            return Err(DecodeError::Invalid(
                "session and to_session must match [A-Za-z0-9_-]{8,64}".into(),
            ));
        }
        match &signal.body {
            SignalBody::Offer { sdp, .. } | SignalBody::Answer { sdp } if sdp.len() > MAX_SDP => {
                Err(DecodeError::Invalid(format!(
                    "sdp of {} bytes is over the {MAX_SDP} byte limit",
                    sdp.len()
                )))
            }
            SignalBody::Candidate { candidate: Some(c) } if c.candidate.len() > 1024 => Err(
                DecodeError::Invalid("candidate is longer than 1024 bytes".into()),
            ),
            _ => Ok(signal),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings and enums cannot fail.
        serde_json::to_vec(self).expect("a signal always serialises")
    }
}

/// A command id: 1 to 128 bytes (replies echo it).
fn is_command_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128
}

/// A command on `P/devices/{dev}/cmd`, after the envelope checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub cmd: String,
    pub reply_to: Option<String>,
    /// The whole object, for the command's own arguments.
    pub args: serde_json::Map<String, Value>,
}

/// A command that could not be decoded, with what is known for the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    /// The command's `id` when it had one.
    pub id: Option<String>,
    pub error: DecodeError,
}

impl Command {
    pub fn decode(payload: &[u8]) -> Result<Self, CommandError> {
        // Another version's fields mean what that version says, its `id`
        // included: the error reply carries `"id":null` (PROTOCOL.md).
        let map = parse_versioned(payload).map_err(|error| CommandError { id: None, error })?;
        let id = match map.get("id") {
            Some(Value::String(id)) if is_command_id(id) => id.clone(),
            _ => {
                return Err(CommandError {
                    id: None,
                    error: DecodeError::Invalid(
                        "command needs a string id of 1 to 128 bytes".into(),
                    ),
                });
            }
        };
        let fail = |message: &str| CommandError {
            id: Some(id.clone()),
            error: DecodeError::Invalid(message.into()),
        };
        let cmd = match map.get("cmd") {
            Some(Value::String(cmd)) => cmd.clone(),
            _ => return Err(fail("command needs a string cmd")),
        };
        let reply_to = match map.get("reply_to") {
            None | Some(Value::Null) => None,
            Some(Value::String(topic)) => Some(topic.clone()),
            Some(_) => return Err(fail("reply_to must be a string")),
        };
        Ok(Command {
            id,
            cmd,
            reply_to,
            args: map,
        })
    }

    /// A required string argument naming a room.
    pub fn room_arg(&self) -> Result<String, String> {
        match self.args.get("room") {
            Some(Value::String(room)) if is_room(room) => Ok(room.clone()),
            _ => Err("room name must match [A-Za-z0-9_-]{1,64}".into()),
        }
    }
}

/// Error codes of replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    TooLarge,
    UnknownCommand,
    NotFound,
    Busy,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyError {
    pub code: ErrorCode,
    pub message: String,
}

/// The reply to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    pub id: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
}

impl Reply {
    pub fn ok(id: &str, result: Value) -> Self {
        Self {
            v: VERSION,
            id: Some(id.into()),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            id: id.map(str::to_owned),
            ok: false,
            result: None,
            error: Some(ReplyError {
                code,
                message: message.into(),
            }),
        }
    }

    /// The reply to a command that could not be decoded.
    pub fn for_decode_error(err: &CommandError) -> Self {
        let code = match err.error {
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        };
        Self::error(err.id.as_deref(), code, err.error.to_string())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply always serialises")
    }
}

/// Video parameters as status reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// The retained device status on `P/devices/{dev}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub v: u32,
    pub state: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DeviceStatus {
    /// The will and clean-shutdown status: `{"v":1,"state":"offline","id":...}`.
    pub fn offline(id: &str) -> Self {
        Self {
            v: VERSION,
            state: "offline".into(),
            id: id.into(),
            name: None,
            version: None,
            rooms: None,
            viewers: None,
            max_viewers: None,
            video: None,
            started_at: None,
            error: None,
        }
    }

    pub fn decode(payload: &[u8], topic_device: &str) -> Result<Self, DecodeError> {
        let status: DeviceStatus = from_map(parse_versioned(payload)?)?;
        if status.id != topic_device || !is_peer_id(&status.id) {
            return Err(DecodeError::Invalid(
                "status id disagrees with its topic".into(),
            ));
        }
        Ok(status)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status always serialises")
    }
}

/// Serialises a presence (infallible for these types).
pub fn encode_presence(p: &Presence) -> Vec<u8> {
    serde_json::to_vec(p).expect("a presence always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_in_the_documented_shape() {
        let s = Signal::new(
            "sessionA1",
            "sessionB2",
            SignalBody::Candidate {
                candidate: Some(Candidate {
                    candidate: "candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                }),
            },
        );
        let json: Value = serde_json::from_slice(&s.encode()).unwrap();
        assert_eq!(json["type"], "candidate");
        assert_eq!(json["candidate"]["sdpMid"], "0");
        assert_eq!(Signal::decode(&s.encode()).unwrap(), s);

        let eoc = br#"{"v":1,"type":"candidate","session":"sessionA1","to_session":"sessionB2","candidate":null}"#;
        assert_eq!(
            Signal::decode(eoc).unwrap().body,
            SignalBody::Candidate { candidate: None }
        );
    }

    #[test]
    fn bad_signals_are_refused_with_a_reason() {
        assert!(matches!(
            Signal::decode(b"not json"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            Signal::decode(
                br#"{"v":2,"type":"bye","session":"sessionA1","to_session":"sessionB2"}"#
            ),
            Err(DecodeError::WrongVersion(Some(2)))
        ));
        assert!(matches!(
            Signal::decode(
                br#"{"v":1,"type":"shout","session":"sessionA1","to_session":"sessionB2"}"#
            ),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            Signal::decode(br#"{"v":1,"type":"bye","session":"x","to_session":"sessionB2"}"#),
            Err(DecodeError::Invalid(_))
        ));
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert!(matches!(
            Signal::decode(&big),
            Err(DecodeError::TooLarge(_))
        ));
        let long_sdp = format!(
            r#"{{"v":1,"type":"offer","session":"sessionA1","to_session":"sessionB2","sdp":"{}"}}"#,
            "x".repeat(MAX_SDP + 1)
        );
        assert!(matches!(
            Signal::decode(long_sdp.as_bytes()),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn presence_must_match_its_topic() {
        let p = Presence::new("v-1", "sessionA1", Role::Viewer, "Ann");
        let bytes = encode_presence(&p);
        assert_eq!(Presence::decode(&bytes, "v-1").unwrap(), Some(p));
        assert!(Presence::decode(&bytes, "v-2").is_err());
        assert_eq!(Presence::decode(b"", "v-1").unwrap(), None);
        assert!(
            Presence::decode(
                br#"{"v":1,"id":"v-1","session":"sessionA1","role":"boss"}"#,
                "v-1"
            )
            .is_err()
        );
    }

    #[test]
    fn a_pointer_round_trips_and_a_broken_one_is_no_pointer() {
        let mut p = Presence::new("cam", "sessionA1", Role::Camera, "Cam");
        p.watch = Some(Watch {
            kind: "janus-videoroom".into(),
            url: "http://sfu:8088/janus".into(),
            room: Some(1234),
        });
        let bytes = encode_presence(&p);
        assert!(String::from_utf8_lossy(&bytes).contains(
            r#""watch":{"kind":"janus-videoroom","url":"http://sfu:8088/janus","room":1234}"#
        ));
        assert_eq!(Presence::decode(&bytes, "cam").unwrap(), Some(p));
        let broken =
            br#"{"v":1,"id":"cam","session":"sessionA1","role":"camera","watch":{"url":7}}"#;
        let p = Presence::decode(broken, "cam").unwrap().unwrap();
        assert_eq!(p.watch, None, "the presence stands, without a pointer");
        let bye = br#"{"v":1,"session":"sessionA1","to_session":"sessionB1","type":"bye","reason":"full","watch":"x"}"#;
        let bye = Signal::decode(bye).unwrap();
        assert_eq!(
            bye.body,
            SignalBody::Bye {
                reason: ByeReason::Full,
                watch: None
            }
        );
    }

    #[test]
    fn a_bye_reason_is_full_or_text_and_encodes_as_it_came() {
        for (wire, reason) in [
            ("full", ByeReason::Full),
            ("Full", ByeReason::Said("Full".into())),
            ("leaving", ByeReason::Said("leaving".into())),
        ] {
            let json = format!(
                r#"{{"v":1,"session":"sessionA1","to_session":"sessionB1","type":"bye","reason":"{wire}"}}"#
            );
            let signal = Signal::decode(json.as_bytes()).unwrap();
            let SignalBody::Bye { reason: got, .. } = &signal.body else {
                panic!("a bye");
            };
            assert_eq!(*got, reason);
            let again = String::from_utf8(signal.encode()).unwrap();
            assert!(again.contains(&format!(r#""reason":"{wire}""#)), "{again}");
        }
        let no_reason = br#"{"v":1,"session":"sessionA1","to_session":"sessionB1","type":"bye"}"#;
        let SignalBody::Bye { reason, .. } = Signal::decode(no_reason).unwrap().body else {
            panic!("a bye");
        };
        assert_eq!(reason, ByeReason::Said(String::new()));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let p = br#"{"v":1,"id":"v-1","session":"sessionA1","role":"viewer","extra":[1,2]}"#;
        assert!(Presence::decode(p, "v-1").unwrap().is_some());
    }

    #[test]
    fn commands_keep_their_id_for_the_error_reply() {
        let c = Command::decode(br#"{"v":1,"id":"c-1","cmd":"join","room":"home"}"#).unwrap();
        assert_eq!(c.cmd, "join");
        assert_eq!(c.room_arg().unwrap(), "home");

        // Another version: its id is not ours to read.
        for other in [
            &br#"{"v":9,"id":"c-2","cmd":"status"}"#[..],
            br#"{"v":2,"id":"c-2"}"#,
        ] {
            let wrong_version = Command::decode(other).unwrap_err();
            assert_eq!(wrong_version.id, None);
            let reply = Reply::for_decode_error(&wrong_version);
            assert_eq!(reply.error.unwrap().code, ErrorCode::BadRequest);
        }

        let no_id = Command::decode(br#"{"v":1,"cmd":"status"}"#).unwrap_err();
        assert_eq!(no_id.id, None);

        let big = vec![b' '; MAX_PAYLOAD + 1];
        let too_large = Command::decode(&big).unwrap_err();
        assert_eq!(
            Reply::for_decode_error(&too_large).error.unwrap().code,
            ErrorCode::TooLarge
        );

        let bad_room = Command::decode(br#"{"v":1,"id":"c-3","cmd":"join","room":"a/b"}"#).unwrap();
        assert!(bad_room.room_arg().is_err());
    }

    #[test]
    fn replies_carry_null_id_when_unknown() {
        let r = Reply::error(None, ErrorCode::BadRequest, "nope");
        let json: Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(json["id"], Value::Null);
        assert_eq!(json["error"]["code"], "bad_request");
        assert_eq!(json["ok"], false);
    }
}
