//! Simulcast outputs of live inputs: where a live input's stream is
//! re-published (RTMP, RTMPS, SRT). The stream key is a secret of the
//! account: stored as given (the push needs it), never logged.

use sqlx::Row;

use super::{now_micros, Store};

/// One output as stored.
#[derive(Clone, PartialEq)]
pub struct OutputRow {
    pub uid: String,
    pub input_uid: String,
    pub account_id: String,
    pub url: String,
    pub stream_key: String,
    pub enabled: bool,
    pub created: i64,
}

impl std::fmt::Debug for OutputRow {
    // Without the stream key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputRow")
            .field("uid", &self.uid)
            .field("input_uid", &self.input_uid)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "uid, input_uid, account_id, url, stream_key, enabled, created";

fn from_row(r: &sqlx::any::AnyRow) -> sqlx::Result<OutputRow> {
    Ok(OutputRow {
        uid: r.try_get("uid")?,
        input_uid: r.try_get("input_uid")?,
        account_id: r.try_get("account_id")?,
        url: r.try_get("url")?,
        stream_key: r.try_get("stream_key")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        created: r.try_get("created")?,
    })
}

impl Store {
    /// Add an output; `created` is set now. False when the input already
    /// has `max` outputs (checked and inserted in one statement, so two
    /// requests at once cannot both take the last place).
    pub async fn insert_output(&self, o: &mut OutputRow, max: usize) -> sqlx::Result<bool> {
        o.created = now_micros();
        let done = sqlx::query(
            "INSERT INTO live_input_outputs (uid, input_uid, account_id, url, stream_key, \
             enabled, created) SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT COUNT(*) FROM live_input_outputs WHERE input_uid = $8) < $9",
        )
        .bind(&o.uid)
        .bind(&o.input_uid)
        .bind(&o.account_id)
        .bind(&o.url)
        .bind(&o.stream_key)
        .bind(o.enabled as i64)
        .bind(o.created)
        .bind(&o.input_uid)
        .bind(max as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The outputs of one input, oldest first.
    pub async fn list_outputs(
        &self,
        account_id: &str,
        input: &str,
    ) -> sqlx::Result<Vec<OutputRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM live_input_outputs WHERE account_id = $1 AND input_uid = $2 \
             ORDER BY created, uid"
        ))
        .bind(account_id)
        .bind(input)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Every enabled output (what the node may have to run).
    pub async fn enabled_outputs(&self) -> sqlx::Result<Vec<OutputRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM live_input_outputs WHERE enabled = 1"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Turn an output on or off; the row after the change, if it exists.
    pub async fn set_output_enabled(
        &self,
        account_id: &str,
        input: &str,
        uid: &str,
        enabled: bool,
    ) -> sqlx::Result<Option<OutputRow>> {
        sqlx::query(
            "UPDATE live_input_outputs SET enabled = $1 \
             WHERE uid = $2 AND input_uid = $3 AND account_id = $4",
        )
        .bind(enabled as i64)
        .bind(uid)
        .bind(input)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM live_input_outputs \
             WHERE uid = $1 AND input_uid = $2 AND account_id = $3"
        ))
        .bind(uid)
        .bind(input)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Delete one output. False if there is no such output.
    pub async fn delete_output(
        &self,
        account_id: &str,
        input: &str,
        uid: &str,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "DELETE FROM live_input_outputs WHERE uid = $1 AND input_uid = $2 AND account_id = $3",
        )
        .bind(uid)
        .bind(input)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Delete every output of an input (the input was deleted).
    pub async fn delete_outputs_of(&self, input: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM live_input_outputs WHERE input_uid = $1")
            .bind(input)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uid: &str, input: &str, account: &str) -> OutputRow {
        OutputRow {
            uid: uid.into(),
            input_uid: input.into(),
            account_id: account.into(),
            url: "rtmp://h/live".into(),
            stream_key: "secret-key".into(),
            enabled: true,
            created: 0,
        }
    }

    /// On SQLite, and on PostgreSQL when `BANYAN_TEST_POSTGRES` names one.
    #[tokio::test]
    async fn outputs_are_stored_capped_toggled_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        round_trip_on(&store).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            round_trip_on(&Store::open(&url).await.unwrap()).await;
        }
    }

    async fn round_trip_on(store: &Store) {
        let id = crate::secret::new_id;
        let (acc, in1, in2) = (id(), id(), id());
        let before = store.enabled_outputs().await.unwrap().len();
        let uids: Vec<String> = (0..4).map(|_| id()).collect();
        for u in &uids[..3] {
            assert!(store
                .insert_output(&mut row(u, &in1, &acc), 3)
                .await
                .unwrap());
        }
        assert!(!store
            .insert_output(&mut row(&uids[3], &in1, &acc), 3)
            .await
            .unwrap());
        assert!(store
            .insert_output(&mut row(&id(), &in2, &acc), 3)
            .await
            .unwrap());
        let list = store.list_outputs(&acc, &in1).await.unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].stream_key, "secret-key");
        assert!(!format!("{:?}", list[0]).contains("secret"));
        let off = store
            .set_output_enabled(&acc, &in1, &uids[1], false)
            .await
            .unwrap()
            .unwrap();
        assert!(!off.enabled);
        assert!(store
            .set_output_enabled("other", &in1, &uids[1], true)
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.enabled_outputs().await.unwrap().len(), before + 3);
        assert!(store.delete_output(&acc, &in1, &uids[0]).await.unwrap());
        assert!(!store.delete_output(&acc, &in1, &uids[0]).await.unwrap());
        store.delete_outputs_of(&in1).await.unwrap();
        assert!(store.list_outputs(&acc, &in1).await.unwrap().is_empty());
        assert_eq!(store.enabled_outputs().await.unwrap().len(), before + 1);
    }
}
