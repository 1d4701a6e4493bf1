//! A real SFU for the tests: Debian's Janus (VideoRoom plugin, HTTP and
//! WebSocket transports) and simple-whip-server in front of it, inside a
//! network namespace (Janus gathers no candidates on loopback alone).
//!
//! Each [`Sfu`] has a configuration directory of its own: one VideoRoom
//! room, [`ROOM`], for H.264 at a bitrate above the test stream's, and
//! WHIP endpoints made with simple-whip-server's `POST /whip/create`.
//! Janus can be killed and started again on the same configuration, as a
//! real SFU restarts; simple-whip-server reconnects to it by itself.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::netns::Netns;
use super::netns::tail;
use super::{TempDir, temp_dir};

/// The VideoRoom room of every test SFU.
pub const ROOM: u64 = 1234;
pub const JANUS_HTTP_PORT: u16 = 8088;
const JANUS_WS_PORT: u16 = 8188;
pub const WHIP_PORT: u16 = 7080;
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
/// Where simple-whip-server is: Debian's package, or the copy
/// `scripts/setup test` makes where the package cannot be installed
/// (Node.js from elsewhere than Debian).
const WHIP_SERVER_DIRS: [&str; 2] = [
    "/usr/share/simple-whip-server/src",
    "/usr/local/lib/simple-whip-server/pkg/usr/share/simple-whip-server/src",
];
const NODE_PATH: &str = "/usr/local/lib/simple-whip-server/node_modules:/usr/share/nodejs";
const START: Duration = Duration::from_secs(20);

pub struct Sfu {
    janus: Option<Child>,
    whip: Child,
    ns_name: String,
    pub addr: Ipv4Addr,
    dir: TempDir,
}

fn whip_server_dir() -> PathBuf {
    WHIP_SERVER_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("server.js").exists())
        .unwrap_or_else(|| {
            panic!(
                "simple-whip-server is not installed (apt-get install simple-whip-server, \
                 or ./scripts/setup test)"
            )
        })
}

