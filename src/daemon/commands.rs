//! Commands from controllers: decode, check ([`crate::control`]), carry out,
//! and answer each with exactly one reply.
//!
//! It owns the command topic's subscription, the command counters and the
//! rooms joined by command (kept in the store). It must not decide what a
//! change of settings needs (that is [`super::settings`]) nor build reports
//! itself (that is [`super::status`] and [`super::stats`]).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use super::{Daemon, LOG_TARGET};
use crate::control::{self, PinRequest, Request};
use crate::protocol::{Command, ErrorCode, Reply};
use crate::room::MAX_ROOMS;

/// How long a snapshot waits for a key frame.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands seen and refused, for telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CommandCounters {
    pub received: u64,
    pub errors: u64,
}

pub(super) struct Commands {
    /// The token of the command topic's subscription.
    subscription: u64,
    counters: CommandCounters,
    /// Where commands that finish in their own task send their reply.
    replies: mpsc::UnboundedSender<(Option<String>, Reply)>,
}

impl Commands {
    pub(super) fn new(
        subscription: u64,
        replies: mpsc::UnboundedSender<(Option<String>, Reply)>,
    ) -> Self {
        Self {
            subscription,
            counters: CommandCounters::default(),
            replies,
        }
    }

    pub(super) fn counters(&self) -> CommandCounters {
        self.counters
    }
}

impl Daemon {
    /// On every broker connection: commands come in on the device's topic.
    pub(super) fn subscribe_commands(&mut self) {
        let topic = self.topics.command(&self.config.device.id);
        self.mqtt.subscribe(&[topic], self.commands.subscription);
    }

    /// Publishes a reply on `reply_to`, or on the device's reply topic.
    pub(super) fn reply(&mut self, reply_to: Option<&str>, reply: Reply) {
        if !reply.ok {
            self.commands.counters.errors += 1;
        }
        let topic = reply_to
            .map(str::to_owned)
            .unwrap_or_else(|| self.topics.reply(&self.config.device.id));
        self.mqtt.publish(topic, reply.encode(), false);
    }

