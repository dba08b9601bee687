//! The store: accounts, API tokens, live inputs and ingest domains.
//!
//! One struct over an `sqlx::AnyPool`, so the same SQL serves the embedded
//! SQLite file (single node) and PostgreSQL (cluster). The SQL is kept
//! portable: `$n` placeholders, TEXT and BIGINT columns only (booleans are
//! 0/1, times are microseconds since the Unix epoch, JSON is TEXT).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

mod changes;
mod domains;
pub mod migrate;
mod outputs;
mod status;
mod tokens;
mod webhooks;
pub use domains::DomainRow;
pub use outputs::OutputRow;
pub use tokens::TokenRow;
pub use webhooks::{Enqueued, QueuedEvent, WebhookRow, MAX_QUEUED_PER_ACCOUNT};

/// An account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created: i64,
}

/// What an API token opens.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub account_id: String,
    pub admin: bool,
}

/// A live input as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveInputRow {
    pub uid: String,
    pub account_id: String,
    pub created: i64,
    pub modified: i64,
    /// JSON object.
    pub meta: String,
    pub default_creator: String,
    pub enabled: bool,
    pub stream_key: String,
    pub playback_key: String,
    pub srt_passphrase: String,
    pub srt_play_passphrase: String,
    /// JSON array of `{"instreamId","language","name"}`.
    pub captions: String,
    /// JSON object: Cloudflare's `recording` (see `playback::recording`).
    pub recording: String,
    /// JSON object: the other Cloudflare fields (`deleteRecordingAfterDays`,
    /// `preferLowLatency`, `keysRotatedAt`; see `api::inputs`).
    pub options: String,
}

impl LiveInputRow {
    /// A new input's row: enabled, empty `meta`, captions, `recording` and
    /// options, no creator, and empty secrets (the caller sets them).
    pub fn new(uid: &str, account_id: &str, created: i64) -> LiveInputRow {
        LiveInputRow {
            uid: uid.into(),
            account_id: account_id.into(),
            created,
            modified: created,
            meta: "{}".into(),
            default_creator: String::new(),
            enabled: true,
            stream_key: String::new(),
            playback_key: String::new(),
            srt_passphrase: String::new(),
            srt_play_passphrase: String::new(),
            captions: "[]".into(),
            recording: "{}".into(),
            options: "{}".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The store of one node (or of a cluster, on PostgreSQL).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Since when the database has been unreachable (None: reachable).
    down_since: std::sync::Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    /// A small pool of its own for analytics queries, so that they never
    /// hold the connections the API, key refresh and heartbeats use.
    analytics: AnyPool,
}

/// Connections of the analytics pool on PostgreSQL (the queries run on the
/// database's machine).
pub const ANALYTICS_POOL: u32 = 2;
/// Connections of the analytics pool on SQLite: the queries run on the
/// node's own cores, so analytics can take one of them at most.
pub const ANALYTICS_POOL_SQLITE: u32 = 1;

/// How long a query waits for a PostgreSQL connection before it fails: a
/// database that is down (restarting, unreachable) gives bounded errors
/// (the API answers 503, the cluster's tick fails and retries) instead of
/// stalls.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// True when `e` says the database cannot be reached now (down, restarting,
/// connection lost or pool exhausted) rather than that a query is wrong.
pub fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (08...) and operator intervention (57P0x:
        // shutdown, starting up).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

const INPUT_COLUMNS: &str = "uid, account_id, created, modified, meta, default_creator, enabled, \
     stream_key, playback_key, srt_passphrase, srt_play_passphrase, captions, recording, \
     options";

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn input_from_row(r: &sqlx::any::AnyRow) -> Result<LiveInputRow, sqlx::Error> {
    Ok(LiveInputRow {
        uid: r.try_get("uid")?,
        account_id: r.try_get("account_id")?,
        created: r.try_get("created")?,
        modified: r.try_get("modified")?,
        meta: r.try_get("meta")?,
        default_creator: r.try_get("default_creator")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        stream_key: r.try_get("stream_key")?,
        playback_key: r.try_get("playback_key")?,
        srt_passphrase: r.try_get("srt_passphrase")?,
        srt_play_passphrase: r.try_get("srt_play_passphrase")?,
        captions: r.try_get("captions")?,
        recording: r.try_get("recording")?,
        options: r.try_get("options")?,
    })
}

impl Store {
    /// The embedded SQLite database `<data_dir>/banyan.db`, in WAL mode.
    pub async fn open_sqlite(data_dir: &Path) -> anyhow::Result<Store> {
        let path = data_dir.join("banyan.db");
        if !path.exists() {
            // SQLite gives its -wal and -shm files the mode of the database.
            crate::tls::write_private(&path, b"").context("creating the database file")?;
        }
        // Whatever mode an older file had: the database holds every secret.
        for file in ["banyan.db", "banyan.db-wal", "banyan.db-shm"] {
            crate::tls::make_private(&data_dir.join(file))
                .with_context(|| format!("setting {file} to 0600"))?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Store::open(&url).await
    }

    /// Connect to `sqlite://...` or `postgres://...` and bring the schema
    /// up to date ([`migrate`]).
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let opts: AnyConnectOptions = url.parse().context("database URL")?;
        let pool = pool_options(backend)
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .connect_with(opts.clone())
            .await
            .context("connecting to the database")?;
        let analytics = pool_options(backend)
            .max_connections(if backend == Backend::Sqlite {
                ANALYTICS_POOL_SQLITE
            } else {
                ANALYTICS_POOL
            })
            .min_connections(0)
            .connect_lazy_with(opts);
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        migrate::run(&pool).await?;
        Ok(Store {
            pool,
            down_since: Default::default(),
            analytics,
        })
    }

    /// The analytics pool (GraphQL queries only).
    pub fn analytics_pool(&self) -> &AnyPool {
        &self.analytics
    }
}

fn pool_options(backend: Backend) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(if backend == Backend::Sqlite {
            Duration::from_secs(10)
        } else {
            PG_ACQUIRE_TIMEOUT
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                }
                Ok(())
            })
        })
}

