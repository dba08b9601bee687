//! Addresses of peers: trusted proxies (CIDR blocks) and the per-address
//! connection cap every TCP listener applies.
//!
//! * [`TrustedProxies`]: `--trusted-proxies CIDR,...`. Only a TCP peer inside
//!   one of them may tell the node who the real client is (HTTP forwarding
//!   headers, the PROXY protocol on RTMP(S)).
//! * [`PerAddress`]: open connections per source address. An entry exists
//!   only while its address holds a connection, so the map never holds more
//!   entries than the listener holds connections (itself capped by
//!   `--max-connections`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::Mutex;

/// An address block, `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The proxies whose word on the client's address is taken (none by
/// default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(blocks)
    }

    /// Parse `CIDR,CIDR,...` (empty: none).
    pub fn parse_list(s: &str) -> Result<TrustedProxies, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// Open connections per source address, with a cap.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address; given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// At most `max` connections per address (at least one).
    pub fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Count one more connection from `ip`, or `None` at its cap.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Addresses holding connections.
    pub fn addresses(&self) -> usize {
        self.open.lock().len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Count a refused connection and log it at most once per 10 s per
/// listener and reason: a flood must not flood the log.
pub fn refused(listener: &'static str, reason: &'static str, peer: IpAddr) {
    metrics::counter!("banyan_connections_refused_total", "reason" => reason, "listener" => listener)
        .increment(1);
    type Last = HashMap<(&'static str, &'static str), std::time::Instant>;
    static LAST: std::sync::Mutex<Option<Last>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    let due = map
        .get(&(listener, reason))
        .is_none_or(|t| now.duration_since(*t) >= std::time::Duration::from_secs(10));
    if due {
        map.insert((listener, reason), now);
        tracing::warn!(%peer, listener, reason, "connection refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "mapped IPv4");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let t = TrustedProxies::parse_list("127.0.0.1, 10.0.0.0/8").unwrap();
        assert!(t.contains(ip("10.9.9.9")) && !t.contains(ip("127.0.0.2")));
        assert!(TrustedProxies::parse_list("").unwrap().is_empty());
        assert!(TrustedProxies::parse_list("1.2.3.4,nope").is_err());
    }

    #[test]
    fn per_address_cap_counts_and_forgets() {
        let p = PerAddress::new(2);
        let (a, b) = (ip("127.0.0.2"), ip("127.0.0.1"));
        let s1 = p.try_acquire(a).unwrap();
        let s2 = p.try_acquire(a).unwrap();
        assert!(p.try_acquire(a).is_none(), "third from one address");
        let _other = p.try_acquire(b).expect("another address is not affected");
        drop(s1);
        assert_eq!(p.open(a), 1);
        let _s3 = p.try_acquire(a).expect("a slot came back");
        drop(s2);
        drop(_s3);
        assert_eq!(p.open(a), 0);
        assert_eq!(p.addresses(), 1, "entries go with their last connection");
    }
}
