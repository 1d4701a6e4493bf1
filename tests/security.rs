//! MQTT security with real parts: Mosquitto runs the example fleet setup of
//! `config/mosquitto` (its `mosquitto.conf` with free ports and paths of a
//! temporary directory, its `acl` unchanged, certificates made by its
//! `make-certs`, accounts made with `mosquitto_passwd`), and the camera,
//! `meshcam view` and `meshcam ctl` log in over TLS with the configuration
//! keys of `[mqtt]`.
//!
//! Refusals are shown by order, not by waiting: a client's messages reach a
//! subscriber in the order it sent them, so when a permitted message sent
//! after the forbidden ones arrives, the forbidden ones would have arrived
//! before it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use meshcam::config::MqttConfig;
use meshcam::mqtt::Broker;
use serde_json::{Value, json};

/// Accounts of the password file: the camera, a controller, a family
/// member's viewer, and a client with an account but no rights of its own.
const ACCOUNTS: [&str; 4] = ["cam1", "admin", "family", "mallory"];
/// Marks every message Mallory sends in someone else's name.
const FORGED: &str = "forged-by-mallory";

fn password(user: &str) -> String {
    format!("pw-{user}")
}

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/mosquitto")
        .join(file)
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The example broker with its three listeners on free ports.
struct Fleet {
    broker: Mosquitto,
    /// Certificates, keys, password files and the broker's configuration.
    dir: TempDir,
    /// TLS with client certificates (the example's 8884).
    cert_port: u16,
}

impl Fleet {
    fn start() -> Self {
        let dir = temp_dir("fleet");
        run(Command::new(example("make-certs"))
            .arg(dir.path())
            .arg("DNS:localhost,IP:127.0.0.1")
            .args(["cam1", "admin"]));
        let passwd = dir.join("passwd");
        for (i, user) in ACCOUNTS.iter().enumerate() {
            let mut command = Command::new("mosquitto_passwd");
            if i == 0 {
                command.arg("-c");
            }
            run(command.arg("-b").arg(&passwd).arg(user).arg(password(user)));
        }
        // Mosquitto started as root reads these as user mosquitto.
        chmod(&passwd, 0o644);
        chmod(&dir.join("server.key"), 0o644);
        std::fs::copy(example("acl"), dir.join("acl")).unwrap();

        let tls_port = meshcam::tools::testbed::free_port().unwrap();
        let cert_port = meshcam::tools::testbed::free_port().unwrap();
        let ws_port = meshcam::tools::testbed::free_port().unwrap();
        let mut conf = std::fs::read_to_string(example("mosquitto.conf")).unwrap();
        for (from, to) in [
            (
                "/etc/mosquitto/meshcam".to_string(),
                dir.display().to_string(),
            ),
            (
                "listener 8883\n".into(),
                format!("listener {tls_port} 127.0.0.1\n"),
            ),
            (
                "listener 8884\n".into(),
                format!("listener {cert_port} 127.0.0.1\n"),
            ),
            (
                "listener 9001\n".into(),
                format!("listener {ws_port} 127.0.0.1\n"),
            ),
        ] {
            assert!(conf.contains(&from), "the example no longer has {from:?}");
            conf = conf.replace(&from, &to);
        }
        let broker = Mosquitto::start_with_config(dir.to_path_buf(), &conf, tls_port, "mqtts")
            .expect("mosquitto starts with the example configuration");
        Self {
            broker,
            dir,
            cert_port,
        }
    }

    fn cert_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.cert_port)
    }

    /// A password file for `user`, with `mode`.
    fn password_file(&self, user: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(format!("{user}.password"));
        std::fs::write(&path, format!("{}\n", password(user))).unwrap();
        chmod(&path, mode);
        path
    }

    /// `[mqtt]` of a meshcam configuration for `user` on the password
    /// listener.
    fn login(&self, user: &str) -> MqttConfig {
        MqttConfig {
            url: self.broker.url(),
            username: Some(user.into()),
            password_file: Some(self.password_file(user, 0o600)),
            ca_file: Some(self.dir.join("ca.crt")),
            ..MqttConfig::default()
        }
    }

    /// `[mqtt]` for the certificate listener, with `user`'s certificate.
    fn cert_login(&self, user: &str) -> MqttConfig {
        MqttConfig {
            url: self.cert_url(),
            ca_file: Some(self.dir.join("ca.crt")),
            client_cert_file: Some(self.dir.join(format!("{user}.crt"))),
            client_key_file: Some(self.dir.join(format!("{user}.key"))),
            ..MqttConfig::default()
        }
    }

    /// A configuration file holding `mqtt`, for `meshcam view` and `ctl`.
    fn config_file(&self, name: &str, mqtt: &MqttConfig) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, format!("[mqtt]\n{}", toml_of(mqtt))).unwrap();
        path
    }

    /// A test client logged in as `mqtt` says, with client id `id`.
    fn client(&self, mqtt: &MqttConfig, id: &str, filters: &[&str]) -> Observer {
        let broker = Broker::from_config(mqtt).expect("the login's files are usable");
        Observer::connect_with(broker.options(id), filters)
    }
}

