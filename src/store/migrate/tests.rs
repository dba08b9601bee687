//! Migrations on SQLite and, when `BANYAN_TEST_POSTGRES` names a database,
//! on PostgreSQL (each case in a schema of its own): the same tables,
//! columns and indexes on both; databases of older nodes adopted with
//! every row; concurrent starts.

use std::collections::BTreeMap;

use sqlx::{AnyPool, Executor};

use super::*;
use crate::store::tests::PgSchema;
use crate::store::Store;

/// Every table (its columns in order: name, type, NOT NULL, default, key)
/// and index of the current schema, but sqlx's own table, written the same
/// way for both engines.
async fn shape(pool: &AnyPool) -> BTreeMap<String, String> {
    let mut conn = pool.acquire().await.unwrap();
    let sqlite = sqlite(&conn);
    let mut out = BTreeMap::new();
    let tables: Vec<String> = if sqlite {
        sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    } else {
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    };
    for t in tables {
        let cols: Vec<(String, String, i64, Option<String>, i64)> = if sqlite {
            sqlx::query_as(
                "SELECT name, type, CAST(\"notnull\" <> 0 OR pk > 0 AS BIGINT), dflt_value, \
                 CAST(pk > 0 AS BIGINT) \
                 FROM pragma_table_info($1) ORDER BY cid",
            )
            .bind(&t)
            .fetch_all(&mut *conn)
            .await
            .unwrap()
        } else {
            sqlx::query_as(
                "SELECT c.column_name::text, upper(c.data_type::text), \
                   CAST(CASE WHEN c.is_nullable = 'NO' THEN 1 ELSE 0 END AS BIGINT), \
                   replace(c.column_default::text, '::text', ''), \
                   CAST(CASE WHEN EXISTS (SELECT 1 FROM information_schema.table_constraints k \
                     JOIN information_schema.key_column_usage u \
                       ON u.constraint_name = k.constraint_name \
                      AND u.table_schema = k.table_schema \
                     WHERE k.constraint_type = 'PRIMARY KEY' \
                       AND k.table_schema = c.table_schema AND u.table_name = c.table_name \
                       AND u.column_name = c.column_name) THEN 1 ELSE 0 END AS BIGINT) \
                 FROM information_schema.columns c \
                 WHERE c.table_schema = current_schema() AND c.table_name = $1 \
                 ORDER BY c.ordinal_position",
            )
            .bind(&t)
            .fetch_all(&mut *conn)
            .await
            .unwrap()
        };
        let cols: Vec<String> = cols
            .into_iter()
            .map(|(name, ty, not_null, default, key)| {
                format!(
                    "{name} {ty}{}{}{}",
                    if not_null != 0 { " NOT NULL" } else { "" },
                    default.map(|d| format!(" DEFAULT {d}")).unwrap_or_default(),
                    if key != 0 { " KEY" } else { "" }
                )
            })
            .collect();
        out.insert(format!("table {t}"), cols.join(", "));
    }
    let indexes: Vec<(String, String, String)> = if sqlite {
        sqlx::query_as(
            "SELECT name, tbl_name, sql FROM sqlite_master \
             WHERE type = 'index' AND sql IS NOT NULL",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    } else {
        sqlx::query_as(
            "SELECT indexname::text, tablename::text, indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND indexname NOT LIKE '%_pkey' \
             AND tablename <> '_sqlx_migrations'",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    };
    for (name, table, def) in indexes {
        // The column list: the last parenthesis of the definition.
        let cols = def
            .rsplit_once('(')
            .map(|(_, c)| {
                c.trim_end_matches(')')
                    .split_whitespace()
                    .collect::<String>()
            })
            .unwrap_or_default();
        let unique = def.to_ascii_uppercase().contains("UNIQUE INDEX");
        out.insert(
            format!("index {name}"),
            format!("{table} ({cols}) {unique}"),
        );
    }
    out
}

async fn applied(pool: &AnyPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// One database per case: a new SQLite data dir, or a new PostgreSQL
/// schema.
enum Db {
    Sqlite(tempfile::TempDir),
    Pg(PgSchema),
}

impl Db {
    async fn new(pg: Option<&str>) -> Db {
        match pg {
            None => Db::Sqlite(tempfile::tempdir().unwrap()),
            Some(url) => Db::Pg(PgSchema::create(url).await),
        }
    }

    /// A plain pool on it, as an older node would have had.
    async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        match self {
            Db::Sqlite(dir) => {
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("banyan.db").display()
                );
                AnyPool::connect(&url).await.unwrap()
            }
            Db::Pg(s) => AnyPool::connect(&s.url).await.unwrap(),
        }
    }

    async fn open(&self) -> anyhow::Result<Store> {
        match self {
            Db::Sqlite(dir) => Store::open_sqlite(dir.path()).await,
            Db::Pg(s) => Store::open(&s.url).await,
        }
    }

    async fn drop(self) {
        if let Db::Pg(s) = self {
            s.drop().await;
        }
    }
}

fn backends() -> Vec<Option<String>> {
    let mut v = vec![None];
    v.extend(std::env::var("BANYAN_TEST_POSTGRES").ok().map(Some));
    v
}

/// The tables every module uses.
const TABLES: &[&str] = &[
    "accounts",
    "api_tokens",
    "live_inputs",
    "live_input_deletions",
    "live_input_status",
    "live_input_outputs",
    "ingest_domains",
    "acme_challenges",
    "stream_signing_keys",
    "node_secrets",
    "webhooks",
    "webhook_events",
    "view_minutes",
    "view_days",
    "view_months",
    "cluster_nodes",
    "stream_origins",
    "stream_tree",
    "cluster_rtt",
    "cluster_meta",
];

/// Migrations on an empty SQLite and on an empty PostgreSQL make the same
/// tables, columns and indexes, and record every migration.
#[tokio::test]
async fn new_databases_have_the_same_schema_on_both_engines() {
    let db = Db::new(None).await;
    let store = db.open().await.unwrap();
    let lite = shape(store.pool()).await;
    for t in TABLES {
        assert!(lite.contains_key(&format!("table {t}")), "{t}: {lite:#?}");
    }
    assert_eq!(lite.len() - TABLES.len(), 9, "indexes: {lite:#?}");
    let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(applied(store.pool()).await, all);
    let st = status(store.pool()).await.unwrap();
    assert!(st.pending.is_empty() && st.unknown.is_empty() && !st.older);
    store.close().await;
    let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") else {
        return;
    };
    let db = Db::new(Some(&url)).await;
    let store = db.open().await.unwrap();
    let pg = shape(store.pool()).await;
    assert_eq!(lite, pg);
    assert_eq!(applied(store.pool()).await, all);
    store.close().await;
    db.drop().await;
}

