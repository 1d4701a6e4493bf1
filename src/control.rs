//! Commands from controllers, checked and turned into requests.
//!
//! Sans I/O: the daemon carries a [`Request`] out and publishes the reply;
//! everything that can be refused without touching the camera is refused
//! here, with the error codes of PROTOCOL.md.
//!
//! Owns: the command set and its checks. Must not touch: the camera's state
//! or the broker (the daemon carries requests out).

use serde_json::Value;

use crate::protocol::{Command, ErrorCode, Reply, Topics};

/// Run-time settings a `set` command changes; `None` leaves one alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    pub bitrate_kbps: Option<u32>,
    pub fps: Option<u32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub max_viewers: Option<usize>,
    /// The bitrates of the layers below the top one, best first.
    pub layer_bitrates_kbps: Option<Vec<u32>>,
    pub whip_mode: Option<crate::config::WhipMode>,
    /// Viewers may talk through the camera.
    pub talk: Option<bool>,
    /// The speaker's volume, in percent.
    pub speaker_volume: Option<u32>,
}

/// Holds viewers on a layer, or lets them adapt (`layer: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    /// One viewer; `None`: every viewer.
    pub peer: Option<String>,
    pub layer: Option<usize>,
}

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Join(String),
    Leave(String),
    Status,
    Stats,
    Keyframe,
    Set(SetRequest),
    Pin(PinRequest),
    Restart,
    /// Publish a JPEG to this topic (`None`: the device's snapshot topic).
    Snapshot(Option<String>),
    /// Mute (`true`) or unmute the microphone.
    Mute(bool),
}

/// Where and what to reply when a command is refused before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// `None`: the device's default reply topic.
    pub reply_to: Option<String>,
    pub reply: Reply,
}

/// The commands this camera implements.
pub const COMMANDS: [&str; 11] = [
    "join", "leave", "status", "stats", "keyframe", "set", "pin", "restart", "snapshot", "mute",
    "unmute",
];

/// The longest unknown command name that a refusal quotes back.
const MAX_QUOTED_CHARS: usize = 64;

/// Reads an optional integer argument within `range`.
fn ranged<T>(command: &Command, key: &str, (min, max): (T, T)) -> Result<Option<T>, String>
where
    T: TryFrom<u64> + PartialOrd + Copy + std::fmt::Display,
{
    let Some(value) = command.args.get(key) else {
        return Ok(None);
    };
    let out_of_range = || format!("{key} must be an integer from {min} to {max}");
    let n = value.as_u64().ok_or_else(out_of_range)?;
    let n = T::try_from(n).map_err(|_| out_of_range())?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(Some(n))
}

fn set_request(command: &Command) -> Result<SetRequest, String> {
    use crate::config::{BITRATE_RANGE, FPS_RANGE, HEIGHT_RANGE, MAX_VIEWERS_RANGE, WIDTH_RANGE};
    let set = SetRequest {
        bitrate_kbps: ranged(command, "bitrate_kbps", BITRATE_RANGE)?,
        fps: ranged(command, "fps", FPS_RANGE)?,
        width: ranged(command, "width", WIDTH_RANGE)?,
        height: ranged(command, "height", HEIGHT_RANGE)?,
        max_viewers: ranged(command, "max_viewers", MAX_VIEWERS_RANGE)?,
        layer_bitrates_kbps: layer_bitrates(command)?,
        whip_mode: whip_mode(command)?,
        talk: on_off(command, "talk")?,
        speaker_volume: ranged(
            command,
            "speaker_volume",
            crate::config::SPEAKER_VOLUME_RANGE,
        )?,
    };
    if set == SetRequest::default() {
        return Err(
            "set needs at least one of bitrate_kbps, fps, width, height, max_viewers, \
                    layer_bitrates_kbps, whip_mode, talk, speaker_volume"
                .into(),
        );
    }
    Ok(set)
}

/// A switch: `true` or `"on"`, `false` or `"off"`.
fn on_off(command: &Command, key: &str) -> Result<Option<bool>, String> {
    let Some(value) = command.args.get(key) else {
        return Ok(None);
    };
    match value {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s == "on" => Ok(Some(true)),
        Value::String(s) if s == "off" => Ok(Some(false)),
        _ => Err(format!("{key} must be true, false, \"on\" or \"off\"")),
    }
}

