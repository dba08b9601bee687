//! Named account API tokens (create, list, revoke) and the rotation of an
//! admin token. Tokens are stored as hashes; the secret is shown once.

use sqlx::Row;

use super::{now_micros, Store};

/// An account's API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub created: i64,
}

impl Store {
    /// Store a token by its hash, with its id and name.
    pub async fn add_named_token(
        &self,
        hash: &str,
        account_id: &str,
        admin: bool,
        id: &str,
        name: &str,
    ) -> sqlx::Result<TokenRow> {
        let created = now_micros();
        sqlx::query(
            "INSERT INTO api_tokens (hash, account_id, admin, created, id, name) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(account_id)
        .bind(admin as i64)
        .bind(created)
        .bind(id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(TokenRow {
            id: id.into(),
            name: name.into(),
            created,
        })
    }

    /// The account's (non-admin) API tokens, oldest first.
    pub async fn list_tokens(&self, account_id: &str) -> sqlx::Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT id, name, created FROM api_tokens WHERE account_id = $1 AND admin = 0 \
             ORDER BY created, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created: r.try_get("created")?,
                })
            })
            .collect()
    }

    /// Revoke one of the account's (non-admin) tokens. False if there is
    /// no such token.
    pub async fn revoke_token(&self, account_id: &str, id: &str) -> sqlx::Result<bool> {
        let done =
            sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND account_id = $2 AND admin = 0")
                .bind(id)
                .bind(account_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replace the admin token with hash `old` by one with hash `new`, in
    /// one transaction. False (nothing changed) if `old` is not an admin
    /// token.
    pub async fn rotate_admin_token(&self, old: &str, new: &str) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT account_id FROM api_tokens WHERE hash = $1 AND admin = 1")
            .bind(old)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let account: String = row.try_get("account_id")?;
        sqlx::query("DELETE FROM api_tokens WHERE hash = $1")
            .bind(old)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_tokens (hash, account_id, admin, created, id, name) \
             VALUES ($1, $2, 1, $3, $4, $5)",
        )
        .bind(new)
        .bind(&account)
        .bind(now_micros())
        .bind(crate::secret::new_id())
        .bind("admin")
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Run by the store's round trip (SQLite and, when configured,
    /// PostgreSQL): `a` and `b` are accounts, `h` the hash of an admin
    /// token of `a`.
    pub async fn round_trip_on(s: &Store, a: &str, b: &str, h: &str) {
        // Named tokens: listed without the admin token, revoked by id and
        // account only; the admin token is rotated in one step.
        let th = crate::secret::token_hash("account-token");
        let tid = crate::secret::new_id();
        let row = s.add_named_token(&th, a, false, &tid, "ci").await.unwrap();
        assert_eq!(s.list_tokens(a).await.unwrap(), vec![row]);
        assert!(!s.revoke_token(b, &tid).await.unwrap());
        assert!(s.token(&th).await.unwrap().is_some());
        assert!(s.revoke_token(a, &tid).await.unwrap());
        assert!(s.token(&th).await.unwrap().is_none());
        assert!(s.list_tokens(a).await.unwrap().is_empty());
        let h2 = crate::secret::token_hash("new-admin");
        assert!(!s.rotate_admin_token(&th, &h2).await.unwrap());
        assert!(s.rotate_admin_token(h, &h2).await.unwrap());
        assert!(s.token(h).await.unwrap().is_none());
        assert!(s.token(&h2).await.unwrap().unwrap().admin);
    }

    /// A database of a node from before token ids: its tokens get ids and
    /// can be listed and revoked.
    #[tokio::test]
    async fn older_tokens_get_ids() {
        use sqlx::Executor as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banyan.db");
        {
            sqlx::any::install_default_drivers();
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            pool.execute(
                "CREATE TABLE api_tokens (hash TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
                 admin BIGINT NOT NULL, created BIGINT NOT NULL)",
            )
            .await
            .unwrap();
            let h = crate::secret::token_hash("old");
            pool.execute(format!("INSERT INTO api_tokens VALUES ('{h}', 'acct', 0, 1)").as_str())
                .await
                .unwrap();
            pool.close().await;
        }
        let s = Store::open_sqlite(dir.path()).await.unwrap();
        let list = s.list_tokens("acct").await.unwrap();
        let h = crate::secret::token_hash("old");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, h[..32]);
        assert!(crate::secret::is_id(&list[0].id));
        assert!(s.revoke_token("acct", &list[0].id).await.unwrap());
        assert!(s.token(&h).await.unwrap().is_none());
    }
}
