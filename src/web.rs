//! The browser viewer (`web/`), embedded in the binary and served over HTTP,
//! with a `config.json` that tells the page where the broker is.
//!
//! The page is a static bundle built by `web/build.mjs` (mqtt.js and the
//! viewer, no CDN); `web/dist` is committed so that building meshcam needs
//! no Node.js.
//!
//! Owns: the HTTP server of the page and its `config.json`. Must not touch:
//! the page's logic (in `web/src`) or the broker.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::config::{Config, IceServer};

const INDEX: &str = include_str!("../web/dist/index.html");
const APP: &str = include_str!("../web/dist/app.js");
const STYLE: &str = include_str!("../web/dist/style.css");

/// What the page is told at `config.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PageConfig {
    /// The broker's WebSocket URL; `None` lets the page use `ws_port` on the
    /// host it was loaded from.
    pub broker: Option<String>,
    pub ws_port: Option<u16>,
    pub prefix: String,
    /// The room the page joins when its URL names none.
    pub room: Option<String>,
    /// Named as the browser's `RTCConfiguration` names them.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

impl PageConfig {
    /// What the page needs of `config`; `ws_port` is the embedded broker's
    /// WebSocket port, if it runs.
    pub fn new(config: &Config, room: Option<String>, ws_port: Option<u16>) -> Self {
        let broker_url = &config.web.broker_url;
        Self {
            broker: (!broker_url.is_empty()).then(|| broker_url.clone()),
            ws_port,
            prefix: config.mqtt.prefix.clone(),
            room,
            ice_servers: config.webrtc.ice_servers.clone(),
        }
    }
}

fn app(page: PageConfig) -> Router {
    let config = serde_json::to_string(&page).expect("page config serialises");
    let html = || async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) };
    Router::new()
        .route("/", get(html))
        .route("/index.html", get(html))
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP) }),
        )
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route(
            "/config.json",
            get(move || {
                let config = config.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], config).into_response() }
            }),
        )
}

/// Binds `listen` and serves the viewer for as long as the runtime runs;
/// returns the URL to open.
pub async fn start(listen: SocketAddr, page: PageConfig) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let host = if bound.ip().is_unspecified() {
        "<this-host>".to_string()
    } else {
        bound.ip().to_string()
    };
    let query = page
        .room
        .as_ref()
        .map(|room| format!("?room={room}"))
        .unwrap_or_default();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app(page)).await {
            tracing::error!(error = %e, "the viewer page server stopped");
        }
    });
    Ok(format!("http://{host}:{}/{query}", bound.port()))
}
