//! Per-tenant quotas of the API: requests per second per API token (a token
//! bucket each), and the named refusals of the other quotas (live inputs
//! per account, `meta` size).
//!
//! The rate limiter is sans-IO at its core ([`RateLimiter::admit_at`] takes
//! the time) and bounded: at most [`RateLimiter::CAPACITY`] buckets. A
//! bucket left alone for `burst / rate` seconds is full again, exactly as if
//! it did not exist, so such buckets are the first dropped when the map is
//! full; if every bucket is still draining, the map is cleared (which can
//! only let clients through, never refuse one) and the drop is counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Largest request body the API accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// A request refused by a quota: the status, the API error code and a
/// message that names the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

/// Error code of a request over the per-token rate (429).
pub const CODE_RATE: u32 = 10430;
/// Error code of an account at its live-input quota (403).
pub const CODE_INPUTS: u32 = 10040;
/// Error code of a `meta` over its size limit (413).
pub const CODE_META: u32 = 10013;

/// Default `--max-inputs-per-account`.
pub const DEFAULT_MAX_INPUTS: usize = 1000;
/// Default `--max-meta-bytes` (also what `api::check_body` applies).
pub const DEFAULT_MAX_META_BYTES: usize = 16 * 1024;
/// Default `--api-rate` (requests per second per token).
pub const DEFAULT_API_RATE: u32 = 50;
/// Default `--api-burst`.
pub const DEFAULT_API_BURST: u32 = 100;

/// The refusal of one more live input for an account that has `max`.
pub fn inputs_refusal(max: usize) -> Refusal {
    metrics::counter!("banyan_quota_refused_total", "limit" => "max_inputs_per_account")
        .increment(1);
    Refusal {
        status: StatusCode::FORBIDDEN,
        code: CODE_INPUTS,
        message: format!("quota max_inputs_per_account ({max}) reached"),
    }
}

/// Check the serialized size of a `meta` object against `max` bytes.
pub fn check_meta(serialized_len: usize, max: usize) -> Result<(), Refusal> {
    if serialized_len <= max {
        return Ok(());
    }
    metrics::counter!("banyan_quota_refused_total", "limit" => "max_meta_bytes").increment(1);
    Err(Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: CODE_META,
        message: format!("meta is {serialized_len} bytes serialized, over max_meta_bytes ({max})"),
    })
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per API token: `rate` requests per second on average,
/// `burst` at once. A rate of 0 turns the limit off.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// Keyed by a digest of the token, never the token itself.
    map: Mutex<HashMap<[u8; 16], Bucket>>,
}

impl RateLimiter {
    /// Buckets kept at most.
    pub const CAPACITY: usize = 100_000;

    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long an untouched bucket takes to be full again.
    fn refill(&self) -> Duration {
        Duration::from_secs_f64((self.burst / self.rate).min(86_400.0))
    }

    /// Take one request from the bucket of `key` at `now`; `Err` holds how
    /// long until one is available.
    pub fn admit_at(&self, key: [u8; 16], now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut map = self.map.lock();
        if map.len() >= Self::CAPACITY && !map.contains_key(&key) {
            let refill = self.refill();
            map.retain(|_, b| now.saturating_duration_since(b.at) < refill);
            if map.len() >= Self::CAPACITY {
                metrics::counter!("banyan_api_rate_buckets_dropped_total")
                    .increment(map.len() as u64);
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admit one request made with the (already accepted) API `token`, or
    /// refuse it with 429 naming the limit; refusals are counted.
    pub fn check(&self, token: &str) -> Result<(), Refusal> {
        let d = Sha256::digest(token.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&d[..16]);
        match self.admit_at(key, Instant::now()) {
            Ok(()) => Ok(()),
            Err(wait) => {
                metrics::counter!("banyan_quota_refused_total", "limit" => "api_rate").increment(1);
                Err(Refusal {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: CODE_RATE,
                    message: format!(
                        "rate limit api_rate ({} requests/s per token, burst {}) exceeded; \
                         retry in {} ms",
                        self.rate,
                        self.burst,
                        wait.as_millis().max(1)
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [1; 16];
    const B: [u8; 16] = [2; 16];

    #[test]
    fn burst_then_rate_per_token() {
        let l = RateLimiter::new(10, 20);
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(l.admit_at(A, t0).is_ok(), "request {i} of the burst");
        }
        let wait = l.admit_at(A, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            l.admit_at(B, t0).is_ok(),
            "another token has its own bucket"
        );
        // 10/s: after 100 ms one more, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit_at(A, t1).is_ok());
        assert!(l.admit_at(A, t1).is_err());
        // Over 10 s at the rate: 100 admitted, about none refused.
        let mut ok = 0;
        for i in 1..=1000 {
            if l.admit_at(A, t1 + Duration::from_millis(10 * i)).is_ok() {
                ok += 1;
            }
        }
        assert!((99..=101).contains(&ok), "{ok}");
        // Idle long enough, the bucket is full again, and never fuller.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert!(l.admit_at(A, t2).is_ok());
        }
        assert!(l.admit_at(A, t2).is_err());
    }

    #[test]
    fn zero_rate_is_off_and_the_clock_never_runs_backwards() {
        let off = RateLimiter::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(off.admit_at(A, t0).is_ok());
        }
        assert!(off.is_empty());
        let l = RateLimiter::new(1, 1);
        let later = t0 + Duration::from_secs(5);
        assert!(l.admit_at(A, later).is_ok());
        assert!(
            l.admit_at(A, t0).is_err(),
            "an earlier time refills nothing"
        );
    }

    #[test]
    fn the_map_is_bounded() {
        let l = RateLimiter::new(1000, 1);
        let t0 = Instant::now();
        let key = |i: usize| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k
        };
        for i in 0..RateLimiter::CAPACITY {
            l.admit_at(key(i), t0).unwrap();
        }
        assert_eq!(l.len(), RateLimiter::CAPACITY);
        // Still draining: cleared rather than grown.
        l.admit_at(key(RateLimiter::CAPACITY), t0).unwrap();
        assert!(l.len() <= RateLimiter::CAPACITY);
        for i in 0..RateLimiter::CAPACITY {
            let _ = l.admit_at(key(i), t0);
        }
        // Refilled buckets are dropped first.
        l.admit_at(key(usize::MAX), t0 + Duration::from_secs(1))
            .unwrap();
        assert!(l.len() <= 2, "{}", l.len());
    }

    #[test]
    fn refusals_name_their_limits() {
        let l = RateLimiter::new(1, 1);
        l.check("tok").unwrap();
        let r = l.check("tok").unwrap_err();
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.message.contains("api_rate"), "{}", r.message);
        assert!(l.check("other").is_ok());
        assert!(inputs_refusal(3)
            .message
            .contains("max_inputs_per_account (3)"));
        assert!(check_meta(16384, DEFAULT_MAX_META_BYTES).is_ok());
        let m = check_meta(16385, DEFAULT_MAX_META_BYTES).unwrap_err();
        assert_eq!(m.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            m.message.contains("max_meta_bytes (16384)"),
            "{}",
            m.message
        );
    }
}
