//! The client's address behind a trusted HTTP proxy: `Forwarded: for=`
//! (RFC 7239) or, without it, `X-Forwarded-For`.
//!
//! Only when the TCP peer is a trusted proxy are the headers read at all.
//! The chain is walked from the right (the entry the nearest proxy added):
//! trusted proxies are skipped, and the first address that is not one is
//! the client. An entry that is not an address (`unknown`, an obfuscated
//! name, garbage) ends the walk: nothing left of it can be believed, so the
//! last trusted hop is taken instead. Sans-IO: strings in, an address out.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use banyan_ingest::net::TrustedProxies;

/// One node of a forwarding chain: an address with or without a port,
/// IPv6 in brackets (the port is optional there too), quotes allowed.
fn node(s: &str) -> Option<SocketAddr> {
    let s = s.trim().trim_matches('"').trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| SocketAddr::new(IpAddr::V6(v6), 0))
}

/// The `for=` nodes of `Forwarded` header values, in order (`None` for an
/// element without a usable `for=`).
fn forwarded_chain(values: &[&str]) -> Vec<Option<SocketAddr>> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| node(v))?
            })
        })
        .collect()
}

/// The nodes of `X-Forwarded-For` header values, in order.
fn xff_chain(values: &[&str]) -> Vec<Option<SocketAddr>> {
    values.iter().flat_map(|v| v.split(',')).map(node).collect()
}

/// The client behind `peer`, given the raw values of the `Forwarded` and
/// `X-Forwarded-For` headers (the former wins when present).
pub fn client_from(
    peer: SocketAddr,
    trusted: &TrustedProxies,
    forwarded: &[&str],
    xff: &[&str],
) -> SocketAddr {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return peer;
    }
    let chain = if forwarded.is_empty() {
        xff_chain(xff)
    } else {
        forwarded_chain(forwarded)
    };
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            Some(a) if trusted.contains(a.ip()) => client = a,
            Some(a) => return SocketAddr::new(a.ip().to_canonical(), a.port()),
            None => break,
        }
    }
    client
}

/// [`client_from`] on a request's headers.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> SocketAddr {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return peer;
    }
    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    client_from(
        peer,
        trusted,
        &values("forwarded"),
        &values("x-forwarded-for"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_are_believed_and_the_rightmost_untrusted_hop_wins() {
        let t = TrustedProxies::parse_list("127.0.0.1,10.0.0.0/8").unwrap();
        let proxy = sa("127.0.0.1:5000");
        let stranger = sa("127.0.0.3:5000");
        assert_eq!(client_from(stranger, &t, &[], &["1.2.3.4"]), stranger);
        assert_eq!(
            client_from(proxy, &TrustedProxies::default(), &[], &["1.2.3.4"]),
            proxy
        );
        assert_eq!(
            client_from(proxy, &t, &[], &["1.2.3.4"]).ip(),
            sa("1.2.3.4:0").ip()
        );
        // A spoofed left part does not count: the nearest untrusted hop does.
        assert_eq!(
            client_from(proxy, &t, &[], &["6.6.6.6, 5.5.5.5", "10.1.1.1"]).ip(),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            client_from(proxy, &t, &[], &["1.1.1.1, unknown, 10.2.2.2"]),
            sa("10.2.2.2:0")
        );
        assert_eq!(client_from(proxy, &t, &[], &[]), proxy);
        // Forwarded wins over X-Forwarded-For.
        assert_eq!(
            client_from(
                proxy,
                &t,
                &["for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""],
                &["9.9.9.9"]
            ),
            sa("[2001:db8:cafe::17]:4711")
        );
        assert_eq!(
            client_from(proxy, &t, &["For=\"[2001:db8::1]\""], &[]),
            sa("[2001:db8::1]:0")
        );
        assert_eq!(
            client_from(proxy, &t, &["for=_hidden, for=10.0.0.9"], &[]),
            sa("10.0.0.9:0")
        );
        assert_eq!(
            client_from(proxy, &t, &[], &["::ffff:1.2.3.4"]).ip(),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }
}
