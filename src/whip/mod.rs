//! Publishing the stream once to an SFU over WHIP (RFC 9725), for rooms
//! with more viewers than the camera's uplink carries.
//!
//! The publication is one more sending peer connection on the shared
//! encoder and packetizer (the same [`crate::peer`] task a mesh viewer
//! gets), whose offer and candidates go over HTTP instead of MQTT: it
//! costs about what one more viewer costs. [`rules`] decides when to
//! publish and how to retry; [`client`] speaks HTTP; this task carries the
//! decisions out and reports a [`WhipStatus`].
//!
//! Owns: the publication's connection, its resource, the HTTP requests in
//! flight. Must not touch: the rooms (the daemon tells the demand and
//! reads the status), topics, the encoder.

pub mod client;
pub mod rules;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{IceServer, WhipConfig, WhipMode};
use crate::participant::sleep_until;
use crate::peer::{
    self, Outgoing, PeerCommand, PeerEvent, PeerFactory, PeerHandle, PeerSpec, SenderCounters,
};
use crate::protocol::{Candidate, SignalBody};
use crate::room::LinkState;
use client::{Resource, WhipClient, WhipError};
pub use rules::Demand;
use rules::{Action, Failure, Publication, PublishState};

/// The link id of the publication's connection in its own peer events.
const LINK: u64 = 0;
/// How long a stop waits for the DELETE.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Between two ICE restart requests while the connection stays lost (the
/// network may be down: the PATCH then fails at once).
const RESTART_RETRY: Duration = Duration::from_secs(1);
/// A restart the server has not taken this long after the connection was
/// lost has failed: the publication starts afresh (a new POST).
const RESTART_DEADLINE: Duration = Duration::from_secs(10);

/// What telemetry and the daemon see of the publication.
#[derive(Debug, Clone, PartialEq)]
pub struct WhipStatus {
    pub mode: WhipMode,
    pub state: PublishState,
    pub error: Option<String>,
    /// The resource URL while one exists.
    pub resource: Option<String>,
    /// Attempts made since start.
    pub attempts: u64,
    /// ICE restarts the server took (PATCH), and whether one is under way.
    pub ice_restarts: u64,
    pub restarting: bool,
    /// What the current attempt's connection sent, read when asked.
    pub sent: Option<Sent>,
}

/// The counters of the publication's connection.
#[derive(Debug, Clone)]
pub struct Sent(Arc<SenderCounters>);

/// The same connection's counters.
impl PartialEq for Sent {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl WhipStatus {
    /// Bytes the current attempt sent, video and sound.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.as_ref().map_or(0, |Sent(c)| {
            c.bytes_sent.load(Ordering::Relaxed) + c.audio_bytes_sent.load(Ordering::Relaxed)
        })
    }

    /// For telemetry, with the bitrate its rates measured.
    pub fn to_json(&self, bitrate_kbps: f64) -> Value {
        json!({
            "mode": self.mode.as_str(),
            "state": self.state.as_str(),
            "error": self.error,
            "resource": self.resource,
            "attempts": self.attempts,
            "ice_restarts": self.ice_restarts,
            "restarting": self.restarting,
            "bitrate_kbps": bitrate_kbps.round(),
            "bytes_sent": self.bytes_sent(),
        })
    }
}

enum Command {
    Demand(Demand),
    Mode(WhipMode),
    Stop(oneshot::Sender<()>),
}

/// The daemon's handle on the publication task.
pub struct Whip {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<WhipStatus>,
    demand: Demand,
}

