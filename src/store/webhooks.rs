//! Account webhooks and the queue of their events.
//!
//! An event is written to `webhook_events` by the node that observed it
//! (one row, so it is delivered once however many nodes share the store)
//! and deleted once delivered or given up. A sender claims rows before it
//! sends them: a claim is a random token and a deadline, set by one
//! `UPDATE` whose `WHERE` re-checks that the row is unclaimed, so two
//! nodes never both send a row; a claim whose sender died expires. Only
//! the oldest row of an account can be claimed, so an account's events
//! arrive in order.

use sqlx::Row;

use super::{now_micros, Store};

/// Events queued per account at most; more are dropped (and counted).
pub const MAX_QUEUED_PER_ACCOUNT: i64 = 10_000;

/// An account's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub account_id: String,
    pub url: String,
    pub secret: String,
    pub modified: i64,
}

/// A claimed event with where it goes (`url`/`secret` are `None` when the
/// account's webhook was deleted meanwhile).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    pub id: String,
    pub account_id: String,
    pub body: String,
    pub created: i64,
    pub attempts: i64,
    pub url: Option<String>,
    pub secret: Option<String>,
}

/// What became of an event offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for delivery.
    Queued,
    /// The input is unknown or its account has no webhook.
    NoWebhook,
    /// The account's queue is full.
    Full,
}