/// `whip_mode`: one of the modes of `whip.mode`.
fn whip_mode(command: &Command) -> Result<Option<crate::config::WhipMode>, String> {
    use crate::config::WhipMode;
    let Some(value) = command.args.get("whip_mode") else {
        return Ok(None);
    };
    let wrong = || format!("whip_mode must be one of {}", WhipMode::NAMES);
    let name = value.as_str().ok_or_else(wrong)?;
    WhipMode::try_from(name.to_owned())
        .map(Some)
        .map_err(|_| wrong())
}

/// `layer_bitrates_kbps`: a list of integers in range, each below the one
/// before. Whether it names every layer is the daemon's to check.
fn layer_bitrates(command: &Command) -> Result<Option<Vec<u32>>, String> {
    use crate::config::{BITRATE_RANGE, LOWER_LAYER_MIN_KBPS, MAX_LOWER_LAYERS};
    let Some(value) = command.args.get("layer_bitrates_kbps") else {
        return Ok(None);
    };
    let (min, max) = (LOWER_LAYER_MIN_KBPS, BITRATE_RANGE.1);
    let wrong = || {
        format!(
            "layer_bitrates_kbps must be a list of at most {MAX_LOWER_LAYERS} integers from \
             {min} to {max}, each below the one before"
        )
    };
    let list = value
        .as_array()
        .filter(|l| l.len() <= MAX_LOWER_LAYERS)
        .ok_or_else(wrong)?;
    let mut bitrates = Vec::with_capacity(list.len());
    for item in list {
        let n = item
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(wrong)?;
        if bitrates.last().is_some_and(|before| n >= *before) {
            return Err(wrong());
        }
        bitrates.push(n);
    }
    Ok(Some(bitrates))
}

/// `pin`: `peer` (optional) and `layer` (an index, or null to adapt).
fn pin_request(command: &Command) -> Result<PinRequest, String> {
    use crate::config::MAX_LOWER_LAYERS;
    let peer = match command.args.get("peer") {
        None | Some(Value::Null) => None,
        Some(Value::String(peer)) if crate::protocol::ids::is_peer_id(peer) => Some(peer.clone()),
        Some(_) => return Err("peer must be a peer id".into()),
    };
    let layer = match command.args.get("layer") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|n| *n as usize <= MAX_LOWER_LAYERS)
                .ok_or_else(|| {
                    format!("layer must be null or a layer index from 0 to {MAX_LOWER_LAYERS}")
                })? as usize,
        ),
    };
    Ok(PinRequest { peer, layer })
}

/// Checks a decoded command. On success, returns the request and the topic
/// to reply on (`None`: the default reply topic).
pub fn interpret(command: &Command, topics: &Topics) -> Result<(Request, Option<String>), Refusal> {
    let refuse = |reply_to: Option<String>, code, message: String| Refusal {
        reply_to,
        reply: Reply::error(Some(&command.id), code, message),
    };
    if let Some(topic) = &command.reply_to
        && !topics.is_client_topic(topic)
    {
        return Err(refuse(
            None,
            ErrorCode::BadRequest,
            format!(
                "reply_to must be a topic under {}/clients/{{client}}/ without wildcards",
                topics.prefix()
            ),
        ));
    }
    let reply_to = command.reply_to.clone();
    let request = match command.cmd.as_str() {
        "join" => Request::Join(
            command
                .room_arg()
                .map_err(|m| refuse(reply_to.clone(), ErrorCode::BadRequest, m))?,
        ),
        "leave" => Request::Leave(
            command
                .room_arg()
                .map_err(|m| refuse(reply_to.clone(), ErrorCode::BadRequest, m))?,
        ),
        "status" => Request::Status,
        "stats" => Request::Stats,
        "keyframe" => Request::Keyframe,
        "restart" => Request::Restart,
        "mute" => Request::Mute(true),
        "unmute" => Request::Mute(false),
        "set" => Request::Set(
            set_request(command).map_err(|m| refuse(reply_to.clone(), ErrorCode::BadRequest, m))?,
        ),
        "pin" => Request::Pin(
            pin_request(command).map_err(|m| refuse(reply_to.clone(), ErrorCode::BadRequest, m))?,
        ),
        "snapshot" => match command.args.get("topic") {
            None | Some(Value::Null) => Request::Snapshot(None),
            Some(Value::String(topic)) if topics.is_client_topic(topic) => {
                Request::Snapshot(Some(topic.clone()))
            }
            Some(_) => {
                return Err(refuse(
                    reply_to,
                    ErrorCode::BadRequest,
                    format!(
                        "topic must be a topic under {}/clients/{{client}}/ without wildcards",
                        topics.prefix()
                    ),
                ));
            }
        },
        other => {
            // Quote the name only when it is short: the reply must stay
            // within the 64 KiB payload limit whatever the command held.
            let named = if other.chars().count() <= MAX_QUOTED_CHARS {
                format!("{other:?}")
            } else {
                format!("of {} bytes", other.len())
            };
            return Err(refuse(
                reply_to,
                ErrorCode::UnknownCommand,
                format!("unknown command {named}; accepted: {}", COMMANDS.join(", ")),
            ));
        }
    };
    Ok((request, reply_to))
}

