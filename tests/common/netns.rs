//! Networks cameras live on, as Linux network namespaces: two namespaces
//! joined by a veth pair on a private /24, each with `lo` up and either no
//! route but the connected subnet (no default route, so no multicast route
//! either: a camera LAN without a gateway) or only a default route via the
//! other end ([`Net`]); or one camera namespace with two viewers, each on a
//! veth pair and /24 of its own, connected routes only, whose links can be
//! shaped one by one ([`Star`]: viewers on links of different capacity).
//! Mosquitto, the camera and viewers run inside them with `ip netns exec`;
//! the test process reaches the broker from a thread that joined the
//! namespace.
//!
//! Names are `mc-{pid}-{n}-{a|b|c}`; everything is removed on drop, also
//! when the test panics, and namespaces left by a test process that no
//! longer runs are removed before new ones are made. At most
//! [`MAX_NAMESPACES`] exist at once per test process. Only the addresses of
//! these namespaces are ever used. Without root (CAP_NET_ADMIN,
//! CAP_SYS_ADMIN) nothing here can work, and the caller fails saying so.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Namespaces of this process that exist now.
static ALIVE: AtomicU32 = AtomicU32::new(0);
/// Most namespaces one test process has at once: a leak fails instead of
/// piling up.
pub const MAX_NAMESPACES: u32 = 12;
const PREFIX: &str = "mc-";
/// The MQTT port of the broker inside the camera's namespace (a fresh
/// namespace has every port free).
pub const BROKER_PORT: u16 = 1883;
/// Its MQTT over WebSockets port, for the browser page.
pub const BROKER_WS_PORT: u16 = 9001;