impl Store {
    /// Set the account's webhook URL. The signing secret is made on the
    /// first set and kept by later ones (a delete forgets it).
    pub async fn put_webhook(&self, account_id: &str, url: &str) -> sqlx::Result<WebhookRow> {
        let now = now_micros();
        sqlx::query(
            "INSERT INTO webhooks (account_id, url, secret, modified) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id) DO UPDATE SET url = excluded.url, \
             modified = excluded.modified",
        )
        .bind(account_id)
        .bind(url)
        .bind(crate::secret::new_secret())
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.webhook(account_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    pub async fn webhook(&self, account_id: &str) -> sqlx::Result<Option<WebhookRow>> {
        let row = sqlx::query(
            "SELECT account_id, url, secret, modified FROM webhooks WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(WebhookRow {
                account_id: r.try_get("account_id")?,
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
                modified: r.try_get("modified")?,
            })
        })
        .transpose()
    }

    /// Delete the account's webhook and its undelivered events. False if
    /// it had none.
    pub async fn delete_webhook(&self, account_id: &str) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_events WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Queue `body` for the webhook of the account owning live input
    /// `uid`, observed at `at` (microseconds).
    pub async fn enqueue_webhook_event(
        &self,
        uid: &str,
        body: &str,
        at: i64,
    ) -> sqlx::Result<Enqueued> {
        let done = sqlx::query(
            "INSERT INTO webhook_events \
             (id, seq, account_id, body, created, attempts, next_at, claim, claim_until) \
             SELECT $1, $2, i.account_id, $3, $4, 0, 0, '', 0 \
             FROM live_inputs i JOIN webhooks w ON w.account_id = i.account_id \
             WHERE i.uid = $5 AND (SELECT COUNT(*) FROM webhook_events q \
             WHERE q.account_id = i.account_id) < $6",
        )
        .bind(crate::secret::new_id())
        .bind(at)
        .bind(body)
        .bind(now_micros())
        .bind(uid)
        .bind(MAX_QUEUED_PER_ACCOUNT)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(Enqueued::Queued);
        }
        let has_webhook: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM live_inputs i JOIN webhooks w ON w.account_id = i.account_id \
             WHERE i.uid = $1",
        )
        .bind(uid)
        .fetch_one(&self.pool)
        .await?;
        Ok(if has_webhook > 0 {
            Enqueued::Full
        } else {
            Enqueued::NoWebhook
        })
    }

    /// Claim up to `limit` events due at `now` (the oldest of each account
    /// only) until `until`, and return them.
    pub async fn claim_webhook_events(
        &self,
        now: i64,
        until: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<QueuedEvent>> {
        let claim = crate::secret::new_id();
        sqlx::query(
            "UPDATE webhook_events SET claim = $1, claim_until = $2 \
             WHERE claim_until < $3 AND next_at <= $3 AND id IN (\
               SELECT e.id FROM webhook_events e \
               WHERE e.claim_until < $3 AND e.next_at <= $3 AND NOT EXISTS (\
                 SELECT 1 FROM webhook_events p WHERE p.account_id = e.account_id \
                 AND (p.seq < e.seq OR (p.seq = e.seq AND p.id < e.id))) \
               ORDER BY e.seq LIMIT $4)",
        )
        .bind(&claim)
        .bind(until)
        .bind(now)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT e.id, e.account_id, e.body, e.created, e.attempts, w.url, w.secret \
             FROM webhook_events e LEFT JOIN webhooks w ON w.account_id = e.account_id \
             WHERE e.claim = $1 ORDER BY e.seq",
        )
        .bind(&claim)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedEvent {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    body: r.try_get("body")?,
                    created: r.try_get("created")?,
                    attempts: r.try_get("attempts")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                })
            })
            .collect()
    }

    /// Forget an event (delivered, expired or undeliverable).
    pub async fn remove_webhook_event(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM webhook_events WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Release a claimed event for another attempt at `next_at`.
    pub async fn retry_webhook_event(
        &self,
        id: &str,
        attempts: i64,
        next_at: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE webhook_events SET attempts = $1, next_at = $2, claim = '', claim_until = 0 \
             WHERE id = $3",
        )
        .bind(attempts)
        .bind(next_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Release every claim (a node alone on its store, at start: the
    /// claims are its own, left by a stop mid-delivery).
    pub async fn release_webhook_claims(&self) -> sqlx::Result<()> {
        sqlx::query("UPDATE webhook_events SET claim = '', claim_until = 0 WHERE claim <> ''")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Events waiting in the queue (all accounts).
    pub async fn webhook_queue_depth(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
            .fetch_one(&self.pool)
            .await
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Run by the store's round trip: `a` is an account with live input
    /// `uid`, `b` an account without inputs.
    pub async fn round_trip_on(s: &Store, a: &str, uid: &str, b: &str) {
        // Other accounts' rows (a shared test database) are left alone.
        let mine = |v: Vec<QueuedEvent>| -> Vec<QueuedEvent> {
            v.into_iter().filter(|e| e.account_id == a).collect()
        };
        let depth0 = s.webhook_queue_depth().await.unwrap();
        assert_eq!(
            s.enqueue_webhook_event(uid, "{}", 1).await.unwrap(),
            Enqueued::NoWebhook
        );
        let w = s.put_webhook(a, "https://one.example/hook").await.unwrap();
        assert_eq!(w.secret.len(), 64);
        let w2 = s.put_webhook(a, "https://two.example/hook").await.unwrap();
        assert_eq!(
            (w2.url.as_str(), &w2.secret),
            ("https://two.example/hook", &w.secret)
        );
        assert!(s.webhook(b).await.unwrap().is_none());
        for (n, body) in ["first", "second"].iter().enumerate() {
            assert_eq!(
                s.enqueue_webhook_event(uid, body, 10 + n as i64)
                    .await
                    .unwrap(),
                Enqueued::Queued
            );
        }
        assert_eq!(s.webhook_queue_depth().await.unwrap(), depth0 + 2);
        // Only the oldest of the account is claimed, and only once.
        let now = now_micros();
        let got = mine(
            s.claim_webhook_events(now, now + 1_000_000, 10)
                .await
                .unwrap(),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "first");
        assert_eq!(got[0].url.as_deref(), Some("https://two.example/hook"));
        assert!(mine(
            s.claim_webhook_events(now, now + 1_000_000, 10)
                .await
                .unwrap()
        )
        .is_empty());
        // Retried later: not due now, and the second waits behind it.
        s.retry_webhook_event(&got[0].id, 1, now + 60_000_000)
            .await
            .unwrap();
        assert!(mine(
            s.claim_webhook_events(now, now + 1_000_000, 10)
                .await
                .unwrap()
        )
        .is_empty());
        let later = now + 61_000_000;
        let again = mine(s.claim_webhook_events(later, later + 1, 10).await.unwrap());
        assert_eq!((again[0].body.as_str(), again[0].attempts), ("first", 1));
        s.remove_webhook_event(&again[0].id).await.unwrap();
        // An expired claim is claimed again.
        let c1 = mine(s.claim_webhook_events(later, later + 1, 10).await.unwrap());
        assert_eq!(c1[0].body, "second");
        let c2 = mine(
            s.claim_webhook_events(later + 2, later + 3, 10)
                .await
                .unwrap(),
        );
        assert_eq!(c2[0].id, c1[0].id);
        s.release_webhook_claims().await.unwrap();
        assert_eq!(
            mine(s.claim_webhook_events(later, later + 1, 10).await.unwrap()).len(),
            1
        );
        assert!(s.delete_webhook(a).await.unwrap());
        assert!(!s.delete_webhook(a).await.unwrap());
        assert_eq!(s.webhook_queue_depth().await.unwrap(), depth0);
    }

    /// Two stores on one database (two nodes) claiming at once never both
    /// get a row, and between them get every row.
    async fn two_claimers_on(a: &Store, b: &Store) {
        let mut queued = std::collections::HashSet::new();
        for n in 0..40 {
            let account = crate::secret::new_id();
            a.create_account(&account, "c").await.unwrap();
            let uid = crate::secret::new_id();
            let mut row = super::super::tests::input(&uid, &account);
            row.stream_key = crate::secret::new_id();
            row.playback_key = crate::secret::new_id();
            a.insert_input(&row).await.unwrap();
            a.put_webhook(&account, "https://e.example/").await.unwrap();
            let body = format!("event {n} {uid}");
            assert_eq!(
                b.enqueue_webhook_event(&uid, &body, n).await.unwrap(),
                Enqueued::Queued
            );
            queued.insert(body);
        }
        let claim = |s: Store| async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                let now = now_micros();
                let batch = s
                    .claim_webhook_events(now, now + 60_000_000, 3)
                    .await
                    .unwrap();
                got.extend(batch.into_iter().map(|e| e.body));
            }
            got
        };
        let (x, y) = tokio::join!(
            tokio::spawn(claim(a.clone())),
            tokio::spawn(claim(b.clone()))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let mine: Vec<String> = x
            .iter()
            .chain(y.iter())
            .filter(|b| queued.contains(*b))
            .cloned()
            .collect();
        let unique: std::collections::HashSet<_> = mine.iter().cloned().collect();
        assert_eq!(unique.len(), mine.len(), "a row claimed twice");
        assert_eq!(unique, queued, "every row claimed once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_claimers_never_share_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open_sqlite(dir.path()).await.unwrap();
        let b = Store::open_sqlite(dir.path()).await.unwrap();
        two_claimers_on(&a, &b).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            // A schema of its own: a claimer takes any account's rows, so
            // rows other runs left would crowd out this run's.
            let schema = crate::store::tests::PgSchema::create(&url).await;
            let a = Store::open(&schema.url).await.unwrap();
            let b = Store::open(&schema.url).await.unwrap();
            two_claimers_on(&a, &b).await;
            a.close().await;
            b.close().await;
            schema.drop().await;
        }
    }
}
