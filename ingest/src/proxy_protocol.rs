//! The PROXY protocol (versions 1 and 2), as a load balancer in front of the
//! RTMP(S) listeners sends it: one header before the client's own bytes,
//! naming the client's address.
//!
//! Sans-IO: [`parse`] takes the bytes received so far and says whether the
//! header is complete (and how long it was), needs more bytes, or is not a
//! valid header. It never reads past the header, so the driver hands the
//! rest of the buffer to the protocol that follows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included.
pub const V1_MAX: usize = 107;
/// The longest version 2 header accepted (TLVs included); the format allows
/// 16 + 65535 bytes, no proxy needs that much before RTMP.
pub const V2_MAX: usize = 16 + 512;

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header took.
    pub len: usize,
    /// The client's address; `None` for `UNKNOWN` (v1) or `LOCAL`/unspecified
    /// (v2): the connection is the proxy's own (health checks).
    pub source: Option<SocketAddr>,
}

/// What the bytes so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    Complete(Header),
    /// A valid beginning: at least this many more bytes are needed.
    Incomplete(usize),
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 header")]
    BadV1,
    #[error("malformed PROXY v2 header")]
    BadV2,
    #[error("PROXY header too long")]
    TooLong,
}

/// Parse the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf[..n] == v1[..n] && !buf.is_empty() {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        if buf.is_empty() {
            return Ok(Parsed::Incomplete(1));
        }
        return parse_v2(buf);
    }
    Err(ProxyError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        // A lone CR must be followed by LF, nothing else.
        if buf.contains(&b'\n') {
            return Err(ProxyError::BadV1);
        }
        return Ok(Parsed::Incomplete(1));
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(ProxyError::TooLong);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::BadV1)?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let source = match parts.next() {
        Some("UNKNOWN") => None,
        Some(fam @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::BadV1);
            };
            let (src, dst): (IpAddr, IpAddr) = match fam {
                "TCP4" => (
                    IpAddr::V4(src.parse().map_err(|_| ProxyError::BadV1)?),
                    IpAddr::V4(dst.parse().map_err(|_| ProxyError::BadV1)?),
                ),
                _ => (
                    IpAddr::V6(src.parse().map_err(|_| ProxyError::BadV1)?),
                    IpAddr::V6(dst.parse().map_err(|_| ProxyError::BadV1)?),
                ),
            };
            let _ = dst;
            let port = |p: &str| -> Result<u16, ProxyError> {
                // Decimal without a sign or leading zero.
                if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                    return Err(ProxyError::BadV1);
                }
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProxyError::BadV1);
                }
                p.parse().map_err(|_| ProxyError::BadV1)
            };
            let sport = port(sport)?;
            port(dport)?;
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyError::BadV1),
    };
    Ok(Parsed::Complete(Header { len, source }))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        if buf.len() > 12 && buf[12] >> 4 != 2 {
            return Err(ProxyError::BadV2);
        }
        return Ok(Parsed::Incomplete(16 - buf.len()));
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadV2);
    }
    let family = buf[13];
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    if len > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete(len - buf.len()));
    }
    let addr = &buf[16..len];
    let source = match ver_cmd & 0x0f {
        // LOCAL: the proxy's own connection; the addresses are ignored.
        0x0 => None,
        0x1 => match family {
            // TCP or UDP over IPv4.
            0x11 | 0x12 => {
                if addr.len() < 12 {
                    return Err(ProxyError::BadV2);
                }
                let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                let port = u16::from_be_bytes([addr[8], addr[9]]);
                Some(SocketAddr::new(IpAddr::V4(ip), port))
            }
            // TCP or UDP over IPv6.
            0x21 | 0x22 => {
                if addr.len() < 36 {
                    return Err(ProxyError::BadV2);
                }
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addr[..16]);
                let port = u16::from_be_bytes([addr[32], addr[33]]);
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
            }
            // UNSPEC or a Unix socket: no client address to take.
            0x00 | 0x31 | 0x32 => None,
            _ => return Err(ProxyError::BadV2),
        },
        _ => return Err(ProxyError::BadV2),
    };
    Ok(Parsed::Complete(Header { len, source }))
}

