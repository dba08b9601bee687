//! The one way a bearer token is checked: the REST API, GraphQL and the
//! cluster's admin endpoints all call [`Auth::check`] (the composition root
//! builds one [`Auth`] and hands it to each of them).
//!
//! * The token comes from `Authorization: Bearer <token>` ([`bearer`]).
//! * It is looked up by its SHA-256 in the store (timing reveals nothing
//!   about stored tokens).
//! * Failed attempts count per client address (`ConnectInfo`, which the
//!   HTTP server sets to the forwarded client behind a trusted proxy; IPv6
//!   per /64): past [`AuthLimiter::MAX`] within [`AuthLimiter::WINDOW`],
//!   the address is *limited*.
//! * A limited address still gets in with a valid token: many clients can
//!   share one address (a NAT, a proxy), and 30 bad guesses from one of
//!   them must not lock the others out. What a limited address loses is
//!   the store: its token is first checked against an in-memory set of the
//!   hashes of every stored token (reloaded at most once per
//!   [`AuthLimiter::RELOAD`], so a new token works within that time), and
//!   an unknown one is answered 429 without a query. The store stays the
//!   judge of every known token (revocation takes effect at once).
//!
//! State is bounded: at most [`AuthLimiter::CAPACITY`] addresses are
//! tracked (expired entries are dropped first; a new address met while the
//! map is full of live entries is not tracked, and counted). Refusals are
//! counted in `banyan_auth_refused_total{api,reason}`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use parking_lot::{Mutex, RwLock};
use sqlx::Row as _;

use crate::store::{Store, TokenInfo};

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address as the HTTP server put it in the request
/// (`ConnectInfo`), if any. Never refuses.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Why a request was not authenticated.
#[derive(Debug)]
pub enum AuthError {
    /// No bearer token (401).
    Missing,
    /// A token the store does not know (401).
    Invalid,
    /// Too many failures from this address, and a token that is not one of
    /// the stored ones (429).
    Limited,
    /// The store cannot be reached (503).
    Unavailable(String),
    /// Anything else from the store (500).
    Internal(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
            AuthError::Limited => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message for the client.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Invalid => {
                "Authentication error: missing or invalid API token"
            }
            AuthError::Limited => "too many failed authentication attempts; retry later",
            AuthError::Unavailable(_) => "the database is unreachable; retry later",
            AuthError::Internal(_) => "internal error",
        }
    }

    fn from_db(e: sqlx::Error) -> AuthError {
        if crate::store::unavailable(&e) {
            metrics::counter!("banyan_api_unavailable_total").increment(1);
            AuthError::Unavailable(e.to_string())
        } else {
            tracing::error!("token lookup: {e}");
            AuthError::Internal(e.to_string())
        }
    }
}

/// Failures of one address in the current window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    start: Instant,
}

/// The stored tokens' hashes, as last loaded.
#[derive(Default)]
struct Known {
    hashes: Arc<HashSet<String>>,
    loaded: Option<Instant>,
}

/// The failed-attempt limiter of every token check (see the module doc).
#[derive(Default)]
pub struct AuthLimiter {
    map: Mutex<HashMap<IpAddr, Entry>>,
    known: RwLock<Known>,
    reload: tokio::sync::Mutex<()>,
}

