//! The configured ICE servers, as the engine's gatherer takes them: each
//! URL parsed and its host resolved. A URL that cannot be used is said
//! and left out; the others still serve.

use std::net::SocketAddr;

use rtc::ice::url::{ProtoType, SchemeType, Url};
use rtc::peer_connection::configuration::RTCIceServer;

use crate::engine::gather::{Credentials, Server};

/// A server URL, understood but not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub url: String,
    /// `host:port`, brackets around an IPv6 address.
    pub host_port: String,
    pub turn: Option<Credentials>,
}

/// What the engine can use of `servers`: STUN, and TURN over UDP.
pub fn wanted(servers: &[RTCIceServer]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for server in servers {
        for raw in &server.urls {
            match understood(raw, server) {
                Ok(w) => out.push(w),
                Err(reason) => tracing::warn!(url = %raw, %reason, "an ICE server left out"),
            }
        }
    }
    out
}

fn understood(raw: &str, server: &RTCIceServer) -> Result<Wanted, String> {
    // `?transport=udp` on a STUN URL is common and harmless.
    let stun_without_query = raw
        .starts_with("stun:")
        .then(|| raw.split('?').next())
        .flatten();
    let url = Url::parse_url(stun_without_query.unwrap_or(raw)).map_err(|e| e.to_string())?;
    let turn = match url.scheme {
        SchemeType::Stun => None,
        SchemeType::Turn if url.proto == ProtoType::Udp => Some(Credentials {
            username: server.username.clone(),
            password: server.credential.clone(),
        }),
        SchemeType::Turn => return Err("TURN over TCP is not supported yet".into()),
        SchemeType::Stuns | SchemeType::Turns => {
            return Err("STUN and TURN over TLS are not supported yet".into());
        }
        _ => return Err("not a STUN or TURN URL".into()),
    };
    let host_port = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    Ok(Wanted {
        url: raw.to_owned(),
        host_port,
        turn,
    })
}

/// Resolves each wanted server; one whose name does not resolve is said
/// and left out.
pub async fn resolve(wanted: Vec<Wanted>) -> Vec<Server> {
    let mut servers = Vec::new();
    for w in wanted {
        match tokio::net::lookup_host(&w.host_port).await {
            Ok(addresses) => {
                let addresses: Vec<SocketAddr> = addresses.collect();
                // One address per family: the gatherer picks the socket's.
                for v4 in [true, false] {
                    if let Some(address) = addresses.iter().find(|a| a.is_ipv4() == v4) {
                        servers.push(Server {
                            url: w.url.clone(),
                            address: *address,
                            turn: w.turn.clone(),
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(url = %w.url, error = %e, "an ICE server's name does not resolve")
            }
        }
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str]) -> RTCIceServer {
        RTCIceServer {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            username: "cam".into(),
            credential: "secret".into(),
        }
    }

    #[test]
    fn stun_and_udp_turn_urls_are_taken_with_their_ports_and_credentials() {
        let w = wanted(&[server(&[
            "stun:stun.example.net",
            "stun:10.0.0.1:19302?transport=udp",
            "turn:turn.example.net:3479?transport=udp",
            "turn:[2001:db8::1]",
        ])]);
        assert_eq!(
            w.iter().map(|w| w.host_port.as_str()).collect::<Vec<_>>(),
            [
                "stun.example.net:3478",
                "10.0.0.1:19302",
                "turn.example.net:3479",
                "[2001:db8::1]:3478"
            ]
        );
        assert_eq!(w[0].turn, None);
        let credentials = w[2].turn.as_ref().expect("a TURN server");
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("cam", "secret")
        );
    }

    #[test]
    fn what_the_engine_cannot_use_is_left_out() {
        let w = wanted(&[server(&[
            "turn:turn.example.net?transport=tcp",
            "turns:turn.example.net",
            "stuns:stun.example.net",
            "http://example.net",
            "stun:ok.example.net",
        ])]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].url, "stun:ok.example.net");
    }

    #[tokio::test]
    async fn literal_addresses_resolve_and_unknown_names_are_left_out() {
        let servers = resolve(wanted(&[server(&[
            "stun:127.0.0.1:3478",
            "stun:name.invalid",
        ])]))
        .await;
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].address, SocketAddr::from(([127, 0, 0, 1], 3478)));
    }
}
