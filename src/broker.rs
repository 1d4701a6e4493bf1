//! The embedded MQTT broker of standalone mode (`mqtt.url = "embedded"`):
//! a camera owner with no broker still gets signaling, over TCP for the
//! daemon and `meshcam ctl`, and over WebSockets for the browser page.
//!
//! rumqttd runs its listeners on threads of its own; the daemon connects to
//! it like to any broker, so the protocol code has one path only.
//!
//! Owns: the embedded broker's settings and threads. Must not touch: the
//! protocol (the daemon talks to it as to any broker).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use crate::config::BrokerConfig;

/// Largest message the embedded broker accepts: room for a snapshot JPEG.
const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Where the embedded broker listens, once it runs.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
}

/// Starts the broker and returns once its listeners are bound.
///
/// Ports are bound here first so that a port in use is a clear error at
/// start rather than a log line from a broker thread.
#[cfg(feature = "embedded-broker")]
pub fn start(config: &BrokerConfig) -> anyhow::Result<Listening> {
    use anyhow::Context;

    let tcp =
        free_address(&config.listen).with_context(|| format!("broker.listen {}", config.listen))?;
    let ws = free_address(&config.ws_listen)
        .with_context(|| format!("broker.ws_listen {}", config.ws_listen))?;
    let auth = config
        .username
        .clone()
        .map(|user| HashMap::from([(user, config.password.clone().unwrap_or_default())]));
    let settings = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: 2 * MAX_PAYLOAD,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([(
            "tcp".to_string(),
            server("meshcam-mqtt", tcp, auth.clone()),
        )])),
        v5: None,
        ws: Some(HashMap::from([(
            "ws".to_string(),
            server("meshcam-mqtt-ws", ws, auth),
        )])),
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = rumqttd::Broker::new(settings);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded broker stopped");
            }
        })
        .context("starting the embedded broker")?;
    wait_until_listening(tcp)?;
    wait_until_listening(ws)?;
    Ok(Listening { tcp, ws })
}

#[cfg(not(feature = "embedded-broker"))]
pub fn start(_config: &BrokerConfig) -> anyhow::Result<Listening> {
    anyhow::bail!(
        "mqtt.url = \"embedded\", but this build has no embedded broker \
         (cargo feature embedded-broker): set mqtt.url to mqtt://HOST[:PORT]"
    )
}

#[cfg(feature = "embedded-broker")]
fn server(
    name: &str,
    listen: SocketAddr,
    auth: Option<HashMap<String, String>>,
) -> rumqttd::ServerSettings {
    rumqttd::ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Resolves `listen`, with port 0 replaced by a free port, and checks that
/// it can be bound.
fn free_address(listen: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = listen.parse()?;
    let probe = TcpListener::bind(addr)?;
    Ok(probe.local_addr()?)
}

/// rumqttd binds on its own thread; connecting shows when it is ready.
fn wait_until_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(target).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    anyhow::bail!("the embedded broker did not start listening on {addr}")
}
