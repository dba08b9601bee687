//! Custom ingest domains: each row is a name one account holds, how it is
//! proven (`acme`: a certificate the node orders; `upload`: the account's
//! own certificate, proven by an HTTP token), its state (`pending`,
//! `active`, `failed`), its certificate, and the lease of the node working
//! on it. ACME challenge answers live in `acme_challenges`, so whichever
//! node the CA reaches can answer.

use sqlx::Row as _;

use super::{now_micros, Store};

/// A custom ingest domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainRow {
    pub domain: String,
    pub account_id: String,
    /// Empty until a certificate is issued (ACME).
    pub cert_pem: String,
    /// Sealed (see `acme::seal`) or PEM; empty until issued.
    pub key_pem: String,
    pub created: i64,
    /// `pending`, `active` or `failed`.
    pub status: String,
    /// `acme` or `upload`.
    pub method: String,
    /// The last failure, in words (the CA's reason for ACME).
    pub error: String,
    /// The HTTP token proving an upload's name (path part and body).
    pub verify_token: String,
    pub verify_value: String,
    /// The certificate's notAfter, µs (0: none yet).
    pub expires: i64,
    /// When the current certificate was issued or proven, µs.
    pub renewed: i64,
    /// Bumped on every change (the reload stamp).
    pub modified: i64,
    /// When the next order, renewal or check may start, µs.
    pub next_attempt: i64,
    /// Failed tries since the last success.
    pub attempts: i64,
}

const COLUMNS: &str = "domain, account_id, cert_pem, key_pem, created, status, method, error, \
     verify_token, verify_value, expires, renewed, modified, next_attempt, attempts";

fn from_row(r: &sqlx::any::AnyRow) -> Result<DomainRow, sqlx::Error> {
    Ok(DomainRow {
        domain: r.try_get("domain")?,
        account_id: r.try_get("account_id")?,
        cert_pem: r.try_get("cert_pem")?,
        key_pem: r.try_get("key_pem")?,
        created: r.try_get("created")?,
        status: r.try_get("status")?,
        method: r.try_get("method")?,
        error: r.try_get("error")?,
        verify_token: r.try_get("verify_token")?,
        verify_value: r.try_get("verify_value")?,
        expires: r.try_get("expires")?,
        renewed: r.try_get("renewed")?,
        modified: r.try_get("modified")?,
        next_attempt: r.try_get("next_attempt")?,
        attempts: r.try_get("attempts")?,
    })
}

impl Store {
    pub async fn insert_domain(&self, d: &DomainRow) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO ingest_domains ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&d.domain)
        .bind(&d.account_id)
        .bind(&d.cert_pem)
        .bind(&d.key_pem)
        .bind(d.created)
        .bind(&d.status)
        .bind(&d.method)
        .bind(&d.error)
        .bind(&d.verify_token)
        .bind(&d.verify_value)
        .bind(d.expires)
        .bind(d.renewed)
        .bind(d.modified)
        .bind(d.next_attempt)
        .bind(d.attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Write back a row's state (everything but its name, owner and
    /// creation); false when it is gone.
    pub async fn update_domain(&self, d: &DomainRow) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE ingest_domains SET cert_pem = $3, key_pem = $4, status = $5, method = $6, \
             error = $7, verify_token = $8, verify_value = $9, expires = $10, renewed = $11, \
             modified = $12, next_attempt = $13, attempts = $14 \
             WHERE domain = $1 AND account_id = $2",
        )
        .bind(&d.domain)
        .bind(&d.account_id)
        .bind(&d.cert_pem)
        .bind(&d.key_pem)
        .bind(&d.status)
        .bind(&d.method)
        .bind(&d.error)
        .bind(&d.verify_token)
        .bind(&d.verify_value)
        .bind(d.expires)
        .bind(d.renewed)
        .bind(now_micros().max(d.modified + 1))
        .bind(d.next_attempt)
        .bind(d.attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn domain(&self, domain: &str) -> sqlx::Result<Option<DomainRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ingest_domains WHERE domain = $1"
        ))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Domains of one account, or of every account with `None`.
    pub async fn list_domains(&self, account_id: Option<&str>) -> sqlx::Result<Vec<DomainRow>> {
        let sql = format!("SELECT {COLUMNS} FROM ingest_domains");
        let rows = match account_id {
            Some(a) => {
                sqlx::query(&format!(
                    "{sql} WHERE account_id = $1 ORDER BY created, domain"
                ))
                .bind(a)
                .fetch_all(&self.pool)
                .await?
            }
            None => sqlx::query(&sql).fetch_all(&self.pool).await?,
        };
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_domain(&self, account_id: &str, domain: &str) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM ingest_domains WHERE domain = $1 AND account_id = $2")
            .bind(domain)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Take (or extend) the lease on a domain's work for `holder` until
    /// `until` µs: true when this holder has it. One node orders, renews or
    /// checks a name at a time; a lease left by a node that died runs out.
    pub async fn lease_domain(&self, domain: &str, holder: &str, until: i64) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE ingest_domains SET lease_holder = $2, lease_until = $3 \
             WHERE domain = $1 AND (lease_holder = $2 OR lease_until < $4)",
        )
        .bind(domain)
        .bind(holder)
        .bind(until)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Give a lease back.
    pub async fn release_domain(&self, domain: &str, holder: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE ingest_domains SET lease_holder = '', lease_until = 0 \
             WHERE domain = $1 AND lease_holder = $2",
        )
        .bind(domain)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Publish a challenge answer: `id` is `http:<token>` (HTTP-01, value:
    /// the key authorization) or `alpn:<domain>` (TLS-ALPN-01, value: the
    /// key authorization).
    pub async fn put_challenge(&self, id: &str, domain: &str, value: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO acme_challenges (id, domain, value, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET domain = excluded.domain, value = excluded.value, \
             created = excluded.created",
        )
        .bind(id)
        .bind(domain)
        .bind(value)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn challenge(&self, id: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM acme_challenges WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Every TLS-ALPN-01 answer: (domain, key authorization).
    pub async fn alpn_challenges(&self) -> sqlx::Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT domain, value FROM acme_challenges WHERE id LIKE 'alpn:%'")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("domain")?, r.try_get("value")?)))
            .collect()
    }

    /// Drop a domain's answers (its order is over) and any older than
    /// `before` µs.
    pub async fn drop_challenges(&self, domain: &str, before: i64) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM acme_challenges WHERE domain = $1 OR created < $2")
            .bind(domain)
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The upload whose HTTP verification token is `token`, if pending.
    pub async fn verification_value(&self, token: &str) -> sqlx::Result<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT verify_value FROM ingest_domains WHERE verify_token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await
    }
}
