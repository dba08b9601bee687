//! The doctor's custom-domain check: the ACME state of every ingest
//! domain (and of the node's own name with `--acme`), read from the
//! database: failed orders, proofs or orders waiting too long, and
//! certificates that expire without a renewal in sight.

use sqlx::{AnyPool, Row};

use super::Report;
use crate::acme::plan::{ACME, ACTIVE, FAILED, PENDING, UPLOAD};
use crate::acme::OWN;

/// A certificate closer than this to expiry has missed its renewal (ACME
/// renews at two thirds of the lifetime: 30 days before for 90 days).
const RENEWAL_OVERDUE_DAYS: i64 = 14;
/// A domain `pending` for longer than this waits on DNS or the CA.
const PENDING_TOO_LONG_MINUTES: i64 = 60;

const DAY_MICROS: i64 = 86_400_000_000;
const MINUTE_MICROS: i64 = 60_000_000;

/// One `ingest_domains` row as the check reads it (times in µs).
#[derive(Debug, Clone, Default)]
pub(super) struct DomainState {
    pub domain: String,
    /// [`OWN`] for the node's own name (`--acme`).
    pub account_id: String,
    pub status: String,
    pub method: String,
    pub error: String,
    pub created: i64,
    pub expires: i64,
}

/// Read every domain row.
pub(super) async fn read(pool: &AnyPool) -> sqlx::Result<Vec<DomainState>> {
    let rows = sqlx::query(
        "SELECT domain, account_id, status, method, error, created, expires \
         FROM ingest_domains ORDER BY domain",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DomainState {
                domain: r.try_get("domain")?,
                account_id: r.try_get("account_id")?,
                status: r.try_get("status")?,
                method: r.try_get("method")?,
                error: r.try_get("error")?,
                created: r.try_get("created")?,
                expires: r.try_get("expires")?,
            })
        })
        .collect()
}

/// Findings for the domains at `now` (µs); `own` is the node's
/// `--public-host` when `--acme` is on.
pub(super) fn report(r: &mut Report, rows: &[DomainState], own: Option<&str>, now: i64) {
    if let Some(host) = own {
        let host = host.to_ascii_lowercase();
        if !rows.iter().any(|d| d.domain == host) {
            r.warn(
                format!("--acme: no certificate ordered yet for the node's own name {host}"),
                "start the node with --acme and --public-host; it orders the certificate at start",
            );
        }
    }
    let mut active = 0;
    let mut bad = 0;
    for d in rows {
        let name = if d.account_id == OWN {
            format!("{} (the node's own name)", d.domain)
        } else {
            format!("domain {}", d.domain)
        };
        match d.status.as_str() {
            FAILED => {
                bad += 1;
                r.warn(
                    format!("{name}: failed ({})", d.error),
                    "point the name's DNS at this node (and port 443 or 80 for the CA), then \
                     remove the domain and add it again",
                );
            }
            PENDING if now - d.created > PENDING_TOO_LONG_MINUTES * MINUTE_MICROS => {
                bad += 1;
                let minutes = (now - d.created) / MINUTE_MICROS;
                let waits = if d.method == UPLOAD {
                    "its proof token"
                } else {
                    "the ACME order"
                };
                r.warn(
                    format!("{name}: pending for {minutes} minutes, waiting on {waits}"),
                    "check that the name resolves to this node and that the CA (or the node, for \
                     an upload's token) reaches it on port 443 or 80",
                );
            }
            ACTIVE if d.expires > 0 && d.expires <= now => {
                bad += 1;
                r.fail(
                    format!("{name}: the certificate has expired"),
                    if d.method == ACME {
                        "check the node's log for renewal errors (the CA's reason is in the \
                         API's `error`)"
                    } else {
                        "upload a new certificate for the name"
                    },
                );
            }
            ACTIVE if d.expires > 0 && d.expires - now < RENEWAL_OVERDUE_DAYS * DAY_MICROS => {
                bad += 1;
                let days = (d.expires - now) / DAY_MICROS;
                r.warn(
                    format!("{name}: the certificate expires in {days} days"),
                    if d.method == ACME {
                        "renewal is overdue: check the node's log and that the CA reaches the \
                         node at that name"
                    } else {
                        "upload a renewed certificate for the name"
                    },
                );
            }
            ACTIVE => active += 1,
            _ => {}
        }
    }
    if !rows.is_empty() && bad == 0 {
        r.ok(format!(
            "custom domains: {active} active, none failed, stuck or near expiry"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(domain: &str, status: &str, method: &str) -> DomainState {
        DomainState {
            domain: domain.into(),
            account_id: "a".into(),
            status: status.into(),
            method: method.into(),
            ..DomainState::default()
        }
    }

    #[test]
    fn failed_stuck_and_expiring_domains_are_named() {
        let now = 1_000 * DAY_MICROS;
        let mut failed = row("f.example", "failed", "acme");
        failed.error = "DNS problem: NXDOMAIN".into();
        let mut stuck = row("p.example", "pending", "upload");
        stuck.created = now - 90 * MINUTE_MICROS;
        let mut fresh = row("n.example", "pending", "acme");
        fresh.created = now - 5 * MINUTE_MICROS;
        let mut soon = row("s.example", "active", "acme");
        soon.expires = now + 3 * DAY_MICROS;
        let mut gone = row("g.example", "active", "upload");
        gone.expires = now - DAY_MICROS;
        let mut fine = row("ok.example", "active", "acme");
        fine.expires = now + 60 * DAY_MICROS;
        let mut r = Report::default();
        report(
            &mut r,
            &[failed, stuck, fresh, soon, gone, fine],
            Some("Push.Example"),
            now,
        );
        let out = r.render(false);
        assert!(
            out.contains("domain f.example: failed (DNS problem: NXDOMAIN)"),
            "{out}"
        );
        assert!(
            out.contains("domain p.example: pending for 90 minutes, waiting on its proof token"),
            "{out}"
        );
        assert!(!out.contains("n.example"), "{out}");
        assert!(
            out.contains("domain s.example: the certificate expires in 3 days"),
            "{out}"
        );
        assert!(
            out.contains("FAIL  domain g.example: the certificate has expired"),
            "{out}"
        );
        assert!(
            out.contains("no certificate ordered yet for the node's own name push.example"),
            "{out}"
        );
        assert!(!out.contains("none failed"), "{out}");
        assert_eq!(r.count(super::super::Level::Fail), 1);
    }

    #[test]
    fn healthy_domains_and_the_own_name_read_ok() {
        let now = 1_000 * DAY_MICROS;
        let mut own = row("push.example", "active", "acme");
        own.account_id = String::new();
        own.expires = now + 80 * DAY_MICROS;
        let mut other = row("live.example", "active", "upload");
        other.expires = now + 300 * DAY_MICROS;
        let mut r = Report::default();
        report(&mut r, &[own, other], Some("push.example"), now);
        let out = r.render(false);
        assert!(
            out.contains("custom domains: 2 active, none failed, stuck or near expiry"),
            "{out}"
        );
        assert!(!out.contains("WARN"), "{out}");
        // No domains and no --acme: nothing to say.
        let mut r = Report::default();
        report(&mut r, &[], None, now);
        assert!(r.0.is_empty(), "{}", r.render(false));
    }
}