/// Rows of every kind, as a node of the last release wrote them.
async fn release_rows(pool: &AnyPool) {
    for sql in [
        "INSERT INTO accounts VALUES ('acct', 'one', 1)",
        "INSERT INTO api_tokens VALUES ('hash1', 'acct', 0, 2, 'tok1', 'ci')",
        "INSERT INTO live_inputs VALUES ('in1', 'acct', 3, 4, '{\"name\":\"a\"}', 'creator', 1, \
         'sk', 'pk', 'sp', 'spp', '[]', '{\"mode\":\"automatic\"}', '{\"preferLowLatency\":true}')",
        "INSERT INTO live_input_outputs VALUES ('out1', 'in1', 'acct', 'rtmp://x/live', 'k', 1, 5)",
        "INSERT INTO ingest_domains VALUES ('push.example.test', 'acct', 'CERT', 'KEY', 6)",
        "INSERT INTO stream_signing_keys VALUES ('key1', 'acct', 7, 'PEM', 'n', 'e', 0)",
        "INSERT INTO webhooks VALUES ('acct', 'http://127.0.0.1:9/h', 'secret', 8)",
        "INSERT INTO webhook_events VALUES ('ev1', 1, 'acct', '{}', 9, 0, 9, '', 0)",
        // 2026-11-30, 2026-12-01 and 2026-12-02.
        "INSERT INTO view_days VALUES ('acct', 20787, 'in1', 'creator', 'rtmp', 1000)",
        "INSERT INTO view_days VALUES ('acct', 20788, 'in1', 'creator', 'rtmp', 20000)",
        "INSERT INTO view_days VALUES ('acct', 20789, 'in1', 'creator', 'rtmp', 300000)",
        "INSERT INTO view_minutes VALUES ('acct', 29934720, 'in1', 'creator', 'rtmp', 20000)",
    ] {
        pool.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// What [`release_rows`] wrote, read through the store.
async fn check_release_rows(s: &Store) {
    let inputs = s.list_inputs("acct").await.unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].recording, r#"{"mode":"automatic"}"#);
    assert_eq!(inputs[0].options, r#"{"preferLowLatency":true}"#);
    assert!(!s.token("hash1").await.unwrap().unwrap().admin);
    assert_eq!(s.list_tokens("acct").await.unwrap()[0].name, "ci");
    let d = s.domain("push.example.test").await.unwrap().unwrap();
    assert_eq!((d.status.as_str(), d.method.as_str()), ("active", "upload"));
    assert_eq!(d.cert_pem, "CERT");
    assert_eq!(s.webhook("acct").await.unwrap().unwrap().secret, "secret");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM live_input_outputs")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    let months: Vec<(i64, i64)> =
        sqlx::query_as("SELECT month, millis FROM view_months ORDER BY month")
            .fetch_all(s.pool())
            .await
            .unwrap();
    assert_eq!(
        months,
        vec![(2026 * 12 + 10, 1000), (2026 * 12 + 11, 320_000)]
    );
}

/// A database of the last release (the baseline's tables, rows, no
/// `_sqlx_migrations`) is adopted: every row kept, the later steps applied
/// (domains get their state, months are filled from the days), the same
/// schema as a new database; a second start changes nothing.
#[tokio::test]
async fn a_release_database_is_adopted_with_its_rows() {
    let fresh = {
        let db = Db::new(None).await;
        let s = db.open().await.unwrap();
        shape(s.pool()).await
    };
    for pg in backends() {
        let db = Db::new(pg.as_deref()).await;
        let raw = db.raw().await;
        raw.execute(sql(1)).await.unwrap();
        release_rows(&raw).await;
        let st = status(&raw).await.unwrap();
        assert!(st.older && st.pending == vec![1, 2, 3], "{st:?}");
        raw.close().await;
        let s = db.open().await.unwrap();
        assert_eq!(applied(s.pool()).await, vec![1, 2, 3]);
        check_release_rows(&s).await;
        assert_eq!(shape(s.pool()).await, fresh);
        s.close().await;
        let s = db.open().await.unwrap();
        check_release_rows(&s).await;
        s.close().await;
        db.drop().await;
    }
}

/// A database of a node older than the release (tokens without ids and
/// names, inputs without `recording` and `options`, tables that did not
/// exist yet) gets the missing columns and tables; its tokens get ids.
#[tokio::test]
async fn an_older_database_gets_its_missing_columns() {
    for pg in backends() {
        let db = Db::new(pg.as_deref()).await;
        let raw = db.raw().await;
        for sql in [
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL, \
             created BIGINT NOT NULL)",
            "CREATE TABLE api_tokens (hash TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
             admin BIGINT NOT NULL, created BIGINT NOT NULL)",
            "CREATE TABLE live_inputs (uid TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
             created BIGINT NOT NULL, modified BIGINT NOT NULL, meta TEXT NOT NULL, \
             default_creator TEXT NOT NULL, enabled BIGINT NOT NULL, \
             stream_key TEXT NOT NULL, playback_key TEXT NOT NULL, \
             srt_passphrase TEXT NOT NULL, srt_play_passphrase TEXT NOT NULL, \
             captions TEXT NOT NULL)",
            "INSERT INTO accounts VALUES ('acct', 'one', 1)",
            "INSERT INTO api_tokens VALUES \
             ('0123456789abcdef0123456789abcdef0123456789abcdef', 'acct', 0, 2)",
            "INSERT INTO live_inputs VALUES ('in1', 'acct', 3, 4, '{}', '', 1, \
             'sk', 'pk', 'sp', 'spp', '[]')",
        ] {
            raw.execute(sql).await.unwrap();
        }
        raw.close().await;
        let s = db.open().await.unwrap();
        assert_eq!(applied(s.pool()).await, vec![1, 2, 3]);
        let i = s.input("acct", "in1").await.unwrap().unwrap();
        assert_eq!((i.recording.as_str(), i.options.as_str()), ("{}", "{}"));
        assert_eq!(i.stream_key, "sk");
        let t = s.list_tokens("acct").await.unwrap();
        assert_eq!(t[0].id, "0123456789abcdef0123456789abcdef");
        // Tables it never had are there, empty.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        s.close().await;
        db.drop().await;
    }
}