impl Whip {
    /// Starts the task; it publishes once the demand and mode want it.
    pub fn start(
        config: &WhipConfig,
        factory: Arc<PeerFactory>,
        media: Outgoing,
    ) -> Result<Self, crate::config::ConfigError> {
        let token = config.bearer()?;
        let client = if config.endpoint.is_empty() {
            None
        } else {
            Some(
                WhipClient::new(&config.endpoint, token)
                    .map_err(|e| crate::config::invalid("whip.endpoint", e.to_string()))?,
            )
        };
        let rules = Publication::new(config.mode, Duration::from_secs(config.linger_s));
        let (status_tx, status) = watch::channel(WhipStatus {
            mode: config.mode,
            state: PublishState::Off,
            error: None,
            resource: None,
            attempts: 0,
            ice_restarts: 0,
            restarting: false,
            sent: None,
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let task = Task {
            rules,
            client,
            factory,
            media,
            status: status_tx,
            attempt: None,
            attempts: 0,
            ice_restarts: 0,
            ice_servers: Vec::new(),
        };
        tokio::spawn(task.run(command_rx));
        Ok(Self {
            commands,
            status,
            demand: Demand::default(),
        })
    }

    /// Tells the task what the rooms need; only changes are sent.
    pub fn set_demand(&mut self, demand: Demand) {
        if demand != self.demand {
            self.demand = demand;
            let _ = self.commands.send(Command::Demand(demand));
        }
    }

    pub fn set_mode(&self, mode: WhipMode) {
        let _ = self.commands.send(Command::Mode(mode));
    }

    pub fn status(&self) -> WhipStatus {
        self.status.borrow().clone()
    }

    /// Resolves when the status changed since last seen.
    pub async fn changed(&mut self) {
        if self.status.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops publishing (DELETE), waiting for it a short while.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).is_ok() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, wait).await;
        }
    }
}

/// One attempt: its connection, the offer, the resource once created.
struct Attempt {
    /// Its number among the attempts: what replies to it carry.
    generation: u64,
    peer: PeerHandle,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    offer: Option<String>,
    resource: Option<Resource>,
    /// ICE was lost at this time and is being restarted over PATCH.
    restarting: Option<Instant>,
}

/// What an HTTP request ended in, for the attempt of `generation`.
enum Reply {
    Posted(u64, Result<Resource, WhipError>),
    Trickled(u64, Result<(), WhipError>),
    /// The server's fragment and new ETag, for the restart offer `offer`.
    Restarted(u64, String, Result<(String, Option<String>), WhipError>),
    /// Time to ask for an ICE restart again.
    RestartAgain(u64),
}

struct Task {
    rules: Publication,
    client: Option<WhipClient>,
    factory: Arc<PeerFactory>,
    media: Outgoing,
    status: watch::Sender<WhipStatus>,
    attempt: Option<Attempt>,
    /// Attempts made: the last one's generation.
    attempts: u64,
    ice_restarts: u64,
    /// From the last answer's `Link` headers, for the next connection.
    ice_servers: Vec<IceServer>,
}