/// The `{"rooms": [...]}` result of join and leave.
pub fn rooms_result(rooms: &[String]) -> Value {
    serde_json::json!({ "rooms": rooms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(json: &str) -> Command {
        Command::decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn join_leave_and_status_are_understood() {
        let t = Topics::new("meshcam");
        let (r, to) = interpret(
            &cmd(r#"{"v":1,"id":"1","cmd":"join","room":"home","reply_to":"meshcam/clients/c/r"}"#),
            &t,
        )
        .unwrap();
        assert_eq!(r, Request::Join("home".into()));
        assert_eq!(to.as_deref(), Some("meshcam/clients/c/r"));
        let (r, to) =
            interpret(&cmd(r#"{"v":1,"id":"2","cmd":"leave","room":"home"}"#), &t).unwrap();
        assert_eq!(r, Request::Leave("home".into()));
        assert_eq!(to, None);
        assert_eq!(
            interpret(&cmd(r#"{"v":1,"id":"3","cmd":"status"}"#), &t)
                .unwrap()
                .0,
            Request::Status
        );
    }

    #[test]
    fn layer_bitrates_and_pins_are_checked() {
        let t = Topics::new("meshcam");
        let request = |name: &str, args: &str| {
            interpret(
                &cmd(&format!(r#"{{"v":1,"id":"1","cmd":"{name}"{args}}}"#)),
                &t,
            )
            .map(|(r, _)| r)
        };
        let set = |args: &str| request("set", &format!(",{args}"));
        let pin = |args: &str| request("pin", args);
        assert_eq!(
            set(r#""layer_bitrates_kbps":[600,200]"#).unwrap(),
            Request::Set(SetRequest {
                layer_bitrates_kbps: Some(vec![600, 200]),
                ..SetRequest::default()
            })
        );
        for bad in [
            r#"[200,600]"#,
            r#"[10]"#,
            r#""400""#,
            r#"[400,300,200,100]"#,
        ] {
            let refused = set(&format!(r#""layer_bitrates_kbps":{bad}"#)).unwrap_err();
            assert_eq!(
                refused.reply.error.unwrap().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        assert_eq!(
            pin(r#","peer":"v-1","layer":1"#).unwrap(),
            Request::Pin(PinRequest {
                peer: Some("v-1".into()),
                layer: Some(1)
            })
        );
        assert_eq!(
            pin("").unwrap(),
            Request::Pin(PinRequest {
                peer: None,
                layer: None
            })
        );
        assert!(pin(r#","layer":9"#).is_err());
        assert!(pin(r#","peer":"a/b","layer":0"#).is_err());
    }

    #[test]
    fn set_takes_any_subset_within_range() {
        let t = Topics::new("meshcam");
        let (r, _) = interpret(
            &cmd(r#"{"v":1,"id":"1","cmd":"set","bitrate_kbps":1500,"max_viewers":3}"#),
            &t,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Set(SetRequest {
                bitrate_kbps: Some(1500),
                max_viewers: Some(3),
                ..SetRequest::default()
            })
        );
        let (r, _) = interpret(
            &cmd(r#"{"v":1,"id":"1","cmd":"set","whip_mode":"overflow"}"#),
            &t,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Set(SetRequest {
                whip_mode: Some(crate::config::WhipMode::Overflow),
                ..SetRequest::default()
            })
        );
        for (talk, on) in [(r#""off""#, false), ("true", true), (r#""on""#, true)] {
            let (r, _) = interpret(
                &cmd(&format!(
                    r#"{{"v":1,"id":"1","cmd":"set","talk":{talk},"speaker_volume":150}}"#
                )),
                &t,
            )
            .unwrap();
            assert_eq!(
                r,
                Request::Set(SetRequest {
                    talk: Some(on),
                    speaker_volume: Some(150),
                    ..SetRequest::default()
                })
            );
        }
        for bad in [
            r#"{"v":1,"id":"1","cmd":"set","talk":"maybe"}"#,
            r#"{"v":1,"id":"1","cmd":"set","talk":1}"#,
            r#"{"v":1,"id":"1","cmd":"set","speaker_volume":401}"#,
            r#"{"v":1,"id":"1","cmd":"set","whip_mode":"sometimes"}"#,
            r#"{"v":1,"id":"1","cmd":"set","whip_mode":1}"#,
            r#"{"v":1,"id":"1","cmd":"set"}"#,
            r#"{"v":1,"id":"1","cmd":"set","fps":0}"#,
            r#"{"v":1,"id":"1","cmd":"set","fps":61}"#,
            r#"{"v":1,"id":"1","cmd":"set","width":"wide"}"#,
            r#"{"v":1,"id":"1","cmd":"set","bitrate_kbps":-5}"#,
            r#"{"v":1,"id":"1","cmd":"set","max_viewers":99999999999}"#,
        ] {
            let refusal = interpret(&cmd(bad), &t).unwrap_err();
            assert_eq!(
                refusal.reply.error.unwrap().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn snapshot_topics_must_be_a_client_inbox() {
        let t = Topics::new("meshcam");
        let (r, _) = interpret(&cmd(r#"{"v":1,"id":"1","cmd":"snapshot"}"#), &t).unwrap();
        assert_eq!(r, Request::Snapshot(None));
        let (r, _) = interpret(
            &cmd(r#"{"v":1,"id":"1","cmd":"snapshot","topic":"meshcam/clients/c/snap"}"#),
            &t,
        )
        .unwrap();
        assert_eq!(r, Request::Snapshot(Some("meshcam/clients/c/snap".into())));
        let refusal = interpret(
            &cmd(r#"{"v":1,"id":"1","cmd":"snapshot","topic":"meshcam/devices/x/cmd"}"#),
            &t,
        )
        .unwrap_err();
        assert_eq!(refusal.reply.error.unwrap().code, ErrorCode::BadRequest);
    }

    #[test]
    fn refusals_carry_the_code_and_the_id() {
        let t = Topics::new("meshcam");
        let bad_room =
            interpret(&cmd(r##"{"v":1,"id":"4","cmd":"join","room":"#"}"##), &t).unwrap_err();
        assert_eq!(bad_room.reply.id.as_deref(), Some("4"));
        assert_eq!(bad_room.reply.error.unwrap().code, ErrorCode::BadRequest);

        let unknown = interpret(&cmd(r#"{"v":1,"id":"5","cmd":"dance"}"#), &t).unwrap_err();
        assert_eq!(unknown.reply.error.unwrap().code, ErrorCode::UnknownCommand);

        // A long unknown name is not echoed: the reply stays small.
        let long = format!(r#"{{"v":1,"id":"5","cmd":"{}"}}"#, "x".repeat(60_000));
        let unknown = interpret(&cmd(&long), &t).unwrap_err();
        let error = unknown.reply.error.as_ref().unwrap();
        assert_eq!(error.code, ErrorCode::UnknownCommand);
        assert!(error.message.starts_with("unknown command of 60000 bytes;"));
        assert!(unknown.reply.encode().len() < 1024);

        let bad_reply_to = interpret(
            &cmd(r#"{"v":1,"id":"6","cmd":"status","reply_to":"meshcam/devices/x/cmd"}"#),
            &t,
        )
        .unwrap_err();
        assert_eq!(bad_reply_to.reply_to, None, "answered on the default topic");
        assert_eq!(bad_reply_to.reply.id.as_deref(), Some("6"));
        assert_eq!(
            bad_reply_to.reply.error.unwrap().code,
            ErrorCode::BadRequest
        );
    }
}