/// The keys of `mqtt` that are set, as TOML lines.
fn toml_of(mqtt: &MqttConfig) -> String {
    let value = serde_json::to_value(mqtt).unwrap();
    value
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
}

/// The environment that gives the camera `mqtt`'s login.
fn camera_env(mqtt: &MqttConfig) -> Vec<(String, String)> {
    let value = serde_json::to_value(mqtt).unwrap();
    value
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let v = v.as_str()?;
            Some((format!("MESHCAM_MQTT__{}", k.to_uppercase()), v.to_owned()))
        })
        .collect()
}

fn start_camera(fleet: &Fleet, mqtt: &MqttConfig) -> Camera {
    let env = camera_env(mqtt);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = fleet.dir.join("cam1");
    std::fs::create_dir(&dir).unwrap();
    let camera = Camera::start_with(
        Path::new(BIN),
        &fleet.broker,
        "cam1",
        &format!("rooms = [\"home\"]\n{SMALL_VIDEO}"),
        // Inside the fleet's directory, which goes with the broker.
        dir,
        &env,
    );
    // A controller's login reads the camera's retained status.
    fleet
        .client(
            &fleet.login("admin"),
            "admin-ready",
            &[&status_topic("cam1")],
        )
        .seen_or_wait_json(&status_topic("cam1"), "cam1 online", |s| {
            s["state"] == "online"
        });
    camera
}

/// `meshcam ctl --config {config} --device cam1 {args}`.
fn ctl(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args([
            "--timeout",
            &DEADLINE.as_secs().to_string(),
            "--device",
            "cam1",
        ])
        .args(args)
        .output()
        .expect("meshcam ctl runs")
}

fn reply_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ctl prints the reply as JSON")
}

fn session_of(payload: &[u8]) -> String {
    let presence: Value = serde_json::from_slice(payload).unwrap();
    presence["session"].as_str().unwrap().to_owned()
}

