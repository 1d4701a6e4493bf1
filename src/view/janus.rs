//! Watching a camera through a Janus VideoRoom, where the camera's
//! `bye "full"` or presence points a viewer (`kind: "janus-videoroom"`).
//!
//! Janus's HTTP API, as its own clients use it: create a session, attach
//! the VideoRoom plugin, find the room's publisher, join as a subscriber;
//! Janus offers, we answer with `start`; events come by long poll, which
//! also keeps the session alive. The connection is the same receiving peer
//! as a mesh viewer's, so its track goes through the same receive path.
//!
//! Owns: the Janus session, its handle and the subscriber's connection.
//! Must not touch: the room logic, the report lines.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::TrackRemote;

use crate::peer::{self, PeerCommand, PeerEvent, PeerFactory, PeerSpec};
use crate::protocol::SignalBody;

const VIDEOROOM: &str = "janus.plugin.videoroom";
/// Between two looks for the room's publisher, while there is none yet (a
/// camera starting to publish as it turns viewers away).
const PUBLISHER_POLL: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

/// One Janus session with the VideoRoom plugin attached.
struct Session {
    http: reqwest::Client,
    /// `{api}/{session}`.
    session_url: String,
    /// `{api}/{session}/{handle}`.
    handle_url: String,
    transactions: u64,
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let reply: Value = http
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .error_for_status()?
        .json()
        .await
        .context("Janus's reply is not JSON")?;
    if reply["janus"] == "error" {
        bail!("Janus: {}", reply["error"]["reason"]);
    }
    Ok(reply)
}

impl Session {
    async fn open(api: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let api = api.trim_end_matches('/');
        let created = post(&http, api, json!({"janus": "create", "transaction": "c"})).await?;
        let session = created["data"]["id"].as_u64().context("no session id")?;
        let session_url = format!("{api}/{session}");
        let attached = post(
            &http,
            &session_url,
            json!({"janus": "attach", "plugin": VIDEOROOM, "transaction": "a"}),
        )
        .await?;
        let handle = attached["data"]["id"].as_u64().context("no handle id")?;
        Ok(Self {
            http,
            handle_url: format!("{session_url}/{handle}"),
            session_url,
            transactions: 0,
        })
    }

    fn transaction(&mut self) -> String {
        self.transactions += 1;
        format!("t{}", self.transactions)
    }

    /// A message to the plugin; `jsep` with it when given.
    async fn message(&mut self, body: Value, jsep: Option<Value>) -> anyhow::Result<Value> {
        let mut request = json!({
            "janus": "message",
            "transaction": self.transaction(),
            "body": body,
        });
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        post(&self.http, &self.handle_url, request).await
    }

    async fn trickle(&mut self, candidate: Value) -> anyhow::Result<()> {
        let request = json!({
            "janus": "trickle",
            "transaction": self.transaction(),
            "candidate": candidate,
        });
        post(&self.http, &self.handle_url, request).await.map(drop)
    }

    /// The session's events, by long poll (Janus answers a keepalive after
    /// 30 s without events), which also keeps the session alive; the
    /// poller ends with the receiver.
    fn events(&self) -> mpsc::UnboundedReceiver<anyhow::Result<Value>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let http = self.http.clone();
        let url = format!("{}?maxev=1", self.session_url);
        tokio::spawn(async move {
            loop {
                let reply = async {
                    let reply: Value = http
                        .get(&url)
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    anyhow::Ok(reply)
                }
                .await;
                let failed = reply.is_err();
                if tx.send(reply).is_err() || failed {
                    return;
                }
            }
        });
        rx
    }

    /// The feed id of the room's first publisher, once there is one.
    async fn publisher(&mut self, room: u64) -> anyhow::Result<u64> {
        loop {
            let reply = self
                .message(json!({"request": "listparticipants", "room": room}), None)
                .await?;
            let data = &reply["plugindata"]["data"];
            if let Some(error) = data["error"].as_str() {
                bail!("Janus room {room}: {error}");
            }
            let feed = data["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["publisher"] == true)
                .and_then(|p| p["id"].as_u64());
            if let Some(feed) = feed {
                return Ok(feed);
            }
            tokio::time::sleep(PUBLISHER_POLL).await;
        }
    }

    async fn destroy(&mut self) {
        let request = json!({"janus": "destroy", "transaction": self.transaction()});
        let _ = post(&self.http, &self.session_url, request).await;
    }
}

/// Subscribes to the publisher of `room` at the Janus HTTP API `api`;
/// hands each remote track to `on_track` until the connection ends.
pub async fn watch(
    api: &str,
    room: u64,
    factory: Arc<PeerFactory>,
    mut on_track: impl FnMut(Arc<dyn TrackRemote>),
) -> anyhow::Result<()> {
    let mut session = Session::open(api).await?;
    let result = subscribe(&mut session, room, factory, &mut on_track).await;
    session.destroy().await;
    result
}

async fn subscribe(
    session: &mut Session,
    room: u64,
    factory: Arc<PeerFactory>,
    on_track: &mut impl FnMut(Arc<dyn TrackRemote>),
) -> anyhow::Result<()> {
    let feed = session.publisher(room).await?;
    let mut janus_events = session.events();
    session
        .message(
            json!({"request": "join", "ptype": "subscriber", "room": room,
                   "streams": [{"feed": feed}]}),
            None,
        )
        .await?;
    let offer = loop {
        let event = janus_events
            .recv()
            .await
            .context("Janus's events ended")??;
        if let Some(error) = event["plugindata"]["data"]["error"].as_str() {
            bail!("Janus refused the subscription: {error}");
        }
        if event["jsep"]["type"] == "offer" {
            break event["jsep"]["sdp"].as_str().unwrap_or_default().to_owned();
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let spec = PeerSpec {
        link: 0,
        offerer: false,
        media: None,
        pin: None,
        ice_servers: Vec::new(),
    };
    let peer = peer::spawn(factory, spec, events_tx);
    peer.send(PeerCommand::ApplyOffer(offer));
    let result = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(PeerEvent::Signal(_, SignalBody::Answer { sdp })) => {
                    session
                        .message(json!({"request": "start"}), Some(json!({"type": "answer", "sdp": sdp})))
                        .await?;
                }
                Some(PeerEvent::Signal(_, SignalBody::Candidate { candidate })) => {
                    let candidate = match candidate {
                        Some(c) => json!({"candidate": c.candidate, "sdpMid": c.sdp_mid,
                                          "sdpMLineIndex": c.sdp_mline_index}),
                        None => json!({"completed": true}),
                    };
                    session.trickle(candidate).await?;
                }
                Some(PeerEvent::Track(_, track)) => on_track(track),
                Some(PeerEvent::State(_, state)) => {
                    tracing::info!(?state, "connection with Janus");
                    if matches!(state, crate::room::LinkState::Failed | crate::room::LinkState::Closed) {
                        break Err(anyhow::anyhow!("the connection with Janus {state:?}"));
                    }
                }
                Some(PeerEvent::Error(_, e)) => break Err(e.into()),
                Some(_) => {}
                None => break Ok(()),
            },
            // The long poll keeps the session alive; its events (hangups)
            // show in the connection's state.
            event = janus_events.recv() => {
                let event = event.context("Janus's events ended")??;
                if event["janus"] == "hangup" {
                    break Err(anyhow::anyhow!("Janus hung up: {}", event["reason"]));
                }
            }
        }
    };
    peer.close();
    result
}
