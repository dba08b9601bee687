//! The schema, by numbered migrations: `migrations/NNNN_*.sql`, embedded in
//! the binary by `sqlx::migrate!`, applied versions recorded in
//! `_sqlx_migrations`. One set serves both engines, because the schema's
//! SQL is portable: TEXT and BIGINT columns, `IF NOT EXISTS`, `ALTER TABLE
//! ... ADD COLUMN` with a default, and the month of a day computed in
//! integer arithmetic that both engines evaluate alike (no date functions,
//! which differ); a test checks that both end with the same tables, columns
//! and indexes.
//!
//! * `0001_baseline`: the schema as the last release before migrations
//!   (5fa896c) created it, every statement `IF NOT EXISTS`.
//! * `0002_domain_proofs`: ownership proofs and ACME state of ingest
//!   domains, and `acme_challenges`.
//! * `0003_view_months`: the monthly analytics rollup, filled from the
//!   daily one in SQL.
//!
//! A database of a node from before migrations (tables, no
//! `_sqlx_migrations`) is adopted (`adopt`): the columns an even older
//! node lacked are added, the baseline is run on it (it creates what is
//! missing and keeps every row), and the later steps it already has (a
//! build between releases took them without migrations) are recorded as
//! applied, all in one transaction; the migrator runs the rest, each
//! migration in a transaction with its record.
//!
//! Nodes of a cluster starting at once against one PostgreSQL: the whole
//! of it (adoption and migrations) runs under sqlx's migration lock, a
//! session advisory lock on the database (`pg_advisory_lock`), on one
//! connection that is closed afterwards, so a node that fails halfway
//! releases the lock with its session. SQLite's lock is a no-op: one node
//! owns its file, and each migration is one transaction with its record.

use anyhow::Context as _;
use sqlx::migrate::{Migrate, Migration, Migrator};
use sqlx::{AnyConnection, Connection, Executor};

/// Every migration, in order.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Columns that nodes older than the baseline lacked, added to such a
/// database before the baseline runs on it (its `CREATE TABLE IF NOT
/// EXISTS` leaves an existing table alone).
const BEFORE_BASELINE: &[(&str, &str, &str)] = &[
    ("api_tokens", "id", "TEXT NOT NULL DEFAULT ''"),
    ("api_tokens", "name", "TEXT NOT NULL DEFAULT ''"),
    ("live_inputs", "recording", "TEXT NOT NULL DEFAULT '{}'"),
    ("live_inputs", "options", "TEXT NOT NULL DEFAULT '{}'"),
];

/// Columns of `0002_domain_proofs`: a database of a build between
/// releases may have some (added one by one at its start) and then gets
/// the rest.
const DOMAIN_PROOFS: &[(&str, &str, &str)] = &[
    ("ingest_domains", "status", "TEXT NOT NULL DEFAULT 'active'"),
    ("ingest_domains", "method", "TEXT NOT NULL DEFAULT 'upload'"),
    ("ingest_domains", "error", "TEXT NOT NULL DEFAULT ''"),
    ("ingest_domains", "verify_token", "TEXT NOT NULL DEFAULT ''"),
    ("ingest_domains", "verify_value", "TEXT NOT NULL DEFAULT ''"),
    ("ingest_domains", "expires", "BIGINT NOT NULL DEFAULT 0"),
    ("ingest_domains", "renewed", "BIGINT NOT NULL DEFAULT 0"),
    ("ingest_domains", "modified", "BIGINT NOT NULL DEFAULT 0"),
    (
        "ingest_domains",
        "next_attempt",
        "BIGINT NOT NULL DEFAULT 0",
    ),
    ("ingest_domains", "attempts", "BIGINT NOT NULL DEFAULT 0"),
    ("ingest_domains", "lease_holder", "TEXT NOT NULL DEFAULT ''"),
    ("ingest_domains", "lease_until", "BIGINT NOT NULL DEFAULT 0"),
];

/// Bring the database up to date: adopt a database of an older node, then
/// apply the migrations it lacks. Safe when several nodes do it at once.
pub async fn run(pool: &sqlx::AnyPool) -> anyhow::Result<()> {
    // A connection of its own, never returned to the pool: it holds a
    // session lock on PostgreSQL until it is closed.
    let mut conn = pool
        .acquire()
        .await
        .context("connecting to the database")?
        .detach();
    let done = migrate(&mut conn).await;
    if let Err(e) = conn.close().await {
        tracing::debug!("closing the migration connection: {e}");
    }
    done
}

async fn migrate(conn: &mut AnyConnection) -> anyhow::Result<()> {
    conn.lock().await.context("taking the migration lock")?;
    // One transaction: a node that dies while adopting leaves the database
    // as it found it (sqlx's own steps inside are savepoints).
    let mut tx = conn.begin().await?;
    adopt(&mut tx).await.context("adopting an older database")?;
    tx.commit().await?;
    let mut m = sqlx::migrate!();
    // Already locked, on this connection.
    m.set_locking(false);
    m.run(&mut *conn).await.context("migrating the database")?;
    conn.unlock()
        .await
        .context("releasing the migration lock")?;
    Ok(())
}

