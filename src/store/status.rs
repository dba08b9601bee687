//! The last connection status of each live input (Cloudflare's `status`:
//! `connected`, `reconnecting`, `client_disconnect`, ...), kept in
//! `live_input_status` so the API shows it after a restart and on every
//! node of a shared store.

use super::{now_micros, Store};

impl Store {
    /// Record `status` as the input's last one.
    pub async fn set_input_status(&self, uid: &str, status: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO live_input_status (uid, status, updated) VALUES ($1, $2, $3) \
             ON CONFLICT (uid) DO UPDATE SET status = excluded.status, \
             updated = excluded.updated",
        )
        .bind(uid)
        .bind(status)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The input's last recorded status, if it ever had one.
    pub async fn input_status(&self, uid: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT status FROM live_input_status WHERE uid = $1")
            .bind(uid)
            .fetch_optional(&self.pool)
            .await
    }

    /// Forget a deleted input's status.
    pub async fn forget_input_status(&self, uid: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM live_input_status WHERE uid = $1")
            .bind(uid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(s.input_status("a").await.unwrap(), None);
        s.set_input_status("a", "connected").await.unwrap();
        s.set_input_status("a", "client_disconnect").await.unwrap();
        assert_eq!(
            s.input_status("a").await.unwrap().as_deref(),
            Some("client_disconnect")
        );
        s.forget_input_status("a").await.unwrap();
        assert_eq!(s.input_status("a").await.unwrap(), None);
    }
}