/// A database of a build between the release and migrations (it already
/// has the domain columns and the monthly rollup, made at its start) is
/// adopted without redoing those steps, and keeps its rows.
#[tokio::test]
async fn a_database_between_releases_is_adopted() {
    for pg in backends() {
        let db = Db::new(pg.as_deref()).await;
        let raw = db.raw().await;
        raw.execute(sql(1)).await.unwrap();
        release_rows(&raw).await;
        raw.execute(sql(2)).await.unwrap();
        raw.execute(sql(3)).await.unwrap();
        raw.execute("UPDATE ingest_domains SET status = 'pending', method = 'acme', cert_pem = ''")
            .await
            .unwrap();
        raw.close().await;
        let s = db.open().await.unwrap();
        assert_eq!(applied(s.pool()).await, vec![1, 2, 3]);
        let d = s.domain("push.example.test").await.unwrap().unwrap();
        assert_eq!((d.status.as_str(), d.method.as_str()), ("pending", "acme"));
        let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(millis) AS BIGINT) FROM view_months")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(total, 321_000);
        s.close().await;
        db.drop().await;
    }
}

/// A database a newer node migrated (a migration this binary does not
/// know): the status says so and the store refuses to open it.
#[tokio::test]
async fn a_newer_database_is_refused() {
    for pg in backends() {
        let db = Db::new(pg.as_deref()).await;
        db.open().await.unwrap().close().await;
        let raw = db.raw().await;
        let st = status(&raw).await.unwrap();
        assert!(st.pending.is_empty() && st.unknown.is_empty() && !st.older);
        raw.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) SELECT 9999, 'later', success, checksum, 0 \
             FROM _sqlx_migrations WHERE version = 1",
        )
        .await
        .unwrap();
        assert_eq!(status(&raw).await.unwrap().unknown, vec![9999]);
        raw.close().await;
        let e = db.open().await.err().expect("a newer database opened");
        assert!(format!("{e:#}").contains("9999"), "{e:#}");
        db.drop().await;
    }
}

/// Nodes of a cluster starting at once against one PostgreSQL, on a new
/// database and on one of the release: every start succeeds, each
/// migration is applied once, no row is lost.
#[tokio::test]
async fn concurrent_starts_migrate_once() {
    let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") else {
        return;
    };
    for release in [false, true] {
        let db = Db::new(Some(&url)).await;
        if release {
            let raw = db.raw().await;
            raw.execute(sql(1)).await.unwrap();
            release_rows(&raw).await;
            raw.close().await;
        }
        let opens = (0..6).map(|_| db.open());
        let stores = futures_util::future::join_all(opens).await;
        for s in &stores {
            let s = s.as_ref().unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(applied(s.pool()).await, vec![1, 2, 3]);
        }
        if release {
            check_release_rows(stores[0].as_ref().unwrap()).await;
        }
        for s in stores {
            s.unwrap().close().await;
        }
        db.drop().await;
    }
}