/// The key an address counts under: itself, or its /64 for IPv6.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl AuthLimiter {
    /// Failures per address and window before it is limited.
    pub const MAX: u32 = 30;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses tracked at most.
    pub const CAPACITY: usize = 10_000;
    /// Least time between two loads of the stored hashes.
    pub const RELOAD: Duration = Duration::from_secs(2);

    /// Whether `ip` is limited at `now`.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.map
            .lock()
            .get(&bucket(ip))
            .is_some_and(|e| e.failures >= Self::MAX && now.duration_since(e.start) < Self::WINDOW)
    }

    /// Count a failure of `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let ip = bucket(ip);
        let mut map = self.map.lock();
        if map.len() >= Self::CAPACITY && !map.contains_key(&ip) {
            map.retain(|_, e| now.duration_since(e.start) < Self::WINDOW);
            if map.len() >= Self::CAPACITY {
                // Full of live entries: the limited ones stay limited.
                metrics::counter!("banyan_auth_limiter_untracked_total", "limiter" => "api")
                    .increment(1);
                return;
            }
        }
        let e = map.entry(ip).or_insert(Entry {
            failures: 0,
            start: now,
        });
        if now.duration_since(e.start) >= Self::WINDOW {
            *e = Entry {
                failures: 0,
                start: now,
            };
        }
        e.failures = e.failures.saturating_add(1);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether `hash` is one of the stored tokens' hashes, reloading them
    /// when the copy is older than [`Self::RELOAD`] (one load at a time;
    /// callers meanwhile use the copy they have).
    async fn known(&self, store: &Store, hash: &str) -> Result<bool, AuthError> {
        {
            let k = self.known.read();
            if k.hashes.contains(hash) {
                return Ok(true);
            }
            if k.loaded.is_some_and(|t| t.elapsed() < Self::RELOAD) {
                return Ok(false);
            }
        }
        let Ok(_one) = self.reload.try_lock() else {
            return Ok(self.known.read().hashes.contains(hash));
        };
        if self
            .known
            .read()
            .loaded
            .is_some_and(|t| t.elapsed() < Self::RELOAD)
        {
            return Ok(self.known.read().hashes.contains(hash));
        }
        let rows = sqlx::query("SELECT hash FROM api_tokens")
            .fetch_all(store.pool())
            .await
            .map_err(AuthError::from_db)?;
        let hashes: HashSet<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("hash").ok())
            .collect();
        let found = hashes.contains(hash);
        *self.known.write() = Known {
            hashes: Arc::new(hashes),
            loaded: Some(Instant::now()),
        };
        Ok(found)
    }

    /// Check the bearer token of a request from `ip` for `api` (a metrics
    /// label: "rest", "graphql", "cluster"). Only [`Auth::check`] calls it.
    async fn check_token(
        &self,
        store: &Store,
        token: Option<&str>,
        ip: Option<IpAddr>,
        api: &'static str,
    ) -> Result<TokenInfo, AuthError> {
        let refused = |reason: &'static str| {
            metrics::counter!("banyan_auth_refused_total", "api" => api, "reason" => reason)
                .increment(1);
        };
        let Some(token) = token else {
            refused("missing");
            return Err(AuthError::Missing);
        };
        let hash = crate::secret::token_hash(token);
        let now = Instant::now();
        if ip.is_some_and(|ip| self.blocked(ip, now)) && !self.known(store, &hash).await? {
            refused("limited");
            return Err(AuthError::Limited);
        }
        match store.token(&hash).await.map_err(AuthError::from_db)? {
            Some(info) => Ok(info),
            None => {
                metrics::counter!("banyan_api_auth_failures_total").increment(1);
                refused("invalid");
                if let Some(ip) = ip {
                    self.failed(ip, now);
                }
                Err(AuthError::Invalid)
            }
        }
    }
}

/// The state of a router whose handlers take a checked token: it holds
/// the one [`Auth`].
pub trait HasAuth {
    fn auth(&self) -> &Auth;
}

/// Which endpoints a token is checked for (the `api` label of the refusal
/// counters; REST and GraphQL also take from the token's request rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rest,
    Graphql,
    Cluster,
}

impl Api {
    fn label(self) -> &'static str {
        match self {
            Api::Rest => "rest",
            Api::Graphql => "graphql",
            Api::Cluster => "cluster",
        }
    }
}

/// Why a request was refused: its token ([`AuthError`]), or the token's
/// request rate (`api_rate`).
#[derive(Debug)]
pub enum Refused {
    Token(AuthError),
    Rate(crate::quota::Refusal),
}

/// The token check of every HTTP endpoint: the store that holds the
/// tokens, the failed-attempt limiter and the per-token request rate.
pub struct Auth {
    store: Store,
    limiter: AuthLimiter,
    rate: crate::quota::RateLimiter,
}

impl Auth {
    pub fn new(store: Store, rate: crate::quota::RateLimiter) -> Arc<Auth> {
        Arc::new(Auth {
            store,
            limiter: AuthLimiter::default(),
            rate,
        })
    }

