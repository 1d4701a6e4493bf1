//! The broker session: connect with a will, reconnect with jittered
//! exponential backoff (capped at a few seconds), and report what happens as [`MqttEvent`]s.
//!
//! Publishing never waits: the supervisor loop must not stall on a broker
//! outage, so publishes go into rumqttc's request queue with `try_publish`
//! and what does not fit is reported as lost (presence and status are
//! republished after every reconnect anyway).
//!
//! A room's subscriptions must be acknowledged before our presence goes out
//! (PROTOCOL.md); subscription requests carry a token that comes back in
//! [`MqttEvent::Subscribed`] once the SUBACK for that very request arrives.
//!
//! Three parts: [`login`] reads the files of a login into a [`Broker`];
//! [`session`] decides (the [`Session`] state: backoff, tokens, what to
//! report), without I/O; this module does: it runs rumqttc's event loop,
//! feeds the session what happens and carries out what it returns.
//!
//! Owns: the broker connection and its event loop. Must not touch: what is
//! published or subscribed and why (the participant and the daemon decide).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, QoS};
use tokio::sync::mpsc;

pub mod login;
pub mod session;

pub use login::Broker;
pub use session::MqttEvent;
use session::{Session, Step};

/// A client on `options` whose socket sends each packet at once.
///
/// Signaling is a burst of small packets (an offer, then candidates one by
/// one): with Nagle's algorithm on, each one after the first waits for the
/// broker's delayed ACK, tens of milliseconds on every hop of a viewer's
/// join.
pub fn client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, capacity);
    eventloop.network_options.set_tcp_nodelay(true);
    (client, eventloop)
}

/// How to reach the broker and who we are there.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub client_id: String,
    pub broker: Broker,
    pub keepalive: Duration,
    /// Topic and payload of the will, published retained at QoS 1.
    pub will: Option<(String, Vec<u8>)>,
}

/// A handle for publishing and subscribing; cheap to clone.
#[derive(Clone)]
pub struct MqttLink {
    client: AsyncClient,
    /// Shared with the event loop, which matches SUBACKs to the tokens
    /// queued here.
    session: Arc<Mutex<Session>>,
}

/// Starts the session. Events arrive on the returned receiver; the session
/// ends when that receiver is dropped or after [`MqttLink::disconnect`].
pub fn start(options: SessionOptions) -> (MqttLink, mpsc::Receiver<MqttEvent>) {
    let mut mqtt = options.broker.options(options.client_id);
    mqtt.set_keep_alive(options.keepalive)
        .set_clean_session(true)
        .set_max_packet_size(crate::protocol::MAX_PACKET, crate::protocol::MAX_PACKET)
        .set_request_channel_capacity(4096)
        .set_inflight(200);
    if let Some((topic, payload)) = options.will {
        mqtt.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    let (client, eventloop) = client(mqtt, 4096);
    let session = Arc::new(Mutex::new(Session::new()));
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(drive(eventloop, tx, session.clone()));
    (MqttLink { client, session }, rx)
}

/// How long a clean disconnect waits for the broker to close the connection.
const DISCONNECT_LINGER: Duration = Duration::from_secs(1);

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session.lock().expect("session lock is never poisoned")
}

/// The session's answer to `event`, its lock released before any await.
fn step(session: &Mutex<Session>, event: rumqttc::Event) -> Step {
    lock(session).on_event(event)
}

/// The event loop: polls the connection, and does what the session says.
async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<MqttEvent>,
    session: Arc<Mutex<Session>>,
) {
    loop {
        let event = match eventloop.poll().await {
            Ok(event) => match step(&session, event) {
                Step::Continue => None,
                Step::Report(event) => Some(event),
                Step::Close => {
                    // Our own clean disconnect: the session is over once the
                    // broker closes the connection. Closing it first, with its
                    // acks unread, would reset it, and the broker would lose
                    // what we sent last (our presence clear, our offline
                    // status) and fire our will instead.
                    let _ = tokio::time::timeout(DISCONNECT_LINGER, async {
                        while eventloop.poll().await.is_ok() {}
                    })
                    .await;
                    return;
                }
            },
            Err(e) => {
                let retry = lock(&session).on_error(e.to_string(), &mut rand::rng());
                if let Some(report) = retry.report
                    && tx.send(report).await.is_err()
                {
                    return;
                }
                tracing::warn!(error = %e, retry_in_ms = retry.delay.as_millis() as u64, "broker connection lost");
                tokio::time::sleep(retry.delay).await;
                None
            }
        };
        if let Some(event) = event
            && tx.send(event).await.is_err()
        {
            return;
        }
    }
}

impl MqttLink {
    /// Queues a QoS 1 publish; `false` when the queue is full (broker gone
    /// for long) and the message was dropped.
    pub fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> bool {
        let topic = topic.into();
        match self
            .client
            .try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload.into())
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%topic, error = %e, "publish dropped");
                false
            }
        }
    }

    /// Subscribes to `filters` in ONE request; `token` comes back in
    /// [`MqttEvent::Subscribed`] when the broker acknowledges it.
    pub fn subscribe(&self, filters: &[String], token: u64) {
        // Held across the request, so that tokens are queued in the order
        // of rumqttc's own queue.
        let mut session = lock(&self.session);
        let request = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        match self.client.try_subscribe_many(request) {
            Ok(()) => session.subscription_queued(token),
            Err(e) => tracing::warn!(error = %e, "subscribe dropped"),
        }
    }

    pub fn unsubscribe(&self, filter: &str) {
        if let Err(e) = self.client.try_unsubscribe(filter) {
            tracing::warn!(error = %e, "unsubscribe dropped");
        }
    }

    /// Asks for a clean disconnect once the queued publishes are out.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}