/// What a namespace can route besides its own subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Only the connected /24: no default route, no multicast route.
    ConnectedOnly,
    /// A default route via the other end of the veth pair, nothing else.
    DefaultViaPeer,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `program` (of iproute2) with `args`; the error names the command.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{program}` (Debian package iproute2) does not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The uid this process runs as, for messages that say root is needed.
fn uid() -> u32 {
    // SAFETY: getuid(2) has no preconditions.
    unsafe { libc::getuid() }
}

/// One network namespace made by this process.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Self, String> {
        if ALIVE.fetch_add(1, Ordering::SeqCst) >= MAX_NAMESPACES {
            ALIVE.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "cannot create network namespace {name}: this process has \
                 {MAX_NAMESPACES} already (one is not dropped?)"
            ));
        }
        if let Err(e) = ip(&["netns", "add", &name]) {
            ALIVE.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "cannot create network namespace {name}: these tests need root \
                 (CAP_NET_ADMIN and CAP_SYS_ADMIN); running as uid {}: {e}",
                uid()
            ));
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip {args}` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has joined the namespace; threads it
    /// starts stay in the namespace too (an MQTT client's connection).
    pub fn enter<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on an open namespace file; it changes only
            // this thread's network namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// A script that runs `bin` inside the namespace with its arguments, for
    /// helpers that take the path of the program to start.
    pub fn wrapper(&self, dir: &Path, bin: &Path) -> PathBuf {
        let path = dir.join(format!("in-{}", self.name));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                self.name,
                bin.display()
            ),
        )
        .expect("wrapper script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("netns: {e}");
        }
        ALIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Removes namespaces of ours whose test process is gone (killed before
/// its drops ran).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Two namespaces joined by a veth pair: `cam` (the camera side, where the
/// broker runs too) at `.1` and `viewer` at `.2` of a private /24.
pub struct Net {
    /// Dropped after `viewer`: the fields go in declaration order.
    pub viewer: Netns,
    pub cam: Netns,
    pub cam_addr: Ipv4Addr,
    pub viewer_addr: Ipv4Addr,
    pub routes: Routes,
}

/// Clears what a killed run left, and names this run's namespaces: their
/// number and common prefix.
pub fn fresh_names() -> (u32, String) {
    remove_stale();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (n, format!("{PREFIX}{}-{n}", std::process::id()))
}

/// A veth pair between two namespaces, each end with its /24 address, up.
pub fn veth(a: (&Netns, &str, Ipv4Addr), b: (&Netns, &str, Ipv4Addr)) -> Result<(), String> {
    let ((a_ns, a_dev, _), (b_ns, b_dev, _)) = (a, b);
    ip(&[
        "link", "add", a_dev, "netns", &a_ns.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b_ns.name,
    ])?;
    for (ns, dev, addr) in [a, b] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

impl Net {
    /// Makes the pair; panics saying why when namespaces cannot be made.
    pub fn new(routes: Routes) -> Self {
        Self::try_new(routes).unwrap_or_else(|e| panic!("network namespaces: {e}"))
    }

    pub fn try_new(routes: Routes) -> Result<Self, String> {
        let (n, base) = fresh_names();
        let cam = Netns::create(format!("{base}-a"))?;
        let viewer = Netns::create(format!("{base}-b"))?;
        // Namespaces are separate worlds; a subnet per pair only keeps logs
        // readable.
        let subnet = 200 + (n % 50) as u8;
        let cam_addr = Ipv4Addr::new(10, 213, subnet, 1);
        let viewer_addr = Ipv4Addr::new(10, 213, subnet, 2);
        veth((&cam, "mc0", cam_addr), (&viewer, "mc1", viewer_addr))?;
        if routes == Routes::DefaultViaPeer {
            for (ns, peer) in [(&cam, viewer_addr), (&viewer, cam_addr)] {
                ns.ip(&["route", "add", "default", "via", &peer.to_string()])?;
            }
        }
        Ok(Self {
            viewer,
            cam,
            cam_addr,
            viewer_addr,
            routes,
        })
    }

    /// The broker's URL, valid in both namespaces.
    pub fn broker_url(&self) -> String {
        format!("mqtt://{}:{BROKER_PORT}", self.cam_addr)
    }

    /// Takes the link down (both ends) or up again.
    pub fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        self.cam.ip(&["link", "set", "mc0", state]).unwrap();
        self.viewer.ip(&["link", "set", "mc1", state]).unwrap();
        if up && self.routes == Routes::DefaultViaPeer {
            // A link going down takes its routes with it.
            for (ns, peer) in [(&self.cam, self.viewer_addr), (&self.viewer, self.cam_addr)] {
                let _ = ns.ip(&["route", "replace", "default", "via", &peer.to_string()]);
            }
        }
    }
}

/// Where the camera and its broker run, as [`NsBroker`] and [`NsCamera`]
/// need to know it.
pub trait CameraNet {
    /// The camera's namespace.
    fn cam(&self) -> &Netns;
    /// Its addresses on the links to the viewers; the broker listens on
    /// every one of them, and the camera reaches it on the first.
    fn cam_addrs(&self) -> Vec<Ipv4Addr>;
    /// What the camera's WebRTC binds to.
    fn cam_bind(&self) -> Ipv4Addr;
}

impl CameraNet for Net {
    fn cam(&self) -> &Netns {
        &self.cam
    }

    fn cam_addrs(&self) -> Vec<Ipv4Addr> {
        vec![self.cam_addr]
    }

    fn cam_bind(&self) -> Ipv4Addr {
        self.cam_addr
    }
}

/// One viewer's namespace in a [`Star`], and its link to the camera's.
pub struct Spoke {
    pub ns: Netns,
    /// The viewer's address.
    pub addr: Ipv4Addr,
    /// The camera namespace's address on this link: where this viewer
    /// reaches the broker and the camera.
    pub cam_addr: Ipv4Addr,
    /// The camera's end of the veth pair, where what the camera sends to
    /// this viewer leaves: the device [`Star::shape`] shapes.
    pub cam_dev: String,
}

impl Spoke {
    /// The broker's URL from this viewer's namespace.
    pub fn broker_url(&self) -> String {
        format!("mqtt://{}:{BROKER_PORT}", self.cam_addr)
    }

    /// `meshcam view` in this namespace, bound to its address, on the
    /// broker of [`NsBroker`], with `args` after the connection arguments.
    pub fn view(&self, room: &str, id: &str, args: &[&str], dir: &Path) -> LineProcess {
        let mut command = self.ns.command(super::BIN);
        command
            .args(["view", "--broker", &self.broker_url(), "--room", room])
            .args(["--bind", &self.addr.to_string(), "--id", id])
            .args(args)
            .env("RUST_LOG", "warn,rtc=error,rtc_ice=error,webrtc=error");
        LineProcess::spawn(&format!("meshcam view {id}"), command, dir)
    }
}

/// One camera namespace and two viewer namespaces, each viewer on a veth
/// pair and /24 of its own: the camera's namespace is `.1` on both
/// subnets, each viewer `.2` on its own. Connected routes only, so each
/// viewer reaches nothing but the camera's namespace, and the viewers do
/// not reach each other.
pub struct Star {
    /// Dropped before `cam`: the fields go in declaration order.
    pub viewers: [Spoke; 2],
    pub cam: Netns,
}

impl Star {
    /// Makes the namespaces and links; panics saying why when namespaces
    /// cannot be made.
    pub fn new() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("network namespaces: {e}"))
    }

    pub fn try_new() -> Result<Self, String> {
        let (n, base) = fresh_names();
        let cam = Netns::create(format!("{base}-a"))?;
        let spoke = |i: u8, suffix: &str| -> Result<Spoke, String> {
            let ns = Netns::create(format!("{base}-{suffix}"))?;
            // A subnet per link, apart from those of [`Net`].
            let subnet = 2 * (n % 100) as u8 + i;
            let cam_addr = Ipv4Addr::new(10, 214, subnet, 1);
            let addr = Ipv4Addr::new(10, 214, subnet, 2);
            let cam_dev = format!("mcv{i}");
            veth((&cam, &cam_dev, cam_addr), (&ns, "mcc", addr))?;
            Ok(Spoke {
                ns,
                addr,
                cam_addr,
                cam_dev,
            })
        };
        let viewers = [spoke(0, "b")?, spoke(1, "c")?];
        Ok(Self { viewers, cam })
    }

    /// Limits what the camera sends to viewer `i` to `rate` (tc's units:
    /// `500kbit`) with a token bucket: a 16 kB burst, and what would wait
    /// longer than `latency` (`200ms`) is dropped, as at a real bottleneck.
    pub fn shape(&self, i: usize, rate: &str, latency: &str) -> Result<(), String> {
        let dev = &self.viewers[i].cam_dev;
        self.tc(&[
            "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "16kb",
            "latency", latency,
        ])
    }

    /// Widens viewer `i`'s link past anything the camera sends, as a link
    /// that widens does: what waits in the bucket's queue goes on (deleting
    /// the shaping would drop it, a loss no widening link makes).
    pub fn unshape(&self, i: usize) -> Result<(), String> {
        let dev = &self.viewers[i].cam_dev;
        self.tc(&[
            "qdisc", "change", "dev", dev, "root", "tbf", "rate", "10gbit", "burst", "16kb",
            "latency", "100ms",
        ])
    }

    /// `tc {args}` in the camera's namespace.
    fn tc(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", &self.cam.name];
        all.extend_from_slice(args);
        run("tc", &all).map_err(|e| {
            format!(
                "cannot change the traffic control of {}: shaping needs root \
                 (CAP_NET_ADMIN) and the kernel's sch_tbf; running as uid {}: {e}",
                self.cam.name,
                uid()
            )
        })
    }
}

