//! What changed among the live inputs, for the key refresh of a shared
//! store (see `inputs::keysync`): inputs by `modified`, deletions by their
//! tombstones in `live_input_deletions`, and the count an account has (its
//! quota).

use sqlx::Row;

use super::{input_from_row, LiveInputRow, Store, INPUT_COLUMNS};

impl Store {
    /// Live inputs of an account.
    pub async fn count_inputs(&self, account_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM live_inputs WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.pool)
            .await
    }

    /// Inputs whose `modified` is at or after `since` (microseconds).
    pub async fn inputs_modified_since(&self, since: i64) -> sqlx::Result<Vec<LiveInputRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {INPUT_COLUMNS} FROM live_inputs WHERE modified >= $1"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(input_from_row).collect()
    }

    /// Inputs deleted at or after `since`: `(uid, deleted)`.
    pub async fn deletions_since(&self, since: i64) -> sqlx::Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT uid, deleted FROM live_input_deletions WHERE deleted >= $1")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("uid")?, r.try_get("deleted")?)))
            .collect()
    }

    /// Forget tombstones older than `before` (every node has long seen them;
    /// one that was away reloads everything when it comes back).
    pub async fn prune_deletions(&self, before: i64) -> sqlx::Result<u64> {
        let done = sqlx::query("DELETE FROM live_input_deletions WHERE deleted < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite, and on PostgreSQL when `BANYAN_TEST_POSTGRES` names one.
    #[tokio::test]
    async fn changes_and_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open_sqlite(dir.path()).await.unwrap();
        changes_on(&sqlite).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            changes_on(&Store::open(&url).await.unwrap()).await;
        }
    }

    async fn changes_on(s: &Store) {
        let acc = crate::secret::new_id();
        s.create_account(&acc, "a").await.unwrap();
        let t0 = crate::store::now_micros();
        let mut uids = Vec::new();
        for i in 0..3 {
            let uid = crate::secret::new_id();
            s.insert_input(&LiveInputRow {
                modified: t0 + i,
                stream_key: format!("sk{i}"),
                playback_key: format!("pk{i}"),
                srt_passphrase: "sp".into(),
                srt_play_passphrase: "spp".into(),
                ..LiveInputRow::new(&uid, &acc, t0)
            })
            .await
            .unwrap();
            uids.push(uid);
        }
        assert_eq!(s.count_inputs(&acc).await.unwrap(), 3);
        let since: Vec<String> = s
            .inputs_modified_since(t0 + 1)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.account_id == acc)
            .map(|r| r.uid)
            .collect();
        assert_eq!(since.len(), 2, "rows at or after the mark only");
        assert!(!since.contains(&uids[0]));
        let before = crate::store::now_micros();
        assert!(s.delete_input(&acc, &uids[1]).await.unwrap());
        assert!(!s.delete_input(&acc, &uids[1]).await.unwrap());
        let gone = s.deletions_since(before).await.unwrap();
        assert!(gone.iter().any(|(u, at)| u == &uids[1] && *at >= before));
        assert_eq!(s.count_inputs(&acc).await.unwrap(), 2);
        s.prune_deletions(i64::MAX).await.unwrap();
        assert!(s.deletions_since(0).await.unwrap().is_empty());
    }
}
