//! The networks between a camera at home and a viewer elsewhere, as
//! network namespaces: a "public" namespace (the internet: the broker
//! and coturn, Debian's STUN and TURN server, run there) joined to a home
//! router and a mobile router, each doing source NAT with nftables for
//! the LAN behind it, where the camera and the viewer sit.
//!
//! ```text
//!  camera 192.168.N.2 ── home router ── 100.64.N.1 public 100.65.N.1 ── mobile router ── viewer 10.77.N.2
//!                        .1 | 100.64.N.2                    100.65.N.2 | .1
//! ```
//!
//! A [`NatKind`] says how a router maps: like a home router (one mapping
//! per socket whatever the destination, replies only from where it sent:
//! hole punching works between two of them) or symmetric (a mapping per
//! destination, so the port a STUN server saw is useless to a peer: only
//! a relay gets through). The public namespace knows no route into the
//! LANs, so nothing reaches them but through their router.

use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::netns::{CameraNet, Netns, veth};

/// How a router maps its LAN's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping, address-and-port-dependent filtering
    /// (Linux's masquerade keeps the source port).
    PortRestricted,
    /// A new random port for every destination (`masquerade random`).
    Symmetric,
}

/// One router and the LAN behind it.
pub struct Site {
    /// Dropped before the router: fields go in declaration order.
    pub lan: Netns,
    pub router: Netns,
    /// The host's address on its LAN.
    pub addr: Ipv4Addr,
    /// The router's address on the public side: what the others see.
    pub public_addr: Ipv4Addr,
    /// The public namespace's address on this router's link: where the
    /// host reaches the broker and the servers.
    pub server_addr: Ipv4Addr,
}

/// A home and a mobile network behind their routers, and the public
/// namespace between them.
pub struct Nat {
    pub home: Site,
    pub mobile: Site,
    pub public: Netns,
}

impl Nat {
    pub fn new(home: NatKind, mobile: NatKind) -> Self {
        Self::try_new(home, mobile).unwrap_or_else(|e| panic!("NAT namespaces: {e}"))
    }

    fn try_new(home_kind: NatKind, mobile_kind: NatKind) -> Result<Self, String> {
        let (n, base) = super::netns::fresh_names();
        let subnet = 200 + (n % 50) as u8;
        let public = Netns::create(format!("{base}-p"))?;
        forward(&public)?;
        let home = Site::new(
            &public,
            "wanh",
            &format!("{base}-h"),
            home_kind,
            Ipv4Addr::new(192, 168, subnet, 0),
            Ipv4Addr::new(100, 64, subnet, 0),
        )?;
        let mobile = Site::new(
            &public,
            "wanm",
            &format!("{base}-m"),
            mobile_kind,
            Ipv4Addr::new(10, 77, subnet, 0),
            Ipv4Addr::new(100, 65, subnet, 0),
        )?;
        Ok(Self {
            home,
            mobile,
            public,
        })
    }

    /// The broker's URL from the camera's side.
    pub fn broker_url_home(&self) -> String {
        format!(
            "mqtt://{}:{}",
            self.home.server_addr,
            super::netns::BROKER_PORT
        )
    }

    /// The broker's URL from the viewer's side.
    pub fn broker_url_mobile(&self) -> String {
        format!(
            "mqtt://{}:{}",
            self.mobile.server_addr,
            super::netns::BROKER_PORT
        )
    }

    /// Where the broker runs, for [`super::netns::NsBroker`].
    pub fn broker_site(&self) -> BrokerSite<'_> {
        BrokerSite(self)
    }
}

/// Turns packet forwarding on in `ns`.
fn forward(ns: &Netns) -> Result<(), String> {
    let status = ns
        .command("sysctl")
        .args(["-q", "-w", "net.ipv4.ip_forward=1"])
        .status()
        .map_err(|e| format!("sysctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sysctl in {} failed: {status}", ns.name))
    }
}