/// Janus's configuration: only the VideoRoom plugin and the HTTP and
/// WebSocket transports, one room for H.264.
fn write_janus_config(dir: &Path) {
    let conf = dir.join("janus");
    for sub in ["conf", "plugins", "transports", "none"] {
        std::fs::create_dir_all(conf.join(sub)).unwrap();
    }
    for (kind, lib) in [
        ("plugins", "libjanus_videoroom.so"),
        ("transports", "libjanus_http.so"),
        ("transports", "libjanus_websockets.so"),
    ] {
        let from = Path::new(JANUS_LIB).join(kind).join(lib);
        assert!(
            from.exists(),
            "{} is missing (apt-get install janus)",
            from.display()
        );
        std::os::unix::fs::symlink(&from, conf.join(kind).join(lib)).unwrap();
    }
    let path = |sub: &str| conf.join(sub).display().to_string();
    std::fs::write(
        conf.join("conf/janus.jcfg"),
        format!(
            "general: {{ configs_folder = \"{}\" plugins_folder = \"{}\" \
             transports_folder = \"{}\" events_folder = \"{}\" loggers_folder = \"{}\" \
             debug_level = 4 }}\nmedia: {{ rtp_port_range = \"20000-20999\" }}\nnat: {{ }}\n",
            path("conf"),
            path("plugins"),
            path("transports"),
            path("none"),
            path("none"),
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("conf/janus.plugin.videoroom.jcfg"),
        format!(
            "general: {{ }}\nroom-{ROOM}: {{ description = \"meshcam\" publishers = 4 \
             bitrate = 4000000 fir_freq = 10 videocodec = \"h264\" audiocodec = \"opus\" }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("conf/janus.transport.http.jcfg"),
        format!(
            "general: {{ json = \"compact\" base_path = \"/janus\" http = true \
             port = {JANUS_HTTP_PORT} }}\nadmin: {{ admin_http = false }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("conf/janus.transport.websockets.jcfg"),
        format!(
            "general: {{ json = \"compact\" ws = true ws_port = {JANUS_WS_PORT} }}\n\
             admin: {{ admin_ws = false }}\n"
        ),
    )
    .unwrap();
}

/// simple-whip-server's files, with a configuration of ours beside them.
fn write_whip_config(dir: &Path) -> PathBuf {
    let whip = dir.join("whip");
    std::fs::create_dir_all(&whip).unwrap();
    let from = whip_server_dir();
    for file in ["server.js", "whip-janus.js"] {
        std::fs::copy(from.join(file), whip.join(file)).unwrap();
    }
    std::fs::write(
        whip.join("config.js"),
        format!(
            "module.exports = {{ janus: {{ address: 'ws://127.0.0.1:{JANUS_WS_PORT}' }}, \
             port: {WHIP_PORT}, rest: '/whip', allowTrickle: true, strictETags: false, \
             iceServers: [] }};\n"
        ),
    )
    .unwrap();
    whip
}

impl Sfu {
    /// Starts Janus and simple-whip-server in `ns`, reachable at `addr`.
    pub fn start(ns: &Netns, addr: Ipv4Addr) -> Self {
        let dir = temp_dir("sfu");
        write_janus_config(&dir);
        let whip_dir = write_whip_config(&dir);
        let whip = ns
            .command("node")
            .arg("server.js")
            .current_dir(&whip_dir)
            .env("NODE_PATH", NODE_PATH)
            .stdout(std::fs::File::create(dir.join("whip.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("whip.err")).unwrap())
            .spawn()
            .expect("node runs (apt-get install nodejs)");
        let mut sfu = Self {
            janus: None,
            whip,
            ns_name: ns.name.clone(),
            addr,
            dir,
        };
        sfu.start_janus();
        sfu.wait_until("simple-whip-server to answer", |s| {
            s.curl(&["-f", &s.whip_url("/whip/healthcheck")]).is_ok()
        });
        sfu
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name, program]);
        c
    }

    /// Starts Janus (again) and waits until its API answers.
    pub fn start_janus(&mut self) {
        assert!(self.janus.is_none(), "Janus runs already");
        let conf = self.dir.join("janus/conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("janus.log"))
            .unwrap();
        let child = self
            .command("janus")
            .arg("-F")
            .arg(&conf)
            .arg("-C")
            .arg(conf.join("janus.jcfg"))
            .arg("-o")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("janus runs (apt-get install janus)");
        self.janus = Some(child);
        self.wait_until("Janus to answer", |s| {
            s.curl(&["-f", &format!("{}/info", s.janus_api())]).is_ok()
        });
    }

    /// Kills Janus at once, as a crash does.
    pub fn kill_janus(&mut self) {
        if let Some(mut child) = self.janus.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_until(&mut self, what: &str, ready: impl Fn(&Self) -> bool) {
        let end = Instant::now() + START;
        while !ready(self) {
            if let Some(status) = self
                .janus
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("janus exited: {status}\n{}", self.logs());
            }
            if let Ok(Some(status)) = self.whip.try_wait() {
                panic!("simple-whip-server exited: {status}\n{}", self.logs());
            }
            assert!(
                Instant::now() < end,
                "no {what} within {START:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "janus.log:\n{}\nwhip.log:\n{}\nwhip.err:\n{}",
            tail(&read("janus.log"), 30),
            tail(&read("whip.log"), 30),
            tail(&read("whip.err"), 10)
        )
    }

    /// `curl -s {args}` inside the namespace: its output, or why not.
    fn curl(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command("curl")
            .args(["-s", "--max-time", "5"])
            .args(args)
            .output()
            .map_err(|e| format!("curl does not run (apt-get install curl): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("curl {args:?}: {}", out.status))
        }
    }

    fn whip_url(&self, path: &str) -> String {
        format!("http://{}:{WHIP_PORT}{path}", self.addr)
    }

    /// The Janus HTTP API, as the camera's `whip.watch.url`.
    pub fn janus_api(&self) -> String {
        format!("http://{}:{JANUS_HTTP_PORT}/janus", self.addr)
    }

    /// Makes a WHIP endpoint into [`ROOM`]; its URL.
    pub fn create_endpoint(&self, id: &str, token: &str) -> String {
        let body = serde_json::json!({"id": id, "room": ROOM, "token": token}).to_string();
        let reply = self
            .curl(&[
                "-f",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
                &self.whip_url("/whip/create"),
            ])
            .unwrap_or_else(|e| panic!("creating WHIP endpoint {id}: {e}\n{}", self.logs()));
        assert_eq!(reply.trim(), "OK", "creating WHIP endpoint {id}");
        self.whip_url(&format!("/whip/endpoint/{id}"))
    }

    /// The endpoint `id` as simple-whip-server lists it: `enabled` while a
    /// publisher holds it.
    pub fn endpoint(&self, id: &str) -> Value {
        let list = self
            .curl(&[&self.whip_url("/whip/endpoints")])
            .unwrap_or_else(|e| panic!("listing WHIP endpoints: {e}"));
        let list: Value = serde_json::from_str(&list).expect("the endpoint list is JSON");
        list.as_array()
            .and_then(|l| l.iter().find(|e| e["id"] == id))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until endpoint `id` is (or is not) held by a publisher.
    pub fn wait_endpoint(&self, id: &str, enabled: bool, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.endpoint(id)["enabled"] != enabled {
            assert!(
                Instant::now() < end,
                "endpoint {id} not enabled={enabled} within {deadline:?}: {}\n{}",
                self.endpoint(id),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        self.kill_janus();
        let _ = self.whip.kill();
        let _ = self.whip.wait();
        if std::thread::panicking() {
            eprintln!("SFU logs:\n{}", self.logs());
        }
    }
}
