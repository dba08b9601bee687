//! What is due for a domain and what follows from each outcome: the state
//! machine of orders, renewals and upload checks, without IO (the driver
//! in `mod.rs` runs it). Times are µs since the epoch.
//!
//! `pending` → (order or check succeeds) → `active`; `pending` → (the CA
//! refuses, or too many tries fail) → `failed`. An `active` ACME domain is
//! renewed at two thirds of its certificate's lifetime; a failed renewal
//! keeps the current certificate and is retried with backoff.

use crate::store::DomainRow;

pub const PENDING: &str = "pending";
pub const ACTIVE: &str = "active";
pub const FAILED: &str = "failed";
pub const ACME: &str = "acme";
pub const UPLOAD: &str = "upload";

/// Tries of a new order whose failures are not the CA's verdict (network,
/// rate limits, nonce errors) before the domain is `failed`.
pub const MAX_ORDER_TRIES: i64 = 6;
/// Checks of an upload's proof token before it is `failed` (about an hour
/// with the backoff below).
pub const MAX_VERIFY_TRIES: i64 = 12;

const SECOND: i64 = 1_000_000;
/// First retry delay and its cap.
const BACKOFF_BASE: i64 = 5 * SECOND;
const BACKOFF_CAP: i64 = 600 * SECOND;

/// Work due on a domain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A first certificate (or one after a failure was retried).
    Order,
    /// A new certificate before the current one runs out.
    Renew,
    /// Fetch an upload's proof token.
    Verify,
}