/// Runs `nft` with `args` in `ns`.
fn nft(ns: &Netns, args: &str) -> Result<(), String> {
    let out = ns
        .command("nft")
        .arg(args)
        .output()
        .map_err(|e| format!("nft does not run (apt-get install nftables): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {args} in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Site {
    /// A LAN `lan_net`.0/24 behind a router whose public side is on
    /// `wan_net`.0/24, linked to `public` by its device `public_dev`.
    fn new(
        public: &Netns,
        public_dev: &str,
        name: &str,
        kind: NatKind,
        lan_net: Ipv4Addr,
        wan_net: Ipv4Addr,
    ) -> Result<Self, String> {
        let at = |net: Ipv4Addr, host: u8| {
            let [a, b, c, _] = net.octets();
            Ipv4Addr::new(a, b, c, host)
        };
        let router = Netns::create(format!("{name}r"))?;
        let lan = Netns::create(format!("{name}l"))?;
        let (server_addr, public_addr) = (at(wan_net, 1), at(wan_net, 2));
        let (gateway, addr) = (at(lan_net, 1), at(lan_net, 2));
        veth(
            (public, public_dev, server_addr),
            (&router, "wan1", public_addr),
        )?;
        veth((&router, "lan0", gateway), (&lan, "lan1", addr))?;
        lan.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
        router.ip(&["route", "add", "default", "via", &server_addr.to_string()])?;
        forward(&router)?;
        let masquerade = match kind {
            NatKind::PortRestricted => "masquerade",
            NatKind::Symmetric => "masquerade random",
        };
        nft(&router, "add table ip nat")?;
        nft(
            &router,
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        )?;
        nft(
            &router,
            &format!("add rule ip nat post oifname \"wan1\" {masquerade}"),
        )?;
        // Nothing from outside reaches the LAN or the router unless it
        // answers what the LAN sent. Dropping at the router's own input
        // matters too, as real routers do: a datagram let in there to an
        // unmapped port would hold that port, and the LAN socket's next
        // mapping would get another one.
        nft(&router, "add table ip filter")?;
        for hook in ["forward", "input"] {
            nft(
                &router,
                &format!(
                    "add chain ip filter {hook}_wan {{ type filter hook {hook} priority 0 ; policy drop ; }}"
                ),
            )?;
            nft(
                &router,
                &format!("add rule ip filter {hook}_wan iifname \"lan0\" accept"),
            )?;
            nft(
                &router,
                &format!("add rule ip filter {hook}_wan ct state established,related accept"),
            )?;
        }
        Ok(Self {
            lan,
            router,
            addr,
            public_addr,
            server_addr,
        })
    }
}

/// The camera at home, for [`super::netns::NsCamera`]: it reaches the
/// broker across its router.
impl CameraNet for Nat {
    fn cam(&self) -> &Netns {
        &self.home.lan
    }

    fn cam_addrs(&self) -> Vec<Ipv4Addr> {
        vec![self.home.server_addr]
    }

    fn cam_bind(&self) -> Ipv4Addr {
        self.home.addr
    }
}

/// The public namespace as where the broker runs, listening on its
/// address towards each router.
pub struct BrokerSite<'a>(&'a Nat);

impl CameraNet for BrokerSite<'_> {
    fn cam(&self) -> &Netns {
        &self.0.public
    }

    fn cam_addrs(&self) -> Vec<Ipv4Addr> {
        vec![self.0.home.server_addr, self.0.mobile.server_addr]
    }

    fn cam_bind(&self) -> Ipv4Addr {
        self.0.home.server_addr
    }
}

/// coturn in the public namespace: STUN and TURN on port 3478 of both its
/// addresses, relaying from the home side's, long-term credentials (a user
/// and password, or TURN REST credentials from a shared secret), and
/// set up as a TURN server on the internet must be: no relaying to
/// private addresses (it would reach its own LAN; here, a send to a LAN
/// it has no route to fails, and coturn then stops relaying for that
/// allocation).
pub struct Coturn {
    child: Option<Child>,
    _dir: super::TempDir,
    args: Vec<String>,
    ns: String,
}

pub const TURN_PORT: u16 = 3478;
pub const TURN_USER: &str = "camera";
pub const TURN_PASSWORD: &str = "turn-secret";

impl Coturn {
    /// With the user [`TURN_USER`] and its password.
    pub fn start(nat: &Nat) -> Self {
        Self::start_with(nat, vec![format!("--user={TURN_USER}:{TURN_PASSWORD}")])
    }

    /// Taking credentials minted from `secret` (`use-auth-secret`).
    pub fn with_secret(nat: &Nat, secret: &str) -> Self {
        Self::start_with(
            nat,
            vec![
                "--use-auth-secret".to_owned(),
                format!("--static-auth-secret={secret}"),
            ],
        )
    }

    fn start_with(nat: &Nat, auth: Vec<String>) -> Self {
        let dir = super::temp_dir("coturn");
        let mut args = vec![
            // Not Debian's /etc/turnserver.conf: only what is given here.
            "-c".to_owned(),
            "/dev/null".to_owned(),
            "-n".to_owned(),
            format!("--listening-ip={}", nat.home.server_addr),
            format!("--listening-ip={}", nat.mobile.server_addr),
            format!("--relay-ip={}", nat.home.server_addr),
            format!("--listening-port={TURN_PORT}"),
            "--min-port=49160".to_owned(),
            "--max-port=49200".to_owned(),
            "--lt-cred-mech".to_owned(),
            "--realm=meshcam".to_owned(),
            "--no-tls".to_owned(),
            "--no-dtls".to_owned(),
            "--no-cli".to_owned(),
            "--no-tcp-relay".to_owned(),
            "--denied-peer-ip=10.0.0.0-10.255.255.255".to_owned(),
            "--denied-peer-ip=172.16.0.0-172.31.255.255".to_owned(),
            "--denied-peer-ip=192.168.0.0-192.168.255.255".to_owned(),
            format!("--pidfile={}", dir.join("turnserver.pid").display()),
            format!("--log-file={}", dir.join("turnserver.log").display()),
            "--simple-log".to_owned(),
        ];
        args.extend(auth);
        let mut coturn = Self {
            child: None,
            _dir: dir,
            args,
            ns: nat.public.name.clone(),
        };
        coturn.spawn(nat);
        coturn
    }

    fn spawn(&mut self, nat: &Nat) {
        let child = nat
            .public
            .command("turnserver")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (apt-get install coturn)");
        self.child = Some(child);
        // Listening once a TCP connection to its port is taken.
        let addr = std::net::SocketAddr::from((nat.home.server_addr, TURN_PORT));
        let end = Instant::now() + Duration::from_secs(10);
        while !nat.public.enter(move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        }) {
            assert!(
                Instant::now() < end,
                "coturn in {} did not listen on {addr}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Kills it, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`Coturn::kill`].
    pub fn restart(&mut self, nat: &Nat) {
        assert!(self.child.is_none(), "kill first");
        self.spawn(nat);
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.kill();
    }
}
