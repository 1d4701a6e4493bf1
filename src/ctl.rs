//! `meshcam ctl`: the controller command line. Sends one command to a
//! camera over MQTT and prints the reply, or lists the fleet from the
//! retained status topics.
//!
//! Exit codes: 0 ok, 1 the camera answered with an error, 2 usage (clap's
//! own), 3 no answer in time (or no broker).
//!
//! Owns: the controller's command line and its exit codes. Must not touch:
//! anything of the daemon; it speaks PROTOCOL.md like any controller.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{Map, Value, json};

use crate::mqtt::Broker;
use crate::protocol::{Topics, ids};

/// Exit code: the camera answered with an error.
pub const EXIT_ERROR_REPLY: u8 = 1;
/// Exit code: no answer in time.
pub const EXIT_TIMEOUT: u8 = 3;

/// Where and as whom to talk.
#[derive(Debug, Clone)]
pub struct CtlOptions {
    pub broker: Broker,
    pub prefix: String,
    pub timeout: Duration,
}

/// What went wrong, with the exit code it maps to.
#[derive(Debug)]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

fn timeout_error(message: impl Into<String>) -> CtlError {
    CtlError {
        code: EXIT_TIMEOUT,
        message: message.into(),
    }
}

/// A connected controller with its own inbox.
struct Controller {
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    id: String,
    topics: Topics,
}

impl Controller {
    async fn connect(options: &CtlOptions, filters: &[String]) -> Result<Self, CtlError> {
        let id = format!("ctl-{}", &ids::new_session()[..10]);
        let mut mqtt = options.broker.options(id.clone());
        mqtt.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(crate::protocol::MAX_PACKET, crate::protocol::MAX_PACKET);
        let (client, eventloop) = crate::mqtt::client(mqtt, 16);
        let topics = Topics::new(options.prefix.clone());
        let mut controller = Self {
            client,
            eventloop,
            id,
            topics,
        };
        let mut all = vec![controller.inbox("#")];
        all.extend_from_slice(filters);
        let subscribe = all
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        controller
            .client
            .subscribe_many(subscribe)
            .await
            .map_err(|e| timeout_error(format!("broker: {e}")))?;
        controller
            .until(options.timeout, |event| {
                matches!(event, Event::Incoming(Packet::SubAck(_))).then_some(())
            })
            .await?;
        Ok(controller)
    }

    fn inbox(&self, leaf: &str) -> String {
        format!("{}/clients/{}/{leaf}", self.topics.prefix(), self.id)
    }

    /// Polls the connection until `pick` returns something or time is up.
    async fn until<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, CtlError> {
        tokio::time::timeout(timeout, async {
            loop {
                match self.eventloop.poll().await {
                    Ok(event) => {
                        if let Some(found) = pick(&event) {
                            return Ok(found);
                        }
                    }
                    Err(e) => return Err(timeout_error(format!("broker: {e}"))),
                }
            }
        })
        .await
        .map_err(|_| timeout_error(format!("no answer within {timeout:?}")))?
    }
}

/// Sends `command` (a JSON object without `v`, `id`, `reply_to`) to
/// `device` and returns its reply; a snapshot's JPEG is returned too.
pub async fn command(
    options: &CtlOptions,
    device: &str,
    mut command: Map<String, Value>,
) -> Result<(Value, Option<Vec<u8>>), CtlError> {
    let mut ctl = Controller::connect(options, &[]).await?;
    let reply_to = ctl.inbox("replies");
    let id = format!("{}-1", ctl.id);
    let snapshot_topic = ctl.inbox("snapshot");
    let wants_jpeg = command.get("cmd") == Some(&json!("snapshot"));
    if wants_jpeg && !command.contains_key("topic") {
        command.insert("topic".into(), json!(snapshot_topic));
    }
    command.insert("v".into(), json!(1));
    command.insert("id".into(), json!(id));
    command.insert("reply_to".into(), json!(reply_to));
    ctl.client
        .publish(
            ctl.topics.command(device),
            QoS::AtLeastOnce,
            false,
            Value::Object(command).to_string(),
        )
        .await
        .map_err(|e| timeout_error(format!("broker: {e}")))?;
    let mut jpeg = None;
    let mut reply = None;
    let snapshot_target = snapshot_topic.clone();
    ctl.until(options.timeout, |event| {
        if let Event::Incoming(Packet::Publish(p)) = event {
            if p.topic == snapshot_target {
                jpeg = Some(p.payload.to_vec());
            } else if p.topic == reply_to
                && let Ok(v) = serde_json::from_slice::<Value>(&p.payload)
                && v["id"] == json!(id)
            {
                reply = Some(v);
            }
        }
        // A successful snapshot's JPEG is published before its reply.
        let done = match &reply {
            Some(r) => !wants_jpeg || r["ok"] != json!(true) || jpeg.is_some(),
            None => false,
        };
        done.then_some(())
    })
    .await?;
    let reply = reply.expect("until() returned because the reply arrived");
    Ok((reply, jpeg))
}