    pub(super) fn on_command(&mut self, payload: &[u8]) {
        self.commands.counters.received += 1;
        let command = match Command::decode(payload) {
            Ok(command) => command,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e.error, "command refused");
                self.reply(None, Reply::for_decode_error(&e));
                return;
            }
        };
        let (request, reply_to) = match control::interpret(&command, &self.topics) {
            Ok(ok) => ok,
            Err(refusal) => {
                tracing::warn!(target: LOG_TARGET, cmd = %command.cmd, "command refused");
                self.reply(refusal.reply_to.as_deref(), refusal.reply);
                return;
            }
        };
        tracing::info!(target: LOG_TARGET, cmd = %command.cmd, id = %command.id, "command");
        if let Request::Snapshot(topic) = request {
            self.snapshot(topic, command.id, reply_to);
            return;
        }
        let reply = self.carry_out(request, &command.id);
        self.reply(reply_to.as_deref(), reply);
    }

    fn carry_out(&mut self, request: Request, id: &str) -> Reply {
        match request {
            Request::Join(room) => self.join(room, id),
            Request::Leave(room) => self.leave(room, id),
            Request::Status => Reply::ok(
                id,
                serde_json::to_value(self.current_status()).expect("status serialises"),
            ),
            Request::Stats => {
                let sample = self.sample(Instant::now());
                Reply::ok(id, self.telemetry(&sample))
            }
            Request::Keyframe => {
                for feed in self.layers.iter() {
                    feed.keyframes.request();
                }
                Reply::ok(id, json!({}))
            }
            Request::Restart => {
                self.rebuild_pipeline();
                Reply::ok(id, json!({ "restarts": self.pipeline.restarts() }))
            }
            Request::Set(set) => self.set(set, id),
            Request::Pin(pin) => self.pin(pin, id),
            Request::Mute(muted) => self.mute(muted, id),
            Request::Snapshot(_) => unreachable!("snapshots run in their own task"),
        }
    }

    /// `mute` / `unmute`: the microphone, at once and across restarts.
    fn mute(&mut self, muted: bool, id: &str) -> Reply {
        self.state.settings.muted = Some(muted);
        if let Err(reply) = self.save_state(id) {
            return reply;
        }
        self.config.audio.muted = muted;
        self.audio.set_muted(muted);
        Reply::ok(id, json!({ "muted": muted }))
    }

    /// `pin`: holds one viewer, or all, on a layer; not kept across restarts
    /// (`video.pin_layer` is the durable one).
    fn pin(&mut self, pin: PinRequest, id: &str) -> Reply {
        if let Some(layer) = pin.layer
            && layer >= self.layers.len()
        {
            return Reply::error(
                Some(id),
                ErrorCode::BadRequest,
                format!(
                    "layer {layer}: this camera has layers 0 to {}",
                    self.layers.len() - 1
                ),
            );
        }
        let Some(peer) = pin.peer else {
            self.participant.pin_all(pin.layer);
            return Reply::ok(id, json!({ "peer": null, "layer": pin.layer }));
        };
        let handles: Vec<_> = self
            .participant
            .mesh
            .links()
            .into_iter()
            .filter(|(_, p, _, _)| *p == peer)
            .filter_map(|(_, _, link, _)| self.participant.peer(link))
            .collect();
        if handles.is_empty() {
            return Reply::error(Some(id), ErrorCode::NotFound, format!("no viewer {peer:?}"));
        }
        for handle in handles {
            handle.pin(pin.layer);
        }
        Reply::ok(id, json!({ "peer": peer, "layer": pin.layer }))
    }

    fn join(&mut self, room: String, id: &str) -> Reply {
        if !self.participant.mesh.can_join(&room) {
            return Reply::error(
                Some(id),
                ErrorCode::Busy,
                format!("already in {MAX_ROOMS} rooms, the most a camera joins; leave one first"),
            );
        }
        self.participant.join(&room);
        self.state.left.retain(|r| *r != room);
        if !self.state.rooms.contains(&room) {
            self.state.rooms.push(room);
        }
        self.rooms_changed(id)
    }

    fn leave(&mut self, room: String, id: &str) -> Reply {
        if !self.participant.mesh.is_in(&room) {
            return Reply::error(
                Some(id),
                ErrorCode::NotFound,
                format!("not in room {room:?}"),
            );
        }
        self.participant.leave(&room, "leaving");
        if self.state.rooms.contains(&room) {
            self.state.rooms.retain(|r| *r != room);
        } else if !self.state.left.contains(&room) {
            // A room of the configuration: remembered as left, or the next
            // start would join it again.
            self.state.left.push(room);
        }
        self.rooms_changed(id)
    }

    /// Keeps the rooms joined by command and answers with the rooms.
    fn rooms_changed(&mut self, id: &str) -> Reply {
        if let Err(reply) = self.save_state(id) {
            return reply;
        }
        self.status.changed();
        Reply::ok(id, control::rooms_result(&self.participant.mesh.rooms()))
    }

    /// Writes the durable state; the error reply of command `id` if it
    /// cannot.
    pub(super) fn save_state(&self, id: &str) -> Result<(), Reply> {
        self.store.save(&self.state).map_err(|e| {
            Reply::error(
                Some(id),
                ErrorCode::Internal,
                format!("state not saved: {e}"),
            )
        })
    }

    /// Publishes one JPEG in a task of its own; the reply comes back through
    /// the supervisor's `replies`.
    fn snapshot(&mut self, topic: Option<String>, id: String, reply_to: Option<String>) {
        let topic = topic.unwrap_or_else(|| self.topics.snapshot(&self.config.device.id));
        let feed = self.layers.top().clone();
        let mqtt = self.mqtt.clone();
        let replies = self.commands.replies.clone();
        tokio::spawn(async move {
            let result = async {
                let frame = crate::media::snapshot::next_keyframe(&feed, SNAPSHOT_TIMEOUT).await?;
                let access_unit = frame.access_unit.clone();
                tokio::task::spawn_blocking(move || {
                    crate::media::snapshot::encode_jpeg(&access_unit)
                })
                .await?
            }
            .await;
            let reply = match result {
                Ok(jpeg) => {
                    let size = jpeg.data.len();
                    mqtt.publish(topic.clone(), jpeg.data, false);
                    let result = json!({
                        "topic": topic, "bytes": size, "width": jpeg.width, "height": jpeg.height,
                    });
                    Reply::ok(&id, result)
                }
                Err(e) => Reply::error(Some(&id), ErrorCode::Internal, format!("{e:#}")),
            };
            let _ = replies.send((reply_to, reply));
        });
    }
}
