//! Where a webhook may be sent: an `http`/`https` URL whose host resolves
//! only to public addresses. Loopback, private, link-local, unique-local,
//! unspecified, shared (carrier-grade NAT), multicast and broadcast
//! addresses are refused, also when written inside an IPv6 address
//! (IPv4-mapped, IPv4-compatible, NAT64 or 6to4), unless the operator
//! allows private targets. The check runs on the URL when it is set and
//! again on every address the host resolves to at each delivery, and the
//! connection goes to the checked address only, so a name that changes
//! its answer between the check and the connection (DNS rebinding) does
//! not reach a private address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest accepted URL.
pub const MAX_URL_LEN: usize = 2048;

/// A checked webhook URL: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: reqwest::Url,
    pub host: String,
    pub port: u16,
}

/// Parse and check a `notificationUrl` (syntax only; addresses are checked
/// by [`refused_address`] once resolved).
pub fn parse(text: &str) -> Result<Target, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("notificationUrl: at most {MAX_URL_LEN} bytes"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("notificationUrl: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("notificationUrl: only http and https URLs".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("notificationUrl: no user name or password in the URL".into());
    }
    let host = match url.host_str() {
        // An IPv6 literal comes bracketed.
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err("notificationUrl: a host is required".into()),
    };
    let port = url
        .port_or_known_default()
        .ok_or("notificationUrl: no port")?;
    Ok(Target { url, host, port })
}

/// Why `ip` may not be a webhook target (the name of its range), or
/// `None` for a public address.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if a.is_multicast() || a.is_broadcast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else {
        None
    }
}

fn refused_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_unspecified() {
        return Some("unspecified");
    }
    if a.is_loopback() {
        return Some("loopback");
    }
    // An IPv4 address inside: mapped (::ffff:a.b.c.d), compatible
    // (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::).
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = a.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    if s[..6] == [0; 6] {
        return refused_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return refused_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return refused_v4(embedded(s[1], s[2]));
    }
    if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if s[0] & 0xff00 == 0xff00 {
        Some("multicast or reserved")
    } else {
        None
    }
}

/// The first refused address among `addrs` with its range, if any.
pub fn first_refused(addrs: &[SocketAddr]) -> Option<(IpAddr, &'static str)> {
    addrs
        .iter()
        .find_map(|a| refused_address(a.ip()).map(|why| (a.ip(), why)))
}

/// Resolve `target` and check every address; the addresses to connect to.
pub async fn resolve(target: &Target, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            return Err(format!(
                "notificationUrl: cannot resolve {}: {e}",
                target.host
            ))
        }
        Err(_) => {
            return Err(format!(
                "notificationUrl: resolving {} timed out",
                target.host
            ))
        }
    };
    if addrs.is_empty() {
        return Err(format!("notificationUrl: {} has no address", target.host));
    }
    if !allow_private {
        if let Some((ip, why)) = first_refused(&addrs) {
            return Err(format!(
                "notificationUrl: {} resolves to {ip}, a {why} address; webhook targets must \
                 be public (the operator may allow private ones with --webhook-allow-private)",
                target.host
            ));
        }
    }
    Ok(addrs)
}

/// How long a webhook host's name may take to resolve.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<&'static str> {
        refused_address(s.parse().unwrap())
    }

    #[test]
    fn private_ranges_are_refused_and_public_ones_pass() {
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("255.255.255.255", "multicast or reserved"),
            ("224.0.0.1", "multicast or reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local"),
            ("fc12::1", "unique-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("ff02::1", "multicast or reserved"),
        ] {
            assert_eq!(why(ip), Some(range), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        let t = parse("https://hooks.example.com/banyan?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("hooks.example.com", 443));
        let t = parse("http://[::1]:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "http://user:pw@example.com/",
            "not a url",
            "http://",
            "mailto:a@example.com",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
        // Other spellings of an address are normalised before the check.
        for (url, range) in [
            ("http://2130706433/", "loopback"),
            ("http://0177.0.0.1/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://[0:0:0:0:0:ffff:7f00:1]/", "loopback"),
            ("http://[::ffff:a9fe:a9fe]/", "link-local"),
            ("http://0/", "unspecified"),
        ] {
            let t = parse(url).unwrap();
            let ip: IpAddr = t
                .host
                .parse()
                .unwrap_or_else(|_| panic!("{url}: {}", t.host));
            assert_eq!(refused_address(ip), Some(range), "{url}");
        }
    }

    #[tokio::test]
    async fn resolution_refuses_private_unless_allowed() {
        let t = parse("http://127.0.0.1:9/").unwrap();
        let e = resolve(&t, false).await.unwrap_err();
        assert!(
            e.contains("loopback") && e.contains("--webhook-allow-private"),
            "{e}"
        );
        assert_eq!(resolve(&t, true).await.unwrap().len(), 1);
        let t = parse("http://localhost:9/").unwrap();
        assert!(resolve(&t, false).await.is_err());
    }
}