    /// Check the bearer token of a request from `ip` (see the module doc),
    /// then, for REST and GraphQL, take one request from its rate.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
        api: Api,
    ) -> Result<TokenInfo, Refused> {
        let token = bearer(headers);
        let info = self
            .limiter
            .check_token(&self.store, token, ip, api.label())
            .await
            .map_err(Refused::Token)?;
        if api != Api::Cluster {
            self.rate
                .check(token.unwrap_or_default())
                .map_err(Refused::Rate)?;
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_are_limited_per_address() {
        let l = AuthLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..AuthLimiter::MAX {
            assert!(!l.blocked(a, t0));
            l.failed(a, t0);
        }
        assert!(l.blocked(a, t0));
        assert!(!l.blocked(b, t0), "per address");
        assert!(
            !l.blocked(a, t0 + AuthLimiter::WINDOW),
            "until the window ends"
        );
        l.failed(a, t0 + AuthLimiter::WINDOW);
        assert!(!l.blocked(a, t0 + AuthLimiter::WINDOW));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..AuthLimiter::MAX {
            l.failed(v6, t0);
        }
        assert!(l.blocked("2001:db8::ffff".parse().unwrap(), t0), "per /64");
    }

    #[test]
    fn the_map_is_bounded_and_limited_addresses_stay_limited() {
        let l = AuthLimiter::default();
        let t0 = Instant::now();
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..AuthLimiter::MAX {
            l.failed(victim, t0);
        }
        for i in 0..(AuthLimiter::CAPACITY as u32 + 500) {
            l.failed(IpAddr::from((10u32 << 24 | i).to_be_bytes()), t0);
        }
        assert!(l.tracked() <= AuthLimiter::CAPACITY);
        assert!(l.blocked(victim, t0));
        // Expired entries make room.
        let later = t0 + AuthLimiter::WINDOW;
        l.failed("198.51.100.1".parse().unwrap(), later);
        assert_eq!(l.tracked(), 1);
    }

    fn with_token(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn one_check_for_rest_graphql_and_the_cluster() {
        let n = crate::serve::testkit::TestNode::new(&[]).await;
        let auth = Auth::new(n.parts.store.clone(), crate::quota::RateLimiter::new(1, 1));
        let ip: Option<IpAddr> = Some("192.0.2.7".parse().unwrap());
        let status = |r: Result<TokenInfo, Refused>| match r {
            Ok(_) => StatusCode::OK,
            Err(Refused::Token(e)) => e.status(),
            Err(Refused::Rate(r)) => r.status,
        };
        for api in [Api::Rest, Api::Graphql, Api::Cluster] {
            let none = auth.check(&HeaderMap::new(), ip, api).await;
            assert!(
                matches!(none, Err(Refused::Token(AuthError::Missing))),
                "{api:?}"
            );
            let bad = auth.check(&with_token("guess"), ip, api).await;
            assert!(
                matches!(bad, Err(Refused::Token(AuthError::Invalid))),
                "{api:?}"
            );
        }
        let admin = with_token(&n.creds.admin_token);
        let info = auth.check(&admin, ip, Api::Cluster).await.unwrap();
        assert!(info.admin);
        assert_eq!(info.account_id, n.creds.account_id);
        // The cluster's endpoints take nothing from the token's rate ...
        for _ in 0..5 {
            assert_eq!(
                status(auth.check(&admin, ip, Api::Cluster).await),
                StatusCode::OK
            );
        }
        // ... REST and GraphQL share it (a burst of one).
        assert_eq!(
            status(auth.check(&admin, ip, Api::Rest).await),
            StatusCode::OK
        );
        assert_eq!(
            status(auth.check(&admin, ip, Api::Graphql).await),
            StatusCode::TOO_MANY_REQUESTS
        );
        let api = with_token(&n.creds.api_token);
        let info = auth.check(&api, ip, Api::Rest).await.unwrap();
        assert!(!info.admin);
        // Failures of one address count together, whichever the endpoint.
        for i in 0..AuthLimiter::MAX {
            let api = [Api::Rest, Api::Graphql, Api::Cluster][i as usize % 3];
            let _ = auth.check(&with_token("guess"), ip, api).await;
        }
        let limited = auth.check(&with_token("guess"), ip, Api::Cluster).await;
        assert!(
            matches!(limited, Err(Refused::Token(AuthError::Limited))),
            "{limited:?}"
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
