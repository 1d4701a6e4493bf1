//! A broker login with its files read: the password, the trusted roots
//! and the client certificate of an [`MqttConfig`] (whose keys are checked
//! by the configuration, `crate::config`), read once, before anything
//! connects. A wrong path or a file that is not PEM is a configuration
//! error at start, not a reconnect loop.
//!
//! The rustls configuration is built here with an explicit crypto provider,
//! because the WebRTC stack and rumqttc enable two (ring and aws-lc-rs) and
//! rustls then refuses to pick one by itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{BrokerAddress, ConfigError, MqttConfig, invalid};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
