//! Short-lived TURN credentials from a shared secret: the TURN REST scheme
//! that coturn calls `use-auth-secret`. The username is `expiry:name` (the
//! Unix time it stops being accepted, and who it is for), the password the
//! base64 of HMAC-SHA1 of the username under the secret. The TURN server,
//! holding the same secret, checks both without a user database.
//!
//! The camera holds the secret and mints credentials for itself and for
//! each viewer it offers to (PROTOCOL.md, "ICE servers from the camera"):
//! a viewer needs no configuration, and the secret never leaves the
//! camera. What a viewer is given lasts `ttl_s`; a leaked one stops
//! working by itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::{ConfigError, IceServer};
use rtc::peer_connection::configuration::RTCIceServer;

use crate::protocol::OfferedIceServer;

/// A username and password for a TURN server with `use-auth-secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub username: String,
    pub password: String,
}

/// Credentials for `name`, accepted until `now + ttl`.
pub fn mint(secret: &str, name: &str, now: SystemTime, ttl: Duration) -> Minted {
    let expiry = (now + ttl)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let username = format!("{expiry}:{name}");
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Minted { username, password }
}

/// The configured ICE servers, their secrets read once: as the camera uses
/// them, and as it hands them to each viewer in its offers.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    servers: Vec<Configured>,
}

#[derive(Debug, Clone)]
struct Configured {
    urls: Vec<String>,
    /// Fixed credentials (or none: STUN), when there is no secret.
    username: String,
    credential: String,
    secret: Option<String>,
    ttl: Duration,
}

impl Configured {
    /// Its credentials for `name`: minted from the secret, or the fixed
    /// ones.
    fn credentials(&self, name: &str, now: SystemTime) -> (String, String) {
        match &self.secret {
            Some(secret) => {
                let minted = mint(secret, name, now, self.ttl);
                (minted.username, minted.password)
            }
            None => (self.username.clone(), self.credential.clone()),
        }
    }
}

impl IceServers {
    /// From `webrtc.ice_servers`; a secret file that cannot be read is the
    /// error.
    pub fn from_config(servers: &[IceServer]) -> Result<Self, ConfigError> {
        let servers = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                Ok(Configured {
                    urls: server.urls.clone(),
                    username: server.username.clone(),
                    credential: server.credential.clone(),
                    secret: server
                        .shared_secret(&format!("webrtc.ice_servers[{i}].secret_file"))?,
                    ttl: server.ttl(),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { servers })
    }

    /// Every server, as the camera `name` uses it at `now`.
    pub fn for_camera(&self, name: &str, now: SystemTime) -> Vec<RTCIceServer> {
        self.servers
            .iter()
            .map(|server| {
                let (username, credential) = server.credentials(name, now);
                RTCIceServer {
                    urls: server.urls.clone(),
                    username,
                    credential,
                }
            })
            .collect()
    }

    /// What `viewer` is given at `now`: STUN servers as configured; TURN
    /// servers with a secret, with credentials minted for it. A server with
    /// fixed credentials is the camera's alone: its password is not handed
    /// out (its STUN URLs are). Empty when nothing is configured.
    pub fn for_viewer(&self, viewer: &str, now: SystemTime) -> Vec<OfferedIceServer> {
        self.servers
            .iter()
            .filter_map(|server| {
                let urls: Vec<String> = match server.secret {
                    Some(_) => server.urls.clone(),
                    None => server
                        .urls
                        .iter()
                        .filter(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
                        .cloned()
                        .collect(),
                };
                let (username, credential) = match server.secret {
                    Some(_) => server.credentials(viewer, now),
                    None => Default::default(),
                };
                (!urls.is_empty()).then_some(OfferedIceServer {
                    urls,
                    username,
                    credential,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_username_is_expiry_and_name_and_the_password_its_hmac_sha1() {
        let now = UNIX_EPOCH + Duration::from_secs(1_733_529_600);
        let minted = mint("north-wind", "cam-door", now, Duration::from_secs(86_400));
        assert_eq!(minted.username, "1733616000:cam-door");
        // Python: base64(hmac.new(b"north-wind", b"1733616000:cam-door", sha1).digest())
        assert_eq!(minted.password, "Efpix3n3E12QStbrzuBgxu9PGJU=");
    }

    #[test]
    fn another_secret_or_name_is_another_password() {
        let now = UNIX_EPOCH + Duration::from_secs(1_733_529_600);
        let ttl = Duration::from_secs(60);
        let a = mint("north-wind", "v-1", now, ttl);
        assert_ne!(a.password, mint("south-wind", "v-1", now, ttl).password);
        assert_ne!(a.password, mint("north-wind", "v-2", now, ttl).password);
        assert_eq!(a.username, "1733529660:v-1");
    }

    fn server(urls: &[&str], username: &str, secret: &str) -> IceServer {
        let mut s = IceServer::fixed(
            urls.iter().map(|u| (*u).to_owned()).collect(),
            username.into(),
            if username.is_empty() { "" } else { "pw" }.into(),
        );
        s.secret = secret.into();
        s.ttl_s = 600;
        s
    }

    #[test]
    fn a_viewer_gets_stun_as_configured_turn_minted_for_it_and_no_fixed_password() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let given = IceServers::from_config(&[
            server(&["stun:stun.example.net"], "", ""),
            server(
                &["turn:turn.example.net", "turns:turn.example.net:5349"],
                "",
                "s3cret",
            ),
            server(
                &["stun:fixed.example.net", "turn:fixed.example.net"],
                "cam",
                "",
            ),
        ])
        .unwrap();
        let v = given.for_viewer("v-8f2c", now);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].urls, ["stun:stun.example.net"]);
        assert!(v[0].username.is_empty() && v[0].credential.is_empty());
        assert_eq!(v[1].urls.len(), 2);
        assert_eq!(v[1].username, "1000600:v-8f2c");
        assert_eq!(
            v[1].credential,
            mint("s3cret", "v-8f2c", now, Duration::from_secs(600)).password
        );
        assert_eq!(
            v[2].urls,
            ["stun:fixed.example.net"],
            "the fixed TURN stays the camera's"
        );
        assert!(v[2].credential.is_empty());
    }

    #[test]
    fn the_camera_uses_every_server_with_fixed_or_minted_credentials() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let servers = IceServers::from_config(&[
            server(&["turn:turn.example.net"], "", "s3cret"),
            server(&["turn:fixed.example.net"], "cam", ""),
        ])
        .unwrap();
        let own = servers.for_camera("cam-door", now);
        assert_eq!(own[0].username, "1000600:cam-door");
        assert_eq!(own[1].urls, ["turn:fixed.example.net"]);
        assert_eq!(
            (own[1].username.as_str(), own[1].credential.as_str()),
            ("cam", "pw")
        );
    }

    #[test]
    fn nothing_configured_is_nothing_given_and_an_unreadable_secret_file_is_named() {
        assert!(
            IceServers::from_config(&[])
                .unwrap()
                .for_viewer("v", SystemTime::now())
                .is_empty()
        );
        let mut s = server(&["turn:t"], "", "");
        s.secret_file = Some("/nonexistent/turn-secret".into());
        let e = IceServers::from_config(&[s]).unwrap_err().to_string();
        assert!(
            e.contains("secret_file") && e.contains("/nonexistent/turn-secret"),
            "{e}"
        );
    }
}
