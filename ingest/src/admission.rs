//! Who may try a key, and through which door: the admission policy that
//! every listener applies before and after looking a key up.
//!
//! * Custom ingest domains belong to one account. The node gives ingest a
//!   [`DomainAccount`] callback (filled from its certificate resolver); a
//!   key of another account arriving through a custom domain's name is
//!   refused. Ingest never sees the store.
//! * Failed publish and play attempts are limited per source address
//!   ([`FailLimiter`]): past [`FailLimit::max`] failures within
//!   [`FailLimit::window`] of the first one, every attempt from that address
//!   is refused, before the key is even looked up, until the window ends.
//!   RTMP, RTMPS and SRT share one limiter. IPv6 addresses count per /64,
//!   the smallest block a client usually holds.
//!
//! The limiter is a sans-IO core: it is given the time and never reads the
//! clock itself; [`Admission`] is the thin wrapper the drivers call.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The account owning a custom ingest domain (lowercase or not), `None`
/// for a name that is not a custom domain (the node's own names).
pub type DomainAccount = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How many failed attempts an address gets, and for how long they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailLimit {
    /// Failures allowed in one window; the next attempt is refused.
    pub max: u32,
    /// The window, counted from the first failure.
    pub window: Duration,
}

impl Default for FailLimit {
    fn default() -> Self {
        FailLimit {
            max: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// The key an address is counted under: the address itself, or its /64 for
/// IPv6 (an IPv4-mapped IPv6 address counts as the IPv4 one).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Instant,
    failures: u32,
}

#[derive(Debug)]
struct State {
    map: HashMap<IpAddr, Entry>,
    last_prune: Option<Instant>,
}

/// Failed attempts per source address, bounded: at most `capacity`
/// addresses are tracked; expired entries are pruned once per window (or
/// once a second while full), and a new address met while the map is full of live entries is not tracked
/// (counted in `banyan_auth_limiter_untracked_total`), so a flood from many
/// addresses cannot push a limited one out.
#[derive(Debug)]
pub struct FailLimiter {
    limit: FailLimit,
    capacity: usize,
    state: Mutex<State>,
}

impl FailLimiter {
    /// Addresses tracked at most by default.
    pub const CAPACITY: usize = 10_000;

    pub fn new(limit: FailLimit) -> FailLimiter {
        FailLimiter::with_capacity(limit, FailLimiter::CAPACITY)
    }

    pub fn with_capacity(limit: FailLimit, capacity: usize) -> FailLimiter {
        FailLimiter {
            limit: FailLimit {
                max: limit.max.max(1),
                window: limit.window,
            },
            capacity: capacity.max(1),
            state: Mutex::new(State {
                map: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    pub fn limit(&self) -> FailLimit {
        self.limit
    }

    /// Whether attempts from `ip` are refused at `now`.
    pub fn is_limited(&self, ip: IpAddr, now: Instant) -> bool {
        let st = self.state.lock();
        st.map.get(&bucket(ip)).is_some_and(|e| {
            e.failures >= self.limit.max
                && now.saturating_duration_since(e.start) < self.limit.window
        })
    }

    /// Count one failed attempt from `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let key = bucket(ip);
        let window = self.limit.window;
        let mut st = self.state.lock();
        let since = st
            .last_prune
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        // Prune once per window, or at most once a second while full: a
        // flood of new addresses costs no more than a lookup each.
        let full = st.map.len() >= self.capacity && !st.map.contains_key(&key);
        if since >= window || (full && since >= Duration::from_secs(1)) {
            st.map
                .retain(|_, e| now.saturating_duration_since(e.start) < window);
            st.last_prune = Some(now);
        }
        if st.map.len() >= self.capacity && !st.map.contains_key(&key) {
            metrics::counter!("banyan_auth_limiter_untracked_total").increment(1);
            return;
        }
        let e = st.map.entry(key).or_insert(Entry {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(e.start) >= window {
            *e = Entry {
                start: now,
                failures: 0,
            };
        }
        e.failures = e.failures.saturating_add(1);
    }

    /// Take back one failure of `ip` (an attempt counted as failed before
    /// its outcome was known, which then succeeded).
    pub fn forgive(&self, ip: IpAddr) {
        if let Some(e) = self.state.lock().map.get_mut(&bucket(ip)) {
            e.failures = e.failures.saturating_sub(1);
        }
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.state.lock().map.len()
    }
}

/// The admission policy of the listeners (see the module docs).
pub struct Admission {
    domain_account: DomainAccount,
    limiter: FailLimiter,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limiter", &self.limiter.limit)
            .finish()
    }
}

impl Default for Admission {
    /// No custom domains; the default failure limit.
    fn default() -> Self {
        Admission {
            domain_account: Arc::new(|_| None),
            limiter: FailLimiter::new(FailLimit::default()),
        }
    }
}

impl Admission {
    pub fn new(domain_account: DomainAccount, limit: FailLimit) -> Arc<Admission> {
        Arc::new(Admission {
            domain_account,
            limiter: FailLimiter::new(limit),
        })
    }

    /// The account owning the custom domain a TLS client named (SNI).
    pub fn domain_account(&self, server_name: &str) -> Option<String> {
        (self.domain_account)(server_name)
    }

    /// Whether `ip` may try a key now. A refused attempt is counted in
    /// `banyan_auth_rate_limited_total{protocol}`.
    pub fn may_try(&self, ip: IpAddr, protocol: &'static str) -> bool {
        if self.limiter.is_limited(ip, Instant::now()) {
            metrics::counter!("banyan_auth_rate_limited_total", "protocol" => protocol)
                .increment(1);
            return false;
        }
        true
    }

    /// Count a failed attempt (unknown key, wrong direction, another
    /// account's domain, wrong passphrase).
    pub fn failed(&self, ip: IpAddr) {
        self.limiter.failed(ip, Instant::now());
    }

    /// Take back one failure counted ahead of the outcome.
    pub fn forgive(&self, ip: IpAddr) {
        self.limiter.forgive(ip);
    }

    pub fn limiter(&self) -> &FailLimiter {
        &self.limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limited_after_max_failures_for_the_rest_of_the_window() {
        let l = FailLimiter::new(FailLimit {
            max: 3,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert!(!l.is_limited(a, t0), "not limited after {i} failures");
            l.failed(a, t0 + Duration::from_secs(i));
        }
        assert!(l.is_limited(a, t0 + Duration::from_secs(3)));
        assert!(l.is_limited(a, t0 + Duration::from_secs(59)));
        assert!(
            !l.is_limited(ip("192.0.2.2"), t0),
            "other addresses are free"
        );
        assert!(
            !l.is_limited(a, t0 + Duration::from_secs(60)),
            "free again when the window ends"
        );
        // A new window starts from the next failure.
        l.failed(a, t0 + Duration::from_secs(61));
        assert!(!l.is_limited(a, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn forgiven_failures_do_not_count() {
        let l = FailLimiter::new(FailLimit {
            max: 2,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            l.failed(a, t0);
            l.forgive(a);
        }
        assert!(!l.is_limited(a, t0));
        l.forgive(ip("192.0.2.9"));
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = FailLimiter::new(FailLimit {
            max: 2,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        l.failed(ip("2001:db8:1:2::1"), t0);
        l.failed(ip("2001:db8:1:2:ffff::7"), t0);
        assert!(l.is_limited(ip("2001:db8:1:2::99"), t0));
        assert!(!l.is_limited(ip("2001:db8:1:3::1"), t0));
        l.failed(ip("::ffff:192.0.2.5"), t0);
        l.failed(ip("192.0.2.5"), t0);
        assert!(l.is_limited(ip("192.0.2.5"), t0));
    }

    #[test]
    fn bounded_and_a_flood_does_not_free_a_limited_address() {
        let l = FailLimiter::with_capacity(
            FailLimit {
                max: 1,
                window: Duration::from_secs(60),
            },
            100,
        );
        let t0 = Instant::now();
        let bad = ip("198.51.100.1");
        l.failed(bad, t0);
        for i in 0..10_000u32 {
            let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            l.failed(a, t0 + Duration::from_millis(i as u64));
        }
        assert!(l.tracked() <= 100);
        assert!(l.is_limited(bad, t0 + Duration::from_secs(30)));
        // Expired entries make room again.
        let later = t0 + Duration::from_secs(200);
        l.failed(ip("203.0.113.7"), later);
        assert!(l.is_limited(ip("203.0.113.7"), later));
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn admission_asks_the_domain_callback() {
        let a = Admission::new(
            Arc::new(|name: &str| (name.eq_ignore_ascii_case("push.b.test")).then(|| "b".into())),
            FailLimit::default(),
        );
        assert_eq!(a.domain_account("PUSH.B.TEST").as_deref(), Some("b"));
        assert_eq!(a.domain_account("localhost"), None);
        assert_eq!(Admission::default().domain_account("push.b.test"), None);
    }
}