/// The migration of `version`.
fn migration(version: i64) -> anyhow::Result<&'static Migration> {
    MIGRATOR
        .iter()
        .find(|m| m.version == version)
        .with_context(|| format!("migration {version} is missing"))
}

/// Adopt a database made by a node from before migrations (see the module
/// documentation); nothing when the database is already migrated.
async fn adopt(conn: &mut AnyConnection) -> anyhow::Result<()> {
    if has_table(conn, "_sqlx_migrations").await? {
        return Ok(());
    }
    // (On a new database this is the same as the migrator's first step.)
    for table in ["accounts", "api_tokens", "live_inputs"] {
        if has_table(conn, table).await? {
            tracing::info!("database of a node from before migrations: adopting it");
            break;
        }
    }
    for (table, column, def) in BEFORE_BASELINE {
        if has_table(conn, table).await? {
            add_column(conn, table, column, def).await?;
        }
    }
    if has_table(conn, "api_tokens").await? {
        // Tokens from before token ids get one: the first 32 hex digits
        // of their hash, which only their holder could have known.
        conn.execute("UPDATE api_tokens SET id = substr(hash, 1, 32) WHERE id = ''")
            .await?;
    }
    conn.ensure_migrations_table().await?;
    conn.apply(migration(1)?).await?;
    // Steps already taken by a build between releases.
    if has_column(conn, "ingest_domains", "status").await? {
        for (table, column, def) in DOMAIN_PROOFS {
            add_column(conn, table, column, def).await?;
        }
        conn.execute(
            "CREATE TABLE IF NOT EXISTS acme_challenges (id TEXT PRIMARY KEY, \
             domain TEXT NOT NULL, value TEXT NOT NULL, created BIGINT NOT NULL)",
        )
        .await?;
        mark_applied(conn, 2).await?;
        // That build filled `view_months` in the transaction that made it.
        if has_table(conn, "view_months").await? {
            mark_applied(conn, 3).await?;
        }
    }
    Ok(())
}

/// Record migration `version` as applied (its checksum, so the migrator
/// accepts it) without running it: the database already has its effect.
async fn mark_applied(conn: &mut AnyConnection, version: i64) -> anyhow::Result<()> {
    let m = Migration {
        sql: "SELECT 1".into(),
        ..migration(version)?.clone()
    };
    conn.apply(&m).await?;
    tracing::info!(version, "migration found already made: recorded as applied");
    Ok(())
}

fn sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("sqlite")
}

/// True when `table` exists (in the current schema on PostgreSQL).
pub(super) async fn has_table(conn: &mut AnyConnection, table: &str) -> sqlx::Result<bool> {
    let sql = if sqlite(conn) {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
    } else {
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1"
    };
    let n: i64 = sqlx::query_scalar(sql).bind(table).fetch_one(conn).await?;
    Ok(n > 0)
}

async fn has_column(conn: &mut AnyConnection, table: &str, column: &str) -> sqlx::Result<bool> {
    let sql = if sqlite(conn) {
        "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2"
    } else {
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .bind(column)
        .fetch_one(conn)
        .await?;
    Ok(n > 0)
}

/// Add `column` to `table` unless it is already there. `table`, `column`
/// and `def` are constants of this module.
async fn add_column(
    conn: &mut AnyConnection,
    table: &str,
    column: &str,
    def: &str,
) -> anyhow::Result<()> {
    if !has_column(conn, table, column).await? {
        conn.execute(format!("ALTER TABLE {table} ADD COLUMN {column} {def}").as_str())
            .await
            .with_context(|| format!("adding {table}.{column}"))?;
        tracing::info!(table, column, "database upgraded: column added");
    }
    Ok(())
}

/// The SQL of migration `version` (benches and tests replay a step).
#[cfg(test)]
pub(crate) fn sql(version: i64) -> &'static str {
    migration(version).map(|m| &*m.sql).unwrap_or_default()
}

/// Where a database stands against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Migrations of this binary not applied yet (all of them on a new
    /// database or one from before migrations).
    pub pending: Vec<i64>,
    /// Applied migrations this binary does not know: a newer node migrated
    /// the database, and this one refuses to start on it.
    pub unknown: Vec<i64>,
    /// Tables of a node from before migrations, adopted at the next start.
    pub older: bool,
}

/// The status of the database behind `pool`, read only.
pub async fn status(pool: &sqlx::AnyPool) -> anyhow::Result<Status> {
    let mut conn = pool.acquire().await?;
    let applied: Vec<i64> = if has_table(&mut conn, "_sqlx_migrations").await? {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    let mut older = false;
    if applied.is_empty() {
        for table in ["accounts", "api_tokens", "live_inputs"] {
            older |= has_table(&mut conn, table).await?;
        }
    }
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    Ok(Status {
        pending: known
            .iter()
            .copied()
            .filter(|v| !applied.contains(v))
            .collect(),
        unknown: applied.into_iter().filter(|v| !known.contains(v)).collect(),
        older,
    })
}

#[cfg(test)]
mod tests;