impl Store {
    /// Note a failed background use of the store (`what` failed): an outage
    /// is logged once when it starts (then at debug level) and once when
    /// it ends, however many tasks keep retrying through it. Other errors
    /// are logged each time.
    pub fn note_failure(&self, what: &str, e: &anyhow::Error) {
        let outage = e
            .chain()
            .any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(unavailable));
        if !outage {
            tracing::warn!("{what}: {e:#}");
            return;
        }
        metrics::counter!("banyan_store_unavailable_total").increment(1);
        let mut down = self.down_since.lock();
        if down.is_none() {
            *down = Some(std::time::Instant::now());
            tracing::warn!(
                "the database is unreachable ({what}: {e:#}); live streams carry on, \
                 retrying in the background"
            );
        } else {
            tracing::debug!("{what}: {e:#}");
        }
    }

    /// Note a successful use of the store: ends an outage (logged once).
    pub fn note_ok(&self) {
        let mut down = self.down_since.lock();
        if let Some(t) = down.take() {
            tracing::info!(
                secs = t.elapsed().as_secs_f64(),
                "the database is reachable again"
            );
        }
    }

    pub async fn close(&self) {
        self.analytics.close().await;
        self.pool.close().await;
    }

    /// The pool, for modules that keep their own tables (analytics).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- accounts and tokens

    pub async fn create_account(&self, id: &str, name: &str) -> sqlx::Result<Account> {
        let created = now_micros();
        sqlx::query("INSERT INTO accounts (id, name, created) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(created)
            .execute(&self.pool)
            .await?;
        Ok(Account {
            id: id.into(),
            name: name.into(),
            created,
        })
    }

    pub async fn list_accounts(&self) -> sqlx::Result<Vec<Account>> {
        let rows = sqlx::query("SELECT id, name, created FROM accounts ORDER BY created, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Account {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created: r.try_get("created")?,
                })
            })
            .collect()
    }

    pub async fn account_exists(&self, id: &str) -> sqlx::Result<bool> {
        let row = sqlx::query("SELECT id FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Store a token by its hash (with a new id and no name).
    pub async fn add_token(&self, hash: &str, account_id: &str, admin: bool) -> sqlx::Result<()> {
        self.add_named_token(hash, account_id, admin, &crate::secret::new_id(), "")
            .await
            .map(|_| ())
    }

    /// The token with this hash, if any.
    pub async fn token(&self, hash: &str) -> sqlx::Result<Option<TokenInfo>> {
        let row = sqlx::query("SELECT account_id, admin FROM api_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(TokenInfo {
                account_id: r.try_get("account_id")?,
                admin: r.try_get::<i64, _>("admin")? != 0,
            })
        })
        .transpose()
    }

    // ---- live inputs

    pub async fn insert_input(&self, i: &LiveInputRow) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO live_inputs ({INPUT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&i.uid)
        .bind(&i.account_id)
        .bind(i.created)
        .bind(i.modified)
        .bind(&i.meta)
        .bind(&i.default_creator)
        .bind(i.enabled as i64)
        .bind(&i.stream_key)
        .bind(&i.playback_key)
        .bind(&i.srt_passphrase)
        .bind(&i.srt_play_passphrase)
        .bind(&i.captions)
        .bind(&i.recording)
        .bind(&i.options)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Write every mutable column of an existing input. False if it is gone.
    pub async fn update_input(&self, i: &LiveInputRow) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE live_inputs SET modified = $1, meta = $2, default_creator = $3, \
             enabled = $4, stream_key = $5, playback_key = $6, srt_passphrase = $7, \
             srt_play_passphrase = $8, captions = $9, recording = $12, \
             options = $13 \
             WHERE uid = $10 AND account_id = $11",
        )
        .bind(i.modified)
        .bind(&i.meta)
        .bind(&i.default_creator)
        .bind(i.enabled as i64)
        .bind(&i.stream_key)
        .bind(&i.playback_key)
        .bind(&i.srt_passphrase)
        .bind(&i.srt_play_passphrase)
        .bind(&i.captions)
        .bind(&i.uid)
        .bind(&i.account_id)
        .bind(&i.recording)
        .bind(&i.options)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// An input of an account (another account's uid is `None`).
    pub async fn input(&self, account_id: &str, uid: &str) -> sqlx::Result<Option<LiveInputRow>> {
        let row = sqlx::query(&format!(
            "SELECT {INPUT_COLUMNS} FROM live_inputs WHERE uid = $1 AND account_id = $2"
        ))
        .bind(uid)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(input_from_row).transpose()
    }

    pub async fn list_inputs(&self, account_id: &str) -> sqlx::Result<Vec<LiveInputRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {INPUT_COLUMNS} FROM live_inputs WHERE account_id = $1 ORDER BY created, uid"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(input_from_row).collect()
    }

    /// Every input of every account (to build the key table).
    pub async fn all_inputs(&self) -> sqlx::Result<Vec<LiveInputRow>> {
        let rows = sqlx::query(&format!("SELECT {INPUT_COLUMNS} FROM live_inputs"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(input_from_row).collect()
    }

    /// Delete an input and leave a tombstone for the other nodes of a
    /// shared store (one transaction).
    pub async fn delete_input(&self, account_id: &str, uid: &str) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM live_inputs WHERE uid = $1 AND account_id = $2")
            .bind(uid)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO live_input_deletions (uid, deleted) VALUES ($1, $2) \
             ON CONFLICT (uid) DO UPDATE SET deleted = excluded.deleted",
        )
        .bind(uid)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PostgreSQL schema of its own on the shared `BANYAN_TEST_POSTGRES`
    /// database, for tests that need a new database or one no other test
    /// touches: `url` connects with it as the search path (so the store's
    /// tables, `_sqlx_migrations` included, are made there);
    /// [`PgSchema::drop`] removes it.
    pub(crate) struct PgSchema {
        pub url: String,
        admin: AnyPool,
        schema: String,
    }

    impl PgSchema {
        pub(crate) async fn create(url: &str) -> PgSchema {
            sqlx::any::install_default_drivers();
            let admin = AnyPool::connect(url).await.unwrap();
            let schema = format!("t{}", crate::secret::new_id());
            admin
                .execute(format!("CREATE SCHEMA {schema}").as_str())
                .await
                .unwrap();
            let sep = if url.contains('?') { '&' } else { '?' };
            PgSchema {
                url: format!("{url}{sep}options[search_path]={schema}"),
                admin,
                schema,
            }
        }

        pub(crate) async fn drop(self) {
            let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
            self.admin.execute(sql.as_str()).await.unwrap();
            self.admin.close().await;
        }
    }

    pub(super) fn input(uid: &str, account: &str) -> LiveInputRow {
        LiveInputRow {
            stream_key: "sk".into(),
            playback_key: "pk".into(),
            srt_passphrase: "sp".into(),
            srt_play_passphrase: "spp".into(),
            ..LiveInputRow::new(uid, account, 1)
        }
    }

    /// Runs the store round trip against SQLite, and against PostgreSQL when
    /// `BANYAN_TEST_POSTGRES` names a database URL (in a schema of its own,
    /// so that it can run again on the same database).
    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open_sqlite(dir.path()).await.unwrap();
        round_trip_on(&sqlite).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            // A schema of its own: the token rotation writes fixed hashes.
            let schema = PgSchema::create(&url).await;
            let pg = Store::open(&schema.url).await.unwrap();
            round_trip_on(&pg).await;
            pg.close().await;
            schema.drop().await;
        }
    }

    async fn round_trip_on(s: &Store) {
        let a = crate::secret::new_id();
        let b = crate::secret::new_id();
        s.create_account(&a, "a").await.unwrap();
        s.create_account(&b, "b").await.unwrap();
        assert!(s.account_exists(&a).await.unwrap());
        let h = crate::secret::token_hash(&a);
        s.add_token(&h, &a, true).await.unwrap();
        let t = s.token(&h).await.unwrap().unwrap();
        assert!(t.admin && t.account_id == a);
        assert!(s.token("nope").await.unwrap().is_none());

        tokens::tests::round_trip_on(s, &a, &b, &h).await;

        let uid = crate::secret::new_id();
        let mut i = input(&uid, &a);
        s.insert_input(&i).await.unwrap();
        assert_eq!(s.input(&a, &uid).await.unwrap().as_ref(), Some(&i));
        assert!(s.input(&b, &uid).await.unwrap().is_none());
        i.enabled = false;
        i.meta = r#"{"name":"x"}"#.into();
        assert!(s.update_input(&i).await.unwrap());
        assert_eq!(s.input(&a, &uid).await.unwrap(), Some(i.clone()));
        assert_eq!(s.list_inputs(&a).await.unwrap().len(), 1);
        webhooks::tests::round_trip_on(s, &a, &uid, &b).await;
        assert!(s.list_inputs(&b).await.unwrap().is_empty());
        assert!(!s.delete_input(&b, &uid).await.unwrap());
        assert!(s.delete_input(&a, &uid).await.unwrap());
        assert!(s.input(&a, &uid).await.unwrap().is_none());

        let domain = format!("{a}.example.test");
        s.insert_domain(&DomainRow {
            domain: domain.clone(),
            account_id: a.clone(),
            cert_pem: "c".into(),
            key_pem: "k".into(),
            created: 2,
            status: "active".into(),
            method: "upload".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(s.list_domains(Some(&a)).await.unwrap().len(), 1);
        assert!(s.domain(&domain).await.unwrap().is_some());
        assert!(!s.delete_domain(&b, &domain).await.unwrap());
        assert!(s.delete_domain(&a, &domain).await.unwrap());
    }
}