impl CameraNet for Star {
    fn cam(&self) -> &Netns {
        &self.cam
    }

    fn cam_addrs(&self) -> Vec<Ipv4Addr> {
        self.viewers.iter().map(|v| v.cam_addr).collect()
    }

    /// Every address: each viewer reaches the camera on its own subnet.
    fn cam_bind(&self) -> Ipv4Addr {
        Ipv4Addr::UNSPECIFIED
    }
}

/// Mosquitto inside the camera's namespace, on its veth addresses and
/// loopback, port [`BROKER_PORT`], and for browsers on the first veth
/// address, [`BROKER_WS_PORT`].
pub struct NsBroker {
    child: Child,
    _dir: super::TempDir,
}

impl NsBroker {
    pub fn start(net: &impl CameraNet) -> Self {
        let dir = super::temp_dir("ns-mosquitto");
        let conf = dir.join("mosquitto.conf");
        let addrs = net.cam_addrs();
        let listeners: String = addrs
            .iter()
            .map(ToString::to_string)
            .chain(["127.0.0.1".to_owned()])
            .map(|addr| format!("listener {BROKER_PORT} {addr}\n"))
            // One WebSockets listener: Mosquitto does not start with two
            // on one port.
            .chain([format!(
                "listener {BROKER_WS_PORT} {}\nprotocol websockets\n",
                addrs[0]
            )])
            .collect();
        std::fs::write(
            &conf,
            format!("{listeners}allow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let cam = net.cam();
        let child = cam
            .command("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        let mut broker = Self { child, _dir: dir };
        let end = Instant::now() + Duration::from_secs(10);
        for addr in addrs {
            let addr = SocketAddr::from((addr, BROKER_PORT));
            while !cam.enter(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }) {
                if let Ok(Some(status)) = broker.child.try_wait() {
                    panic!("mosquitto in {} exited: {status}", cam.name);
                }
                assert!(Instant::now() < end, "mosquitto did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        broker
    }
}

impl Drop for NsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that prints JSON lines on stdout (a viewer), with its
/// stderr in a file for failure messages.
pub struct LineProcess {
    pub child: Child,
    lines: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    stderr: PathBuf,
    pub what: String,
}

impl LineProcess {
    pub fn spawn(what: &str, mut command: Command, dir: &Path) -> Self {
        let stderr = dir.join(format!(
            "{what}-{}.stderr",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let lines = meshcam::tools::testbed::json_lines(stdout);
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            what: what.to_owned(),
        }
    }

    /// Writes one command line to its stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("{}: stdin: {e}", self.what));
        stdin.flush().unwrap();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `deadline` for a line matching `pred`; panics with the
    /// last lines and the process's stderr.
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        match self.wait_for_optional(deadline, pred) {
            Some(v) => v,
            None => {
                let exited = self.child.try_wait().ok().flatten();
                panic!(
                    "{}: no {what} within {deadline:?} (exited: {exited:?}); last lines: {:#?}\nstderr:\n{}",
                    self.what,
                    self.seen.iter().rev().take(12).rev().collect::<Vec<_>>(),
                    tail(&self.stderr(), 40)
                )
            }
        }
    }

    /// The first line within `deadline` matching `pred`, or `None` once
    /// the deadline passed or the process closed its output.
    pub fn wait_for_optional(
        &mut self,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Lines that arrive within `window`, without waiting for anything.
    pub fn drain(&mut self, window: Duration) {
        let end = Instant::now() + window;
        while let Ok(v) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push(v);
        }
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{} stderr (tail):\n{}", self.what, tail(&self.stderr(), 40));
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The camera daemon inside the camera's namespace, its WebRTC bound to
/// the veth address, on the broker of [`NsBroker`]; it can be stopped and
/// started again on the same state directory.
pub struct NsCamera {
    process: Option<meshcam::tools::testbed::CameraProcess>,
    pub id: String,
    pub dir: super::TempDir,
    toml: String,
    wrapper: PathBuf,
    broker: String,
    bind: String,
    /// Logs of the runs that ended, for failure messages.
    old_logs: String,
}

impl NsCamera {
    /// `toml` is added to a configuration with telemetry every second.
    pub fn start(net: &impl CameraNet, id: &str, toml: &str) -> Self {
        let dir = super::temp_dir(id);
        let wrapper = net.cam().wrapper(&dir, Path::new(super::BIN));
        let mut camera = Self {
            process: None,
            id: id.to_owned(),
            dir,
            toml: format!("stats_interval_s = 1\n{toml}"),
            wrapper,
            broker: format!("mqtt://{}:{BROKER_PORT}", net.cam_addrs()[0]),
            bind: net.cam_bind().to_string(),
            old_logs: String::new(),
        };
        camera.spawn();
        camera
    }

    fn spawn(&mut self) {
        let process = meshcam::tools::testbed::CameraProcess::spawn(
            &self.wrapper,
            &self.broker,
            &self.id,
            &self.toml,
            &self.dir,
            &[("MESHCAM_WEBRTC__BIND_ADDRESS", &self.bind)],
        )
        .expect("the meshcam binary runs");
        self.process = Some(process);
    }

    pub fn log(&self) -> String {
        let current = self.process.as_ref().map(|p| p.log()).unwrap_or_default();
        format!("{}{current}", self.old_logs)
    }

    /// SIGTERM, then the exit status within `deadline`.
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut process = self.process.take()?;
        super::kill(&process.child, libc::SIGTERM);
        let status = super::wait_exit(&mut process.child, deadline);
        self.old_logs.push_str(&process.log());
        self.old_logs.push_str("--- stopped ---\n");
        status
    }

    /// Starts the camera again on the same state directory.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "terminate first");
        self.spawn();
    }
}

impl Drop for NsCamera {
    fn drop(&mut self) {
        let log = self.log();
        drop(self.process.take());
        if std::thread::panicking() {
            eprintln!("camera {} log (tail):\n{}", self.id, tail(&log, 80));
        }
    }
}

/// An MQTT observer inside `ns`, on the broker of [`NsBroker`].
pub fn observer(ns: &Netns, net: &Net, id: &str, filters: &[&str]) -> super::Observer {
    observer_at(ns, net.cam_addr, id, filters)
}

/// An MQTT observer inside `ns`, on the broker of [`NsBroker`] at `broker`
/// (an address of the camera's namespace that `ns` reaches).
pub fn observer_at(ns: &Netns, broker: Ipv4Addr, id: &str, filters: &[&str]) -> super::Observer {
    let host = broker.to_string();
    let id = id.to_owned();
    let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    ns.enter(move || {
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        super::Observer::connect_with(rumqttc::MqttOptions::new(id, host, BROKER_PORT), &filters)
    })
}
