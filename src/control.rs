//! Commands from controllers, checked and turned into requests.
//!
//! Sans I/O: the daemon carries a [`Request`] out and publishes the reply;
//! everything that can be refused without touching the camera is refused
//! here, with the error codes of PROTOCOL.md.

use serde_json::Value;

use crate::protocol::{Command, ErrorCode, Reply, Topics};

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Join(String),
    Leave(String),
    Status,
}

/// Where and what to reply when a command is refused before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// `None`: the device's default reply topic.
    pub reply_to: Option<String>,
    pub reply: Reply,
}

/// The commands this camera implements.
pub const COMMANDS: [&str; 3] = ["join", "leave", "status"];

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
        other => {
            return Err(refuse(
                reply_to,
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command {other:?}; accepted: {}",
                    COMMANDS.join(", ")
                ),
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
    fn refusals_carry_the_code_and_the_id() {
        let t = Topics::new("meshcam");
        let bad_room =
            interpret(&cmd(r##"{"v":1,"id":"4","cmd":"join","room":"#"}"##), &t).unwrap_err();
        assert_eq!(bad_room.reply.id.as_deref(), Some("4"));
        assert_eq!(bad_room.reply.error.unwrap().code, ErrorCode::BadRequest);

        let unknown = interpret(&cmd(r#"{"v":1,"id":"5","cmd":"dance"}"#), &t).unwrap_err();
        assert_eq!(unknown.reply.error.unwrap().code, ErrorCode::UnknownCommand);

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
