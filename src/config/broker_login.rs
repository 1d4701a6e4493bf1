//! The `[mqtt]` section: where the broker is (`mqtt.url`, parsed into a
//! [`BrokerAddress`]), the topic prefix, and the login (username, password
//! or password file, and for mqtts:// the CA and client certificate files).
//!
//! Only what can be told without reading a file is checked here; the
//! broker session (`crate::mqtt::Broker::from_config`) reads the files at
//! start. Both sides share this module, so neither imports the other.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, EMBEDDED, check_range, invalid};

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "default_mqtt_url")]
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (its trailing newline is not part of
    /// it), so that the password stays out of the configuration.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM certificates of the authorities trusted for an mqtts:// broker,
    /// instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain (and its key) with which to log in to an
    /// mqtts:// broker that asks for a client certificate.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u64,
}

fn default_mqtt_url() -> String {
    EMBEDDED.into()
}
fn default_prefix() -> String {
    "meshcam".into()
}
fn default_keepalive() -> u64 {
    30
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: default_mqtt_url(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            prefix: default_prefix(),
            keepalive_s: default_keepalive(),
        }
    }
}

impl MqttConfig {
    /// `mqtt.url` of an external broker (not `embedded`, which the caller
    /// tells apart): a scheme meshcam speaks, then a host and a port.
    pub(super) fn validate_url(&self) -> Result<(), ConfigError> {
        let scheme = self.url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "mqtt" | "mqtts") || !self.url.contains("://") {
            return Err(invalid(
                "mqtt.url",
                format!(
                    "{:?} is not supported; accepted: embedded, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
                    self.url
                ),
            ));
        }
        BrokerAddress::parse(&self.url).map_err(|message| invalid("mqtt.url", message))?;
        Ok(())
    }

    /// The other keys of the section: the topic prefix, the keepalive and
    /// the login.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty()
            || self.prefix.contains(['+', '#'])
            || self.prefix.starts_with('/')
            || self.prefix.ends_with('/')
        {
            return Err(invalid(
                "mqtt.prefix",
                "must be a topic prefix without wildcards or leading/trailing '/'",
            ));
        }
        check_range("mqtt.keepalive_s", self.keepalive_s, (5, 3600))?;
        self.validate_login()
    }

    /// What can be told of the login keys without reading their files;
    /// `mqtt::Broker::from_config` reads them at start.
    fn validate_login(&self) -> Result<(), ConfigError> {
        let files = [
            ("mqtt.password_file", &self.password_file),
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert_file", &self.client_cert_file),
            ("mqtt.client_key_file", &self.client_key_file),
        ];
        for (key, path) in files {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    key,
                    "is empty; accepted: the path of a file, or no value at all",
                ));
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(invalid(
                "mqtt.password_file",
                "give mqtt.password or mqtt.password_file, not both",
            ));
        }
        if self.username.is_none() {
            if self.password.is_some() {
                return Err(invalid("mqtt.password", "a password needs mqtt.username"));
            }
            if self.password_file.is_some() {
                return Err(invalid(
                    "mqtt.password_file",
                    "a password needs mqtt.username",
                ));
            }
        }
        if !self.url.starts_with("mqtts://") {
            for (key, path) in &files[1..] {
                if path.is_some() {
                    return Err(invalid(
                        key,
                        format!(
                            "is for TLS, accepted with mqtt.url = mqtts://HOST[:PORT] only, not {:?}",
                            self.url
                        ),
                    ));
                }
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => Err(invalid(
                "mqtt.client_key_file",
                "missing: mqtt.client_cert_file needs the certificate's key",
            )),
            (None, Some(_)) => Err(invalid(
                "mqtt.client_cert_file",
                "missing: mqtt.client_key_file needs its certificate",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

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
    fn login_keys_go_together_and_tls_keys_need_mqtts() {
        let tls = "[mqtt]\nurl = \"mqtts://b\"\nusername = \"u\"\n";
        let c = Config::from_toml(&format!(
            "{tls}password_file = \"/p\"\nca_file = \"/ca\"\n\
             client_cert_file = \"/c\"\nclient_key_file = \"/k\""
        ))
        .unwrap();
        assert_eq!(c.mqtt.ca_file, Some(PathBuf::from("/ca")));
        let e = error_of(&format!("{tls}password = \"x\"\npassword_file = \"/p\""));
        assert!(
            e.contains("mqtt.password_file") && e.contains("not both"),
            "{e}"
        );
        let e = error_of("[mqtt]\nurl = \"mqtt://b\"\npassword_file = \"/p\"");
        assert!(
            e.contains("mqtt.password_file") && e.contains("mqtt.username"),
            "{e}"
        );
        let e = error_of("[mqtt]\nurl = \"mqtt://b\"\nca_file = \"/ca\"");
        assert!(e.contains("mqtt.ca_file") && e.contains("mqtts://"), "{e}");
        let e = error_of("[mqtt]\nclient_key_file = \"/k\"");
        assert!(
            e.contains("mqtt.client_key_file") && e.contains("mqtts://"),
            "{e}"
        );
        let e = error_of(&format!("{tls}client_cert_file = \"/c\""));
        assert!(
            e.contains("mqtt.client_key_file") && e.contains("missing"),
            "{e}"
        );
        let e = error_of(&format!("{tls}client_key_file = \"/k\""));
        assert!(
            e.contains("mqtt.client_cert_file") && e.contains("missing"),
            "{e}"
        );
        let e = error_of(&format!("{tls}ca_file = \"\""));
        assert!(e.contains("mqtt.ca_file") && e.contains("path"), "{e}");
    }
}
