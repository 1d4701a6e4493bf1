//! The broker session: connect with a will, reconnect with jittered
//! exponential backoff (capped at a few seconds), and report what happens as [`MqttEvent`]s.
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
//!
//! The files a login names (password, CA, client certificate) are read once,
//! into a [`Broker`], before anything connects: a wrong path or a file that
//! is not PEM is a configuration error at start, not a reconnect loop. The
//! rustls configuration is built here with an explicit crypto provider,
//! because the WebRTC stack and rumqttc enable two (ring and aws-lc-rs) and
//! rustls then refuses to pick one by itself.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use crate::config::{ConfigError, MqttConfig, invalid};

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

/// A broker, who we are there and whom we trust: what a connection needs,
/// with the files of the login already read.
#[derive(Clone)]
pub struct Broker {
    pub address: BrokerAddress,
    username: Option<String>,
    password: Option<String>,
    /// For mqtts://: the trusted roots and our client certificate, if any.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Broker {
    /// The broker of `mqtt.url`, logging in with `mqtt.username` and the
    /// password or `mqtt.password_file`; over TLS, trusting `mqtt.ca_file`
    /// (else the system's roots) and showing the client certificate, if any.
    /// Errors name the key and the file.
    pub fn from_config(mqtt: &MqttConfig) -> Result<Self, ConfigError> {
        let address =
            BrokerAddress::parse(&mqtt.url).map_err(|message| invalid("mqtt.url", message))?;
        let password = match &mqtt.password_file {
            Some(path) => Some(read_password("mqtt.password_file", path)?),
            None => mqtt.password.clone(),
        };
        let tls = if address.tls {
            Some(Arc::new(tls_config(mqtt)?))
        } else {
            None
        };
        Ok(Self {
            address,
            username: mqtt.username.clone(),
            password,
            tls,
        })
    }

    /// Connection options for `client_id`: address, transport and login.
    pub fn options(&self, client_id: impl Into<String>) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.address.host.clone(), self.address.port);
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        if let Some(username) = &self.username {
            options.set_credentials(username.clone(), self.password.clone().unwrap_or_default());
        }
        options
    }
}

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

/// Without the password, which must not reach a log.
impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads a file named by configuration `key`; an error names both. A secret
/// (a password, a private key) that every user of the machine may read is
/// worth a warning.
fn read_file(key: &str, path: &Path, secret: bool) -> Result<Vec<u8>, ConfigError> {
    let data = std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    if secret
        && let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            key,
            path = %path.display(),
            "secret file readable by others: chmod o-r it"
        );
    }
    Ok(data)
}

/// A password file's content without its trailing newline.
fn read_password(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = String::from_utf8(read_file(key, path, true)?)
        .map_err(|_| invalid(key, format!("{}: not UTF-8 text", path.display())))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(invalid(key, format!("{}: empty", path.display())));
    }
    Ok(password.to_owned())
}

/// The PEM certificates of a file; at least one.
fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(key, path, false)?;
    let bad = |message: String| invalid(key, format!("{}: {message}", path.display()));
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate (BEGIN CERTIFICATE) in it".into()));
    }
    Ok(certs)
}