/// What, if anything, is due on `d` at `now`.
pub fn due(d: &DomainRow, now: i64) -> Option<Due> {
    if now < d.next_attempt {
        return None;
    }
    match (d.method.as_str(), d.status.as_str()) {
        (ACME, PENDING) => Some(Due::Order),
        (ACME, ACTIVE) => Some(Due::Renew),
        (UPLOAD, PENDING) => Some(Due::Verify),
        _ => None,
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A certificate (ACME) or a proven name (upload: empty PEMs).
    Done {
        cert_pem: String,
        key_pem: String,
        not_before: i64,
        not_after: i64,
    },
    /// The CA (or the check) gave a final answer: no use retrying as is.
    Refused(String),
    /// Worth another try later.
    Retry(String),
}

/// The delay before retry number `attempts` (1 for the first), with
/// `jitter` in [0, 1) spreading it by ±20 %.
pub fn backoff(attempts: i64, jitter: f64) -> i64 {
    let exp = attempts.clamp(1, 20) - 1;
    let base = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    (base as f64 * spread) as i64
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// at two thirds of its lifetime, `jitter` in [0, 1) moving it up to 5 %
/// of the lifetime earlier (so many names do not renew at once).
pub fn renew_at(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0);
    let early = (life as f64 * 0.05 * jitter.clamp(0.0, 1.0)) as i64;
    not_before + life * 2 / 3 - early
}

/// The row after `due` ended with `outcome` at `now`.
pub fn apply(d: &DomainRow, due: Due, outcome: Outcome, now: i64, jitter: f64) -> DomainRow {
    let mut d = d.clone();
    match outcome {
        Outcome::Done {
            cert_pem,
            key_pem,
            not_before,
            not_after,
        } => {
            d.status = ACTIVE.into();
            d.error.clear();
            d.attempts = 0;
            d.renewed = now;
            if due == Due::Verify {
                d.next_attempt = 0;
            } else {
                d.cert_pem = cert_pem;
                d.key_pem = key_pem;
                d.expires = not_after;
                d.next_attempt = renew_at(not_before, not_after, jitter).max(now + SECOND);
            }
        }
        Outcome::Refused(reason) => {
            d.error = reason;
            d.attempts += 1;
            if due == Due::Renew {
                // The current certificate stays in use until it runs out.
                d.next_attempt = now + backoff(d.attempts, jitter);
            } else {
                d.status = FAILED.into();
            }
        }
        Outcome::Retry(reason) => {
            d.error = reason;
            d.attempts += 1;
            let limit = match due {
                Due::Order => MAX_ORDER_TRIES,
                Due::Verify => MAX_VERIFY_TRIES,
                Due::Renew => i64::MAX,
            };
            if d.attempts >= limit {
                d.status = FAILED.into();
            } else {
                d.next_attempt = now + backoff(d.attempts, jitter);
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, status: &str) -> DomainRow {
        DomainRow {
            domain: "live.example.test".into(),
            account_id: "a".into(),
            method: method.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn what_is_due() {
        assert_eq!(due(&row(ACME, PENDING), 0), Some(Due::Order));
        assert_eq!(due(&row(ACME, ACTIVE), 0), Some(Due::Renew));
        assert_eq!(due(&row(UPLOAD, PENDING), 0), Some(Due::Verify));
        assert_eq!(due(&row(UPLOAD, ACTIVE), 0), None);
        assert_eq!(due(&row(ACME, FAILED), 0), None);
        let mut later = row(ACME, PENDING);
        later.next_attempt = 10;
        assert_eq!(due(&later, 9), None);
        assert_eq!(due(&later, 10), Some(Due::Order));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff(1, 0.5), 5 * SECOND);
        assert_eq!(backoff(2, 0.5), 10 * SECOND);
        assert_eq!(backoff(30, 0.5), 600 * SECOND);
        assert_eq!(backoff(1, 0.0), 4 * SECOND);
        assert!((5_999_000..6_000_000).contains(&backoff(1, 0.999_999)));
        assert!(backoff(0, 0.5) > 0 && backoff(i64::MAX, 0.5) > 0);
    }

    #[test]
    fn renewal_is_at_two_thirds() {
        let day = 86_400 * SECOND;
        assert_eq!(renew_at(0, 90 * day, 0.0), 60 * day);
        let early = renew_at(0, 90 * day, 0.999);
        assert!(early < 60 * day && early > 55 * day, "{early}");
        assert_eq!(
            renew_at(10, 5, 0.5),
            10,
            "a backwards validity renews at once"
        );
    }

    #[test]
    fn outcomes_move_the_row() {
        let done = Outcome::Done {
            cert_pem: "c".into(),
            key_pem: "k".into(),
            not_before: 0,
            not_after: 90 * SECOND,
        };
        let d = apply(&row(ACME, PENDING), Due::Order, done.clone(), 1, 0.0);
        assert_eq!((d.status.as_str(), d.cert_pem.as_str()), (ACTIVE, "c"));
        assert_eq!(
            (d.expires, d.renewed, d.next_attempt),
            (90 * SECOND, 1, 60 * SECOND)
        );

        // A refused order fails; a refused renewal keeps the certificate.
        let f = apply(
            &row(ACME, PENDING),
            Due::Order,
            Outcome::Refused("no".into()),
            1,
            0.5,
        );
        assert_eq!((f.status.as_str(), f.error.as_str()), (FAILED, "no"));
        let r = apply(&d, Due::Renew, Outcome::Refused("no".into()), 2, 0.5);
        assert_eq!((r.status.as_str(), r.cert_pem.as_str()), (ACTIVE, "c"));
        assert_eq!(r.next_attempt, 2 + 5 * SECOND);

        // Transient failures retry, then give up on a new order.
        let mut p = row(ACME, PENDING);
        for i in 1..MAX_ORDER_TRIES {
            p = apply(&p, Due::Order, Outcome::Retry("net".into()), 0, 0.5);
            assert_eq!(p.status, PENDING, "try {i}");
        }
        p = apply(&p, Due::Order, Outcome::Retry("net".into()), 0, 0.5);
        assert_eq!(p.status, FAILED);

        // An upload's proof makes it active and leaves its certificate.
        let mut u = row(UPLOAD, PENDING);
        u.cert_pem = "mine".into();
        let u = apply(&u, Due::Verify, done, 7, 0.0);
        assert_eq!((u.status.as_str(), u.cert_pem.as_str()), (ACTIVE, "mine"));
        assert_eq!(u.renewed, 7);
    }
}
