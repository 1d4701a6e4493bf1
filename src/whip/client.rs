//! The HTTP side of WHIP (RFC 9725): POST the offer, PATCH trickled
//! candidates, DELETE the resource.
//!
//! Redirects (307, 308) are followed with the same method and body, and the
//! resource's `Location` is resolved against the URL that answered. The
//! ICE servers of the answer's `Link` headers are returned for the next
//! connection: this one's offer was made before the server could name them.
//! Errors say what the server said: a refusal (4xx) and a failure (5xx,
//! the network) are told apart, as the retry rules treat them apart.
//!
//! Owns: requests, headers, the trickle fragment. Must not touch: when to
//! publish or retry ([`super::rules`]), the peer connection.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderMap, IF_MATCH, LINK, LOCATION};
use reqwest::{StatusCode, Url};

use super::rules::Failure;
use crate::config::IceServer;
use crate::protocol::Candidate;

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SDP: &str = "application/sdp";
const SDP_FRAGMENT: &str = "application/trickle-ice-sdpfrag";
const ACCEPT_PATCH: &str = "accept-patch";
/// Of a refusal's body, the part worth a log line.
const MAX_REASON: usize = 160;

/// What a request to the WHIP server ended in, when it was not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipError {
    #[error("the WHIP server refused: {status} {reason}")]
    Refused { status: u16, reason: String },
    #[error("the WHIP server failed: {status} {reason}")]
    Server { status: u16, reason: String },
    #[error("the WHIP server cannot be reached: {0}")]
    Network(String),
    #[error("the WHIP server's answer is not usable: {0}")]
    BadAnswer(String),
    /// The server does not take trickled candidates (405, 501).
    #[error("the WHIP server does not take trickled candidates")]
    NoTrickle,
}

impl WhipError {
    /// How the retry rules take it.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Refused { .. } => Failure::Refused(self.to_string()),
            _ => Failure::Unavailable(self.to_string()),
        }
    }
}

/// A publication the server accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource URL, absolute.
    pub url: Url,
    pub answer: String,
    pub etag: Option<String>,
    /// The server takes trickled candidates (`Accept-Patch`).
    pub trickle: bool,
    /// From the `Link` headers.
    pub ice_servers: Vec<IceServer>,
}

#[derive(Clone)]
pub struct WhipClient {
    http: reqwest::Client,
    endpoint: Url,
    token: Option<String>,
}

fn network(e: reqwest::Error) -> WhipError {
    // The chain says what failed: the name, the connection, the timeout.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    WhipError::Network(text)
}

/// A non-success status as an error, with the start of its body.
async fn status_error(response: reqwest::Response) -> WhipError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let mut reason: String = body.trim().chars().take(MAX_REASON).collect();
    if reason.is_empty() {
        reason = status.canonical_reason().unwrap_or_default().to_owned();
    }
    if status.is_client_error() {
        WhipError::Refused {
            status: status.as_u16(),
            reason,
        }
    } else {
        WhipError::Server {
            status: status.as_u16(),
            reason,
        }
    }
}

impl WhipClient {
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Self, WhipError> {
        let endpoint = Url::parse(endpoint)
            .map_err(|e| WhipError::Network(format!("{endpoint:?} is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(network)?;
        Ok(Self {
            http,
            endpoint,
            token,
        })
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// POSTs the offer; the server's answer and resource.
    pub async fn publish(&self, offer: &str) -> Result<Resource, WhipError> {
        let response = self
            .request(reqwest::Method::POST, self.endpoint.clone())
            .header(CONTENT_TYPE, SDP)
            .body(offer.to_owned())
            .send()
            .await
            .map_err(network)?;
        if response.status() != StatusCode::CREATED {
            if response.status().is_success() {
                return Err(WhipError::BadAnswer(format!(
                    "status {} where 201 Created is due",
                    response.status()
                )));
            }
            return Err(status_error(response).await);
        }
        let headers = response.headers().clone();
        let location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| WhipError::BadAnswer("201 without a Location".into()))?;
        let url = response
            .url()
            .join(location)
            .map_err(|e| WhipError::BadAnswer(format!("Location {location:?}: {e}")))?;
        let answer = response.text().await.map_err(network)?;
        if !answer.starts_with("v=0") {
            return Err(WhipError::BadAnswer("the body is not an SDP answer".into()));
        }
        Ok(Resource {
            url,
            answer,
            etag: header(&headers, ETAG),
            trickle: headers
                .get_all(ACCEPT_PATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains(SDP_FRAGMENT)),
            ice_servers: ice_servers(&headers),
        })
    }

    /// PATCHes an SDP fragment to the resource with `If-Match: if_match`;
    /// a server that takes no PATCH is [`WhipError::NoTrickle`].
    async fn patch(
        &self,
        resource: &Resource,
        fragment: String,
        if_match: Option<&str>,
    ) -> Result<reqwest::Response, WhipError> {
        let mut request = self
            .request(reqwest::Method::PATCH, resource.url.clone())
            .header(CONTENT_TYPE, SDP_FRAGMENT)
            .body(fragment);
        if let Some(tag) = if_match {
            request = request.header(IF_MATCH, tag);
        }
        let response = request.send().await.map_err(network)?;
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                Err(WhipError::NoTrickle)
            }
            _ => Err(status_error(response).await),
        }
    }

    /// PATCHes candidates (`None`: the end of them) as an SDP fragment.
    pub async fn trickle(&self, resource: &Resource, fragment: String) -> Result<(), WhipError> {
        self.patch(resource, fragment, resource.etag.as_deref())
            .await
            .map(drop)
    }

    /// Restarts ICE (RFC 9725 §4.3.2): PATCHes the fragment of a new offer
    /// (its new credentials) with `If-Match: "*"`; the server's fragment,
    /// with its own new credentials, and the resource's new ETag.
    pub async fn restart(
        &self,
        resource: &Resource,
        fragment: String,
    ) -> Result<(String, Option<String>), WhipError> {
        let response = self.patch(resource, fragment, Some("\"*\"")).await?;
        let etag = header(response.headers(), ETAG);
        let body = response.text().await.map_err(network)?;
        Ok((body, etag))
    }

    /// DELETEs the resource: the server frees what the publication holds.
    pub async fn delete(&self, resource: &Url) -> Result<(), WhipError> {
        let response = self
            .request(reqwest::Method::DELETE, resource.clone())
            .send()
            .await
            .map_err(network)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response).await)
        }
    }
}