/// A version 2 header for `source` → `dest` (TCP), as a proxy writes it:
/// for tests and tools.
pub fn v2_header(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x21);
    match (source, dest) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1935\r\n\x03rest";
        assert_eq!(
            parse(h),
            Ok(Parsed::Complete(Header {
                len: 42,
                source: Some(sa("192.0.2.7:56324"))
            }))
        );
        assert_eq!(h[42], 3, "the length stops before the client's bytes");
        let h6 = b"PROXY TCP6 2001:db8::1 ::1 4000 443\r\n";
        assert_eq!(
            parse(h6).unwrap(),
            Parsed::Complete(Header {
                len: h6.len(),
                source: Some(sa("[2001:db8::1]:4000"))
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Parsed::Complete(Header {
                len: 15,
                source: None
            })
        );
        for partial in [&b"P"[..], b"PROXY", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"] {
            assert!(
                matches!(parse(partial), Ok(Parsed::Incomplete(_))),
                "{partial:?}"
            );
        }
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".to_vec(), vec![b'1'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        assert_eq!(parse(b"\x03\x00\x00"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v2_headers() {
        let h = v2_header(sa("198.51.100.9:5000"), sa("10.0.0.1:1935"));
        let mut buf = h.clone();
        buf.extend_from_slice(b"\x03after");
        assert_eq!(
            parse(&buf).unwrap(),
            Parsed::Complete(Header {
                len: 28,
                source: Some(sa("198.51.100.9:5000"))
            })
        );
        for cut in 0..h.len() {
            assert!(
                matches!(parse(&h[..cut]), Ok(Parsed::Incomplete(n)) if n >= 1 && cut + n <= h.len()),
                "cut at {cut}"
            );
        }
        let h6 = v2_header(sa("[2001:db8::7]:9"), sa("[::1]:1935"));
        assert_eq!(
            parse(&h6).unwrap(),
            Parsed::Complete(Header {
                len: 52,
                source: Some(sa("[2001:db8::7]:9"))
            })
        );
        // LOCAL: no client address.
        let mut local = h.clone();
        local[12] = 0x20;
        assert!(matches!(
            parse(&local),
            Ok(Parsed::Complete(Header { source: None, .. }))
        ));
        let mut bad_version = h.clone();
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyError::BadV2));
        let mut bad_cmd = h.clone();
        bad_cmd[12] = 0x2f;
        assert_eq!(parse(&bad_cmd), Err(ProxyError::BadV2));
        let mut short = h.clone();
        short[15] = 4;
        assert_eq!(parse(&short[..20]), Err(ProxyError::BadV2));
        let mut huge = h.clone();
        huge[14] = 0xff;
        assert_eq!(parse(&huge), Err(ProxyError::TooLong));
        // TLVs after the addresses are skipped.
        let mut tlv = h[..16].to_vec();
        tlv[15] = 12 + 5;
        tlv.extend_from_slice(&h[16..]);
        tlv.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        assert!(matches!(
            parse(&tlv),
            Ok(Parsed::Complete(Header { len: 33, .. }))
        ));
    }

    /// The fuzz target's properties on mutated headers (a quick stand-in
    /// for `scripts/fuzz.sh run`): no panic, a complete header fits the
    /// input and parses alone to the same result.
    #[test]
    fn mutated_headers_never_panic() {
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1935\r\n\x03".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::1 4000 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2_header(sa("198.51.100.9:5000"), sa("10.0.0.1:1935")),
            v2_header(sa("[2001:db8::7]:9"), sa("[::1]:1935")),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..200_000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let at = (r >> 8) as usize % (b.len() + 1);
                match r % 4 {
                    0 if at < b.len() => b[at] = (r >> 32) as u8,
                    1 => b.insert(at, (r >> 32) as u8),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            match parse(&b) {
                Ok(Parsed::Complete(h)) => {
                    assert!(h.len <= b.len() && h.len >= 15, "{b:?}");
                    assert_eq!(parse(&b[..h.len]), Ok(Parsed::Complete(h)));
                }
                Ok(Parsed::Incomplete(n)) => assert!(n >= 1),
                Err(_) => {}
            }
        }
    }
}
