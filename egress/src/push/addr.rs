//! Which destinations an output may reach. An output makes the node open a
//! connection wherever an account says; without a check that is a way to
//! probe and talk to the operator's internal network (server-side request
//! forgery). By default only public unicast addresses are allowed; the
//! operator opens loopback and private ranges with `allow_private`.
//!
//! The address is checked after resolution and the connection goes to that
//! same address, so a name that resolves differently a moment later (DNS
//! rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// True for addresses of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64: an IPv4 inside
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240) // reserved
}

/// The refusal shown in the API.
pub fn refusal(host: &str) -> String {
    format!(
        "{host} is a loopback, private or reserved address; the operator allows those with --outputs-allow-private"
    )
}

/// Resolve `host:port` to the address to connect to: the first public
/// one, or the first of any kind when private ones are allowed.
pub async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("resolving {host}: no address"));
    }
    addrs
        .into_iter()
        .find(|a| allow_private || is_public(a.ip()))
        .ok_or_else(|| refusal(host))
}

/// For the API: a host written as an address that is not public (a name is
/// checked when it is resolved, at connect time).
pub fn literal_is_private(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_reserved_ranges_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(s.parse().unwrap()), "{s}");
            assert!(literal_is_private(s), "{s}");
        }
        for s in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(s.parse().unwrap()), "{s}");
        }
        assert!(!literal_is_private("a.rtmp.youtube.com"));
    }

    #[tokio::test]
    async fn resolution_refuses_local_names_unless_allowed() {
        let e = resolve("127.0.0.1", 1935, false).await.unwrap_err();
        assert!(e.contains("--outputs-allow-private"), "{e}");
        let a = resolve("127.0.0.1", 1935, true).await.unwrap();
        assert_eq!(a, "127.0.0.1:1935".parse().unwrap());
    }
}