#[test]
fn over_tls_nobody_speaks_for_another_client_and_the_viewer_keeps_watching() {
    let fleet = Fleet::start();
    // A password file that others may read works, with a warning.
    let mut camera_login = fleet.login("cam1");
    camera_login.password_file = Some(fleet.password_file("cam1", 0o644));
    let camera = start_camera(&fleet, &camera_login);
    // The warning is the product's output to a person: it names the key
    // to fix, and nothing else about the camera differs.
    camera.wait_log(&["readable by others", "mqtt.password_file"]);

    // 1. A real viewer over TLS, its login from a configuration file.
    let viewer_config = fleet.config_file("viewer", &fleet.login("family"));
    let viewer_config = viewer_config.to_str().unwrap();
    let mut viewer = Viewer::start(
        &fleet.broker,
        "home",
        &["--id", "v1", "--config", viewer_config],
    );
    viewer.wait_frames(Some("v1"), 10);
    // A viewer's account reads every camera's status, as the browser page
    // does (meshcam/devices/+/status).
    let listed = ctl(Path::new(viewer_config), &["ls"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(r#""id":"cam1""#),
        "{listed:?}"
    );

    // The controller watches everything (the ACL lets it read meshcam/#).
    let mut admin = fleet.client(&fleet.login("admin"), "admin-watch", &["meshcam/#"]);
    admin.seen_or_wait_json(&status_topic("cam1"), "cam1 serving v1", |s| {
        s["state"] == "online" && s["viewers"] == 1
    });
    let (_, cam_presence) = admin.seen_or_wait_for("cam1's presence", |t, p| {
        t == "meshcam/rooms/home/peers/cam1" && !p.is_empty()
    });
    let (_, viewer_presence) = admin.seen_or_wait_for("v1's presence", |t, p| {
        t == "meshcam/rooms/home/peers/v1" && !p.is_empty()
    });
    let (cam_session, viewer_session) = (session_of(&cam_presence), session_of(&viewer_presence));

    // 2. Mallory, logged in as herself, speaks for the camera and the
    // viewer, then commands the camera: the broker drops all of it.
    let mallory = fleet.client(
        &fleet.login("mallory"),
        "mallory",
        &["meshcam/clients/mallory/#"],
    );
    let bye = |from: &str, to: &str, reason: &str| {
        json!({"v": 1, "type": "bye", "session": from, "to_session": to, "reason": reason})
            .to_string()
    };
    mallory.publish(
        "meshcam/rooms/home/peers/cam1",
        json!({"v": 1, "id": "cam1", "session": FORGED, "role": "camera", "name": FORGED})
            .to_string(),
        true,
    );
    mallory.publish(
        "meshcam/rooms/home/signal/cam1/v1",
        bye(&viewer_session, &cam_session, FORGED),
        false,
    );
    mallory.publish(
        "meshcam/rooms/home/signal/v1/cam1",
        bye(&cam_session, &viewer_session, FORGED),
        false,
    );
    mallory.publish(
        &status_topic("cam1"),
        json!({"v": 1, "state": "offline", "id": "cam1", "note": FORGED}).to_string(),
        true,
    );
    // 3. A command from an account without rights.
    mallory.publish(
        "meshcam/devices/cam1/cmd",
        json!({"v": 1, "id": FORGED, "cmd": "leave", "room": "home",
               "reply_to": "meshcam/clients/mallory/replies"})
        .to_string(),
        false,
    );
    // What she may send: a signal in her own name, which arrives.
    let own = "meshcam/rooms/home/signal/cam1/mallory";
    mallory.publish(own, bye("mallory-session", &cam_session, "mine"), false);
    admin.wait_for("Mallory's signal in her own name", |t, _| t == own);
    let forged: Vec<_> = admin
        .seen
        .iter()
        .filter(|(_, p)| String::from_utf8_lossy(p).contains(FORGED))
        .map(|(t, _)| t.clone())
        .collect();
    assert!(forged.is_empty(), "forged messages got through: {forged:?}");

    // The controller's command, sent after Mallory's, is the first the
    // camera received; it still serves v1 after whatever reached it.
    let admin_config = fleet.config_file("admin", &fleet.login("admin"));
    let stats = reply_of(&ctl(&admin_config, &["stats"]));
    assert_eq!(stats["ok"], true, "{stats}");
    assert_eq!(stats["result"]["commands"]["received"], 1, "{stats}");
    let connections = stats["result"]["connections"].as_array().unwrap();
    assert!(
        connections
            .iter()
            .any(|c| c["peer"] == "v1" && c["state"] == "connected"),
        "{stats}"
    );
    assert!(
        !mallory
            .seen
            .iter()
            .any(|(t, _)| t.contains("/clients/mallory/")),
        "the camera answered Mallory: {:?}",
        mallory.seen
    );

    // 4. The viewer keeps receiving frames.
    let frames = viewer.frames_of("v1");
    viewer.wait_frames(Some("v1"), frames + 30);
}

#[test]
fn with_client_certificates_the_camera_logs_in_without_a_password() {
    let fleet = Fleet::start();
    let _camera = start_camera(&fleet, &fleet.cert_login("cam1"));

    let viewer_config = fleet.config_file("viewer", &fleet.login("family"));
    let mut viewer = Viewer::start(
        &fleet.broker,
        "home",
        &["--id", "v1", "--config", viewer_config.to_str().unwrap()],
    );
    viewer.wait_frames(Some("v1"), 10);

    // The certificate's CN is the user name: "admin" may command.
    let admin_config = fleet.config_file("admin", &fleet.cert_login("admin"));
    let status = reply_of(&ctl(&admin_config, &["status"]));
    assert_eq!(status["result"]["viewers"], 1, "{status}");

    // Without a certificate the listener lets nobody in.
    let anonymous = fleet.config_file(
        "anonymous",
        &MqttConfig {
            url: fleet.cert_url(),
            ca_file: Some(fleet.dir.join("ca.crt")),
            ..MqttConfig::default()
        },
    );
    let refused = ctl(&anonymous, &["status"]);
    assert_eq!(
        refused.status.code(),
        Some(i32::from(meshcam::ctl::EXIT_TIMEOUT)),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("broker:"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn unreadable_login_files_are_configuration_errors_naming_key_and_path() {
    let dir = temp_dir("bad-login");
    let missing = dir.join("no-such-ca.crt");
    let config = dir.join("meshcam.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:1\"\nca_file = \"{}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let daemon = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let view = Command::new(BIN)
        .args(["view", "--room", "home", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    for output in [daemon, view] {
        // The message is the interface: it names the key and the file.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("mqtt.ca_file") && stderr.contains(&missing.display().to_string()),
            "{stderr}"
        );
    }
}