/// Lists every device whose status is retained on the broker.
pub async fn list(options: &CtlOptions) -> Result<Vec<Value>, CtlError> {
    let topics = Topics::new(options.prefix.clone());
    let mut ctl = Controller::connect(options, &[topics.all_statuses()]).await?;
    let mut devices = Vec::new();
    // Retained statuses arrive right after the subscription; stop once the
    // broker has been quiet for a moment.
    loop {
        let next = ctl
            .until(Duration::from_millis(500), |event| match event {
                Event::Incoming(Packet::Publish(p)) => Some(p.payload.to_vec()),
                _ => None,
            })
            .await;
        match next {
            Ok(payload) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&payload) {
                    devices.push(v);
                }
            }
            Err(_) => break,
        }
    }
    devices.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(devices)
}

/// Parses `key=value` pairs of `set` into JSON (numbers where they parse).
pub fn set_arguments(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut args = Map::new();
    args.insert("cmd".into(), json!("set"));
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected key=value, e.g. bitrate_kbps=1500"))?;
        args.insert(key.to_owned(), setting_value(value));
    }
    Ok(args)
}

/// A number, a comma-separated list of numbers, or else the text itself
/// (the camera says what it expected).
fn setting_value(text: &str) -> Value {
    let number = |t: &str| t.parse::<u64>().ok().map(Value::from);
    if text.contains(',') {
        let list: Option<Vec<Value>> = text.split(',').map(number).collect();
        if let Some(list) = list {
            return Value::from(list);
        }
    }
    number(text).unwrap_or_else(|| Value::from(text))
}

/// The arguments of `pin`: a layer index or `adapt`, for one viewer or all.
pub fn pin_arguments(layer: &str, peer: Option<String>) -> Result<Map<String, Value>, String> {
    let layer =
        match layer {
            "adapt" => Value::Null,
            n => Value::from(n.parse::<u64>().map_err(|_| {
                format!("{n:?}: expected a layer index (0 is the top one) or adapt")
            })?),
        };
    let mut args = Map::new();
    args.insert("cmd".into(), json!("pin"));
    args.insert("layer".into(), layer);
    if let Some(peer) = peer {
        args.insert("peer".into(), json!(peer));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_pairs_become_numbers_where_they_can() {
        let args = set_arguments(&["bitrate_kbps=1500".into(), "fps=x".into()]).unwrap();
        assert_eq!(args["bitrate_kbps"], 1500);
        assert_eq!(args["fps"], "x");
        assert!(set_arguments(&["nonsense".into()]).is_err());
        let layers = set_arguments(&["layer_bitrates_kbps=600,200".into()]).unwrap();
        assert_eq!(layers["layer_bitrates_kbps"], json!([600, 200]));
    }

    #[test]
    fn pin_takes_an_index_or_adapt() {
        assert_eq!(pin_arguments("1", None).unwrap()["layer"], 1);
        let all = pin_arguments("adapt", Some("v-1".into())).unwrap();
        assert_eq!(all["layer"], Value::Null);
        assert_eq!(all["peer"], "v-1");
        assert!(pin_arguments("top", None).is_err());
    }
}