/// The value of the first `name` line (`a=ice-ufrag:`) of an SDP text.
fn sdp_attribute(sdp: &str, name: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim().to_owned())
}

/// A header's value, when it is text.
fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The trickle fragment (RFC 8840) of `candidates` for the offer `offer`:
/// its ICE credentials, its first media section, the candidates, and
/// `a=end-of-candidates` when `None` is among them.
pub fn trickle_fragment(offer: &str, candidates: &[Option<Candidate>]) -> String {
    let attribute = |name| sdp_attribute(offer, name).unwrap_or_default();
    let mid = attribute("a=mid:");
    let mut fragment = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n",
        attribute("a=ice-ufrag:"),
        attribute("a=ice-pwd:"),
    );
    for candidate in candidates {
        match candidate {
            Some(c) => {
                let line = c.candidate.strip_prefix("a=").unwrap_or(&c.candidate);
                fragment.push_str(&format!("a={line}\r\n"));
            }
            None => fragment.push_str("a=end-of-candidates\r\n"),
        }
    }
    fragment
}

/// The answer after an ICE restart: the previous `answer` with the ICE
/// credentials of the server's `fragment`; `None` when the fragment has
/// none.
pub fn restarted_answer(answer: &str, fragment: &str) -> Option<String> {
    let ufrag = sdp_attribute(fragment, "a=ice-ufrag:")?;
    let pwd = sdp_attribute(fragment, "a=ice-pwd:")?;
    let lines: Vec<String> = answer
        .split("\r\n")
        .map(|line| {
            if line.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}")
            } else if line.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    Some(lines.join("\r\n"))
}

