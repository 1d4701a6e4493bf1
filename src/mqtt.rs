//! The broker session: connect with a will, reconnect with jittered
//! exponential backoff, and report what happens as [`MqttEvent`]s.
//!
//! Publishing never waits: the supervisor loop must not stall on a broker
//! outage, so publishes go into rumqttc's request queue with `try_publish`
//! and what does not fit is reported as lost (presence and status are
//! republished after every reconnect anyway).
//!
//! A room's subscriptions must be acknowledged before our presence goes out
//! (PROTOCOL.md); rumqttc hides packet ids from the caller, so subscription
//! requests carry a token that comes back in [`MqttEvent::Subscribed`] once
//! the SUBACK for that very request arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use tokio::sync::mpsc;

/// Where the broker is, from an `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!(
                "{url:?}: accepted forms are mqtt://HOST[:PORT] and mqtts://HOST[:PORT]"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?}: port {port:?} is not a number"))?;
                (host, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: no host name"));
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// How to reach the broker and who we are there.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub client_id: String,
    pub address: BrokerAddress,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keepalive: Duration,
    /// Topic and payload of the will, published retained at QoS 1.
    pub will: Option<(String, Vec<u8>)>,
}

/// What the broker session reports.
#[derive(Debug, Clone)]
pub enum MqttEvent {
    /// Connected (again): subscriptions must be made anew.
    Connected,
    /// The connection was lost; reconnecting is under way.
    Disconnected(String),
    /// The subscription request with this token was acknowledged.
    Subscribed(u64),
    Message {
        topic: String,
        payload: Bytes,
    },
}

/// A handle for publishing and subscribing; cheap to clone.
#[derive(Clone)]
pub struct MqttLink {
    client: AsyncClient,
    /// Tokens of subscription requests in the order they were queued.
    queued_subscriptions: Arc<Mutex<VecDeque<u64>>>,
}

/// Starts the session. Events arrive on the returned receiver; the session
/// ends when that receiver is dropped or after [`MqttLink::disconnect`].
pub fn start(options: SessionOptions) -> (MqttLink, mpsc::Receiver<MqttEvent>) {
    let mut mqtt = MqttOptions::new(
        options.client_id,
        options.address.host.clone(),
        options.address.port,
    );
    mqtt.set_keep_alive(options.keepalive)
        .set_clean_session(true)
        .set_max_packet_size(1024 * 1024, 8 * 1024 * 1024)
        .set_request_channel_capacity(4096)
        .set_inflight(200);
    if options.address.tls {
        mqtt.set_transport(Transport::tls_with_default_config());
    }
    if let Some(username) = options.username {
        mqtt.set_credentials(username, options.password.unwrap_or_default());
    }
    if let Some((topic, payload)) = options.will {
        mqtt.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    let (client, eventloop) = AsyncClient::new(mqtt, 4096);
    let queued_subscriptions = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(drive(eventloop, tx, queued_subscriptions.clone()));
    (
        MqttLink {
            client,
            queued_subscriptions,
        },
        rx,
    )
}

/// The reconnect delay after `failures` failed attempts in a row: exponential
/// from 0.5 s, capped at 30 s, with full jitter so a fleet does not reconnect
/// in lockstep after a broker restart.
pub fn reconnect_delay(failures: u32) -> Duration {
    let ceiling =
        Duration::from_millis(500 * (1u64 << failures.min(6))).min(Duration::from_secs(30));
    let jittered =
        rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(jittered)
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<MqttEvent>,
    queued_subscriptions: Arc<Mutex<VecDeque<u64>>>,
) {
    let mut failures = 0u32;
    let mut connected = false;
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                connected = true;
                by_pkid.clear();
                Some(MqttEvent::Connected)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Some(MqttEvent::Message {
                topic: p.topic,
                payload: p.payload,
            }),
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                let token = queued_subscriptions
                    .lock()
                    .expect("subscription queue lock is never poisoned")
                    .pop_front();
                if let Some(token) = token {
                    by_pkid.insert(pkid, token);
                }
                None
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                by_pkid.remove(&ack.pkid).map(MqttEvent::Subscribed)
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Our own clean disconnect: the session is over.
                return;
            }
            Ok(_) => None,
            Err(e) => {
                if connected {
                    connected = false;
                    if tx
                        .send(MqttEvent::Disconnected(e.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let delay = reconnect_delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker connection lost");
                tokio::time::sleep(delay).await;
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
        let mut queue = self
            .queued_subscriptions
            .lock()
            .expect("subscription queue lock is never poisoned");
        let request = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        match self.client.try_subscribe_many(request) {
            Ok(()) => queue.push_back(token),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse() {
        assert_eq!(
            BrokerAddress::parse("mqtt://127.0.0.1:1884").unwrap(),
            BrokerAddress {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(
            BrokerAddress::parse("mqtts://broker.example.org")
                .unwrap()
                .port,
            8883
        );
        assert_eq!(BrokerAddress::parse("mqtt://h").unwrap().port, 1883);
        assert_eq!(
            BrokerAddress::parse("mqtt://[::1]:1883").unwrap().host,
            "::1"
        );
        assert!(BrokerAddress::parse("http://h").is_err());
        assert!(BrokerAddress::parse("mqtt://h:port").is_err());
        assert!(BrokerAddress::parse("mqtt://").is_err());
    }

    #[test]
    fn reconnect_delays_grow_and_are_capped() {
        for failures in 0..20 {
            let d = reconnect_delay(failures);
            assert!(d <= Duration::from_secs(30));
            assert!(d >= Duration::from_millis(250));
        }
        assert!(reconnect_delay(10) >= Duration::from_secs(15));
    }
}