/// The TLS side of an mqtts:// login: whom we trust, and our certificate.
fn tls_config(mqtt: &MqttConfig) -> Result<rustls::ClientConfig, ConfigError> {
    let identity = match (&mqtt.client_cert_file, &mqtt.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = read_certificates("mqtt.client_cert_file", cert_path)?;
            let pem = read_file("mqtt.client_key_file", key_path, true)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                invalid(
                    "mqtt.client_key_file",
                    format!("{}: no PEM private key: {e}", key_path.display()),
                )
            })?;
            Some((chain, key, key_path))
        }
        _ => None,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &mqtt.ca_file {
        Some(path) => {
            for cert in read_certificates("mqtt.ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid("mqtt.ca_file", format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            for e in &system.errors {
                tracing::warn!(error = %e, "a system root certificate could not be read");
            }
            roots.add_parsable_certificates(system.certs);
            if roots.is_empty() {
                return Err(invalid(
                    "mqtt.ca_file",
                    "not set, and the system has no root certificates (Debian package ca-certificates)",
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots);
    let Some((chain, key, key_path)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    builder.with_client_auth_cert(chain, key).map_err(|e| {
        invalid(
            "mqtt.client_key_file",
            format!(
                "{} does not go with mqtt.client_cert_file: {e}",
                key_path.display()
            ),
        )
    })
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

/// The longest wait between two connection attempts. A camera is back at
/// most this long (plus the connect itself) after its broker is, however
/// long the outage was: viewers and controllers see a fleet as down for no
/// longer than it is.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(4);

/// The reconnect delay after `failures` failed attempts in a row:
/// exponential from 0.5 s up to [`MAX_RECONNECT_DELAY`], each drawn
/// uniformly from the upper half of its ceiling. After a long outage a
/// fleet's attempts are spread evenly over 2 to 4 s, so cameras do not all
/// reconnect in one instant when the broker comes back.
pub fn reconnect_delay(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(500 * (1u64 << failures.min(6))).min(MAX_RECONNECT_DELAY);
    let ceiling_ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ceiling_ms / 2..=ceiling_ms))
}

/// How long a clean disconnect waits for the broker to close the connection.
const DISCONNECT_LINGER: Duration = Duration::from_secs(1);

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

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshcam-{name}-{}-{}",
            std::process::id(),
            &crate::protocol::ids::new_session()[..8]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn tls_login(dir: &Path) -> MqttConfig {
        MqttConfig {
            url: "mqtts://broker".into(),
            username: Some("cam1".into()),
            password_file: Some(dir.join("password")),
            ..MqttConfig::default()
        }
    }

    #[test]
    fn the_password_file_is_read_without_its_newline() {
        let dir = tempdir("password");
        std::fs::write(dir.join("password"), "s3cret \n").unwrap();
        let broker = Broker::from_config(&MqttConfig {
            url: "mqtt://broker".into(),
            ..tls_login(&dir)
        })
        .unwrap();
        assert_eq!(broker.password.as_deref(), Some("s3cret "));
        assert!(broker.tls.is_none());
        std::fs::write(dir.join("password"), "\n").unwrap();
        let e = Broker::from_config(&tls_login(&dir))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mqtt.password_file") && e.contains("empty"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_files_are_errors_naming_the_key_and_the_path() {
        let dir = tempdir("tls-files");
        let missing = dir.join("missing");
        let e = Broker::from_config(&tls_login(&dir))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mqtt.password_file") && e.contains(&format!("{}", dir.display())),
            "{e}"
        );
        std::fs::write(dir.join("password"), "pw").unwrap();
        std::fs::write(dir.join("not-pem"), "hello").unwrap();
        let e = Broker::from_config(&MqttConfig {
            ca_file: Some(missing.clone()),
            ..tls_login(&dir)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("mqtt.ca_file") && e.contains("missing"), "{e}");
        let e = Broker::from_config(&MqttConfig {
            ca_file: Some(dir.join("not-pem")),
            ..tls_login(&dir)
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mqtt.ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = Broker::from_config(&MqttConfig {
            client_cert_file: Some(dir.join("not-pem")),
            client_key_file: Some(missing),
            ..tls_login(&dir)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("mqtt.client_cert_file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reconnect_delays_grow_are_capped_and_spread() {
        let delays = |failures: u32| (0..200).map(move |_| reconnect_delay(failures));
        for d in delays(0) {
            assert!((Duration::from_millis(250)..=Duration::from_millis(500)).contains(&d));
        }
        for failures in [3, 10, 1000] {
            let (min, max) = delays(failures)
                .fold((Duration::MAX, Duration::ZERO), |(lo, hi), d| {
                    (lo.min(d), hi.max(d))
                });
            assert!(max <= MAX_RECONNECT_DELAY, "{max:?} after {failures}");
            assert!(min >= MAX_RECONNECT_DELAY / 2, "{min:?} after {failures}");
            // Jittered: 200 draws over 2 s do not land on one instant.
            assert!(max - min >= Duration::from_millis(500), "{min:?}..{max:?}");
        }
    }
}