/// The ICE servers of `Link: <url>; rel="ice-server"; username=…;
/// credential=…` headers (RFC 9725 §4.6).
pub fn ice_servers(headers: &HeaderMap) -> Vec<IceServer> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|link| {
            let (url, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let mut server = IceServer::fixed(vec![url.to_owned()], String::new(), String::new());
            let mut is_ice = false;
            for param in params.split(';') {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "rel" => is_ice = value == "ice-server",
                    "username" => server.username = value.to_owned(),
                    "credential" => server.credential = value.to_owned(),
                    _ => {}
                }
            }
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| url.starts_with(s));
            (is_ice && scheme_ok).then_some(server)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_ice_servers() {
        let mut headers = HeaderMap::new();
        headers.append(
            LINK,
            r#"<stun:stun.example.net>; rel="ice-server""#.parse().unwrap(),
        );
        headers.append(
            LINK,
            concat!(
                r#"<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; "#,
                r#"credential="pass"; credential-type="password", <https://example.net/a>; rel="next""#
            )
            .parse()
            .unwrap(),
        );
        let servers = ice_servers(&headers);
        assert_eq!(servers.len(), 2, "{servers:?}");
        assert_eq!(servers[0].urls, ["stun:stun.example.net"]);
        assert_eq!(servers[1].urls, ["turn:turn.example.net?transport=udp"]);
        assert_eq!(servers[1].username, "user");
        assert_eq!(servers[1].credential, "pass");
    }

    #[test]
    fn a_restarted_answer_takes_the_servers_new_credentials() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=ice-ufrag:old1\r\n\
                      a=ice-pwd:oldpassword\r\na=candidate:1 1 udp 1 10.0.0.2 20000 typ host\r\n\
                      m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpassword\r\n";
        let restarted =
            restarted_answer(answer, "a=ice-ufrag:new2\r\na=ice-pwd:newpassword\r\n").unwrap();
        assert_eq!(restarted.matches("a=ice-ufrag:new2").count(), 2);
        assert_eq!(restarted.matches("a=ice-pwd:newpassword").count(), 2);
        assert!(!restarted.contains("old"));
        assert!(restarted.contains("a=candidate:1 1 udp 1 10.0.0.2 20000 typ host"));
        assert_eq!(restarted_answer(answer, "a=end-of-candidates\r\n"), None);
    }

    #[test]
    fn a_trickle_fragment_carries_the_offers_credentials() {
        let offer = "v=0\r\na=group:BUNDLE 0 1\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
                     a=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\n";
        let candidate = Candidate {
            candidate: "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        let fragment = trickle_fragment(offer, &[Some(candidate), None]);
        assert_eq!(
            fragment,
            "a=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\n\
             a=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n\
             a=end-of-candidates\r\n"
        );
    }

    /// A WHIP server on loopback: `/moved` redirects (307) to `/whip`,
    /// which wants the bearer `t0ken` and answers with a relative
    /// `Location` and a `Link`; `/busy` fails (503), `/ok` answers 200.
    async fn server() -> String {
        use axum::http::{HeaderMap as Headers, StatusCode as Status};
        use axum::response::IntoResponse;
        use axum::routing::{delete, post};
        async fn whip(headers: Headers, body: String) -> axum::response::Response {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer t0ken") {
                return (Status::FORBIDDEN, "Unauthorized").into_response();
            }
            assert!(
                body.starts_with("v=0"),
                "the offer arrives after the redirect"
            );
            (
                Status::CREATED,
                [
                    ("location", "resource/7"),
                    ("accept-patch", "application/trickle-ice-sdpfrag"),
                    ("etag", "\"abc\""),
                    ("link", "<stun:stun.example.net:3478>; rel=\"ice-server\""),
                ],
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
            )
                .into_response()
        }
        let app = axum::Router::new()
            .route(
                "/moved",
                post(|| async { (Status::TEMPORARY_REDIRECT, [("location", "/api/whip")]) }),
            )
            .route("/api/whip", post(whip))
            .route("/api/resource/7", delete(|| async { Status::OK }))
            .route(
                "/busy",
                post(|| async { (Status::SERVICE_UNAVAILABLE, "Janus unavailable") }),
            )
            .route("/ok", post(|| async { "v=0\r\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_redirected_post_creates_a_resource_relative_to_where_it_landed() {
        let base = server().await;
        let client = WhipClient::new(&format!("{base}/moved"), Some("t0ken".into())).unwrap();
        let resource = client.publish("v=0\r\n").await.unwrap();
        assert_eq!(resource.url.as_str(), format!("{base}/api/resource/7"));
        assert!(resource.trickle);
        assert_eq!(resource.etag.as_deref(), Some("\"abc\""));
        assert_eq!(resource.ice_servers[0].urls, ["stun:stun.example.net:3478"]);
        assert!(resource.answer.starts_with("v=0"));
        client.delete(&resource.url).await.unwrap();
    }

    #[tokio::test]
    async fn refusals_failures_and_odd_answers_are_told_apart() {
        let base = server().await;
        let refused = WhipClient::new(&format!("{base}/moved"), Some("wrong".into())).unwrap();
        let e = refused.publish("v=0\r\n").await.unwrap_err();
        assert_eq!(
            e,
            WhipError::Refused {
                status: 403,
                reason: "Unauthorized".into()
            }
        );
        assert!(matches!(e.failure(), Failure::Refused(_)));
        let busy = WhipClient::new(&format!("{base}/busy"), None).unwrap();
        let e = busy.publish("v=0\r\n").await.unwrap_err();
        assert!(matches!(e, WhipError::Server { status: 503, .. }), "{e:?}");
        assert!(matches!(e.failure(), Failure::Unavailable(_)));
        let ok = WhipClient::new(&format!("{base}/ok"), None).unwrap();
        let e = ok.publish("v=0\r\n").await.unwrap_err();
        assert!(matches!(e, WhipError::BadAnswer(_)), "{e:?}");
        let nobody = WhipClient::new("http://127.0.0.1:9/whip", None).unwrap();
        let e = nobody.publish("v=0\r\n").await.unwrap_err();
        assert!(matches!(e, WhipError::Network(_)), "{e:?}");
    }
}