async fn next_event(attempt: &mut Option<Attempt>) -> Option<PeerEvent> {
    match attempt {
        Some(a) => a.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (reply_tx, mut replies) = mpsc::unbounded_channel();
        loop {
            let deadline = self.rules.next_deadline();
            tokio::select! {
                command = commands.recv() => {
                    let now = Instant::now();
                    let actions = match command {
                        Some(Command::Demand(d)) => self.rules.set_demand(d, now),
                        Some(Command::Mode(m)) => {
                            tracing::info!(mode = m.as_str(), "WHIP mode set");
                            self.rules.set_mode(m, now)
                        }
                        Some(Command::Stop(done)) => {
                            self.unpublish().await;
                            let _ = done.send(());
                            return;
                        }
                        None => {
                            self.unpublish().await;
                            return;
                        }
                    };
                    self.act(actions);
                }
                Some(event) = next_event(&mut self.attempt) => self.on_peer(event, &reply_tx),
                Some(reply) = replies.recv() => self.on_reply(reply, &reply_tx),
                _ = sleep_until(deadline) => {
                    let actions = self.rules.on_tick(Instant::now());
                    self.act(actions);
                }
            }
            self.report();
        }
    }

    fn act(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish => self.publish(),
                Action::Unpublish => self.close(),
            }
        }
    }

    fn fail(&mut self, failure: Failure) {
        tracing::warn!(error = failure.reason(), "WHIP publication failed");
        let actions = self.rules.failed(failure, Instant::now());
        self.act(actions);
    }

    /// A new attempt: its connection makes the offer that is POSTed.
    fn publish(&mut self) {
        self.close();
        self.attempts += 1;
        let (events_tx, events) = mpsc::unbounded_channel();
        let spec = PeerSpec {
            link: LINK,
            offerer: true,
            media: Some(self.media.clone()),
            pin: None,
            ice_servers: self.ice_servers.clone(),
        };
        let peer = peer::spawn(self.factory.clone(), spec, events_tx);
        self.attempt = Some(Attempt {
            generation: self.attempts,
            peer,
            events,
            offer: None,
            resource: None,
            restarting: None,
        });
    }

    /// Ends the attempt: closes its connection; the DELETE of its
    /// resource, if it has one, is the caller's to run.
    fn end_attempt(&mut self) -> Option<impl Future<Output = ()> + use<>> {
        let attempt = self.attempt.take()?;
        attempt.peer.close();
        Some(delete(self.client.clone()?, attempt.resource?))
    }

    /// Ends the attempt without waiting for the server's DELETE.
    fn close(&mut self) {
        if let Some(deleted) = self.end_attempt() {
            tokio::spawn(deleted);
        }
    }

    /// Ends the attempt, waiting for the DELETE (at shutdown).
    async fn unpublish(&mut self) {
        if let Some(deleted) = self.end_attempt() {
            deleted.await;
        }
    }

    fn on_peer(&mut self, event: PeerEvent, replies: &mpsc::UnboundedSender<Reply>) {
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let generation = attempt.generation;
        match event {
            PeerEvent::Signal(_, SignalBody::Offer { sdp, .. }) => {
                let Some(client) = self.client.clone() else {
                    return;
                };
                let replies = replies.clone();
                if let Some(resource) = attempt.resource.clone() {
                    // An ICE restart: the new credentials go over PATCH.
                    let fragment = client::trickle_fragment(&sdp, &[]);
                    tokio::spawn(async move {
                        let result = client.restart(&resource, fragment).await;
                        let _ = replies.send(Reply::Restarted(generation, sdp, result));
                    });
                    return;
                }
                attempt.offer = Some(sdp.clone());
                tokio::spawn(async move {
                    let result = client.publish(&sdp).await;
                    let _ = replies.send(Reply::Posted(generation, result));
                });
            }
            PeerEvent::Signal(_, SignalBody::Candidate { candidate }) => {
                self.trickle(candidate, replies);
            }
            PeerEvent::Signal(..) => {}
            PeerEvent::State(_, LinkState::Connected) => {
                tracing::info!("publishing to the SFU");
                attempt.restarting = None;
                self.rules.connected();
            }
            PeerEvent::State(_, LinkState::Disconnected) => {
                // Where the server takes PATCH, ICE is restarted on the
                // same resource; else the connection fails and is
                // published afresh.
                if attempt.resource.as_ref().is_some_and(|r| r.trickle)
                    && attempt.restarting.is_none()
                {
                    tracing::info!("connection to the SFU lost: restarting ICE");
                    attempt.restarting = Some(Instant::now());
                    attempt.peer.send(PeerCommand::RestartIce);
                }
            }
            PeerEvent::State(_, LinkState::Failed | LinkState::Closed) => {
                self.fail(Failure::Lost("the connection to the SFU failed".into()));
            }
            PeerEvent::State(..) => {}
            PeerEvent::Error(_, error) => {
                self.fail(Failure::Unavailable(error.to_string()));
            }
            PeerEvent::Incompatible(_, reason) => {
                // The same answer would come again: not retried soon.
                self.fail(Failure::Refused(format!(
                    "the SFU cannot take this stream: {reason}"
                )));
            }
            PeerEvent::KeyframeRequest(_) | PeerEvent::Track(..) => {}
        }
    }

    /// PATCHes a candidate of ours, where the server takes them; without
    /// trickle the server learns our address from our checks.
    fn trickle(&mut self, candidate: Option<Candidate>, replies: &mpsc::UnboundedSender<Reply>) {
        let (Some(attempt), Some(client)) = (self.attempt.as_ref(), self.client.clone()) else {
            return;
        };
        let (Some(resource), Some(offer)) = (attempt.resource.clone(), attempt.offer.as_ref())
        else {
            return;
        };
        if !resource.trickle {
            return;
        }
        let fragment = client::trickle_fragment(offer, &[candidate]);
        let generation = attempt.generation;
        let replies = replies.clone();
        tokio::spawn(async move {
            let result = client.trickle(&resource, fragment).await;
            let _ = replies.send(Reply::Trickled(generation, result));
        });
    }

    /// The server's answer to an ICE restart: the previous answer with its
    /// new credentials is applied; a refusal or a network still down is
    /// asked again in a second, while the connection is lost.
    fn on_restarted(
        &mut self,
        offer: String,
        result: Result<(String, Option<String>), WhipError>,
        replies: &mpsc::UnboundedSender<Reply>,
    ) {
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let answer = result.as_ref().ok().and_then(|(fragment, _)| {
            let resource = attempt.resource.as_ref()?;
            client::restarted_answer(&resource.answer, fragment)
        });
        match (result, answer) {
            (Ok((_, etag)), Some(answer)) => {
                tracing::info!("the SFU took the ICE restart");
                self.ice_restarts += 1;
                attempt.offer = Some(offer);
                if let Some(resource) = attempt.resource.as_mut() {
                    resource.answer = answer.clone();
                    resource.etag = etag.or(resource.etag.take());
                }
                attempt.peer.send(PeerCommand::ApplyAnswer(answer));
                // Should ICE still not come back, the deadline ends it.
                restart_again(attempt.generation, RESTART_DEADLINE, replies);
            }
            (result, _) => {
                let why = result
                    .err()
                    .map_or("no ICE credentials".into(), |e| e.to_string());
                tracing::debug!(error = %why, "ICE restart not taken; asking again");
                restart_again(attempt.generation, RESTART_RETRY, replies);
            }
        }
    }

    fn on_reply(&mut self, reply: Reply, replies: &mpsc::UnboundedSender<Reply>) {
        let current = self.attempt.as_ref().map(|a| a.generation);
        match reply {
            Reply::Posted(generation, Ok(resource)) if Some(generation) == current => {
                tracing::info!(resource = %resource.url, trickle = resource.trickle, "WHIP resource created");
                if !resource.ice_servers.is_empty() {
                    self.ice_servers = resource.ice_servers.clone();
                }
                let attempt = self.attempt.as_mut().expect("current attempt");
                attempt
                    .peer
                    .send(PeerCommand::ApplyAnswer(resource.answer.clone()));
                attempt.resource = Some(resource);
            }
            Reply::Posted(_, Ok(resource)) => {
                // The attempt it was for is gone: so must its resource be.
                if let Some(client) = self.client.clone() {
                    tokio::spawn(delete(client, resource));
                }
            }
            Reply::Posted(generation, Err(e)) if Some(generation) == current => {
                self.fail(e.failure());
            }
            Reply::Posted(_, Err(_)) => {}
            Reply::Trickled(generation, Err(WhipError::NoTrickle))
                if Some(generation) == current =>
            {
                if let Some(resource) = self.attempt.as_mut().and_then(|a| a.resource.as_mut()) {
                    resource.trickle = false;
                }
            }
            Reply::Trickled(_, Err(e)) => {
                tracing::debug!(error = %e, "a candidate was not trickled");
            }
            Reply::Trickled(_, Ok(())) => {}
            Reply::Restarted(generation, offer, result) if Some(generation) == current => {
                self.on_restarted(offer, result, replies);
            }
            Reply::RestartAgain(generation) if Some(generation) == current => {
                let Some(attempt) = self.attempt.as_ref() else {
                    return;
                };
                match attempt.restarting {
                    Some(since) if since.elapsed() >= RESTART_DEADLINE => {
                        self.fail(Failure::Lost(format!(
                            "the SFU did not take an ICE restart within {RESTART_DEADLINE:?}"
                        )));
                    }
                    Some(_) => attempt.peer.send(PeerCommand::RestartIce),
                    None => {}
                }
            }
            Reply::Restarted(..) | Reply::RestartAgain(_) => {}
        }
    }

    fn report(&self) {
        let status = WhipStatus {
            mode: self.rules.mode(),
            state: self.rules.state(),
            error: self.rules.error().map(str::to_owned),
            resource: self
                .attempt
                .as_ref()
                .and_then(|a| a.resource.as_ref())
                .map(|r| r.url.to_string()),
            attempts: self.attempts,
            ice_restarts: self.ice_restarts,
            restarting: self
                .attempt
                .as_ref()
                .is_some_and(|a| a.restarting.is_some()),
            sent: self.attempt.as_ref().map(|a| Sent(a.peer.counters.clone())),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }
}

/// A [`Reply::RestartAgain`] for the attempt `generation` after `wait`.
fn restart_again(generation: u64, wait: Duration, replies: &mpsc::UnboundedSender<Reply>) {
    let replies = replies.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = replies.send(Reply::RestartAgain(generation));
    });
}

async fn delete(client: WhipClient, resource: Resource) {
    match client.delete(&resource.url).await {
        Ok(()) => tracing::info!(resource = %resource.url, "WHIP resource deleted"),
        Err(e) => tracing::warn!(resource = %resource.url, error = %e, "WHIP resource not deleted"),
    }
}
