//! The addresses the engine listens on, which are its host candidates.
//!
//! A socket bound to `0.0.0.0` receives on every interface, but a candidate
//! must name an address a viewer can reach. So a wildcard bind address
//! becomes one socket per usable interface address of its family, found
//! when the engine starts: not loopback (no viewer can reach it), not
//! link-local (`169.254/16`, `fe80::/10`: useless without a scope), not
//! unspecified. A specific bind address (loopback included, for tests and
//! for a camera that serves one interface) is used as it is. A machine
//! with no usable interface yet keeps the wildcard: the bind succeeds, and
//! the interfaces found at the next start are used.

use std::net::{IpAddr, SocketAddr};

use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};

/// The addresses to listen on for `bind`, given the machine's interface
/// addresses.
pub fn listen_addresses(bind: IpAddr, interfaces: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let mut found: Vec<IpAddr> = Vec::new();
    for ip in interfaces {
        let usable = ip.is_ipv4() == bind.is_ipv4()
            && !ip.is_loopback()
            && !ip.is_unspecified()
            && !is_link_local(ip);
        if usable && !found.contains(&ip) {
            found.push(ip);
        }
    }
    if found.is_empty() {
        found.push(bind);
    }
    found
}

/// The machine's interface addresses now.
pub fn interface_addresses() -> Vec<IpAddr> {
    match rtc::shared::ifaces::ifaces() {
        Ok(interfaces) => interfaces
            .into_iter()
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the network interfaces cannot be listed");
            Vec::new()
        }
    }
}

/// The host candidate of a socket at `address`.
pub fn host_candidate(address: SocketAddr) -> rtc::shared::error::Result<RTCIceCandidateInit> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: address.ip().to_string(),
            port: address.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    bundled(&RTCIceCandidate::from(&candidate))
}

/// A candidate of ours as signaled, for the bundled media section (the
/// first, `0`).
pub fn bundled(candidate: &RTCIceCandidate) -> rtc::shared::error::Result<RTCIceCandidateInit> {
    let mut init = candidate.to_json()?;
    init.sdp_mid.get_or_insert_with(|| "0".to_owned());
    init.sdp_mline_index.get_or_insert(0);
    Ok(init)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_becomes_every_usable_address_of_its_family() {
        let interfaces = [
            "127.0.0.1",
            "192.168.1.20",
            "169.254.3.4",
            "10.0.0.7",
            "fe80::1",
            "2001:db8::5",
            "192.168.1.20",
        ]
        .map(ip);
        assert_eq!(
            listen_addresses(ip("0.0.0.0"), interfaces),
            [ip("192.168.1.20"), ip("10.0.0.7")]
        );
        assert_eq!(listen_addresses(ip("::"), interfaces), [ip("2001:db8::5")]);
    }

    #[test]
    fn a_specific_address_is_used_as_it_is() {
        assert_eq!(
            listen_addresses(ip("127.0.0.1"), [ip("192.168.1.20")]),
            [ip("127.0.0.1")]
        );
    }

    #[test]
    fn a_machine_without_a_usable_interface_keeps_the_wildcard() {
        assert_eq!(
            listen_addresses(ip("0.0.0.0"), [ip("127.0.0.1")]),
            [ip("0.0.0.0")]
        );
    }
}
