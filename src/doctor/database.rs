//! The doctor's database check: whether the schema is migrated, and then
//! the custom domains' ACME state (`domains.rs`).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;

use super::{domains, Report};
use crate::config::Settings;
use crate::store::migrate;

/// How long connecting to the database may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the database (the SQLite file of the data dir, or
/// `database_url`) has every migration of this binary. Read only: a
/// missing SQLite file is not created.
pub(super) async fn database(r: &mut Report, s: &Settings) {
    let url = match &s.general.database_url {
        Some(u) => u.clone(),
        None => {
            let path = s.general.data_dir.join("banyan.db");
            if !path.exists() {
                r.warn(
                    format!("database {}: none yet", path.display()),
                    "start the node once with this data dir (it makes it)",
                );
                return;
            }
            // `rw`, not `rwc`: never creates the file.
            format!("sqlite://{}?mode=rw", path.display())
        }
    };
    sqlx::any::install_default_drivers();
    let connect = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(TIMEOUT)
        .connect(&url);
    let pool = match tokio::time::timeout(TIMEOUT, connect).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            r.warn(
                format!("database: cannot connect from here ({e})"),
                "check database_url and the database server (PostgreSQL: pg_isready)",
            );
            return;
        }
        Err(_) => {
            r.warn(
                "database: no connection within 5 s",
                "check database_url and the database server (PostgreSQL: pg_isready)",
            );
            return;
        }
    };
    let status = tokio::time::timeout(TIMEOUT, migrate::status(&pool))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|s| s);
    let migrated =
        matches!(&status, Ok(st) if st.pending.is_empty() && st.unknown.is_empty() && !st.older);
    report(r, status);
    if migrated {
        let own = if s.acme.acme {
            s.general.public_host.as_deref()
        } else {
            None
        };
        match tokio::time::timeout(TIMEOUT, domains::read(&pool)).await {
            Ok(Ok(rows)) => domains::report(r, &rows, own, now_micros()),
            Ok(Err(e)) => r.warn(
                format!("custom domains: cannot read them ({e})"),
                "check the database server",
            ),
            Err(_) => r.warn(
                "custom domains: no answer within 5 s",
                "check the database server",
            ),
        }
    }
    pool.close().await;
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn versions(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

fn report(r: &mut Report, status: anyhow::Result<migrate::Status>) {
    let restart = "restart the node with this binary: it migrates the database at start \
                   (nodes of a cluster take turns)";
    match status {
        Err(e) => r.warn(
            format!("database: cannot read its migrations ({e:#})"),
            "check database_url and the database server",
        ),
        Ok(st) if !st.unknown.is_empty() => r.fail(
            format!(
                "database migrated by a newer node (migrations {} unknown to this binary); \
                 this node refuses to start on it",
                versions(&st.unknown)
            ),
            "run the newer banyan binary",
        ),
        Ok(st) if st.older => r.warn(
            format!(
                "database made by a node from before schema migrations ({} pending); it is \
                 adopted with every row at the next start",
                versions(&st.pending)
            ),
            restart,
        ),
        Ok(st) if st.pending.is_empty() => r.ok(format!(
            "database schema up to date ({} migrations applied)",
            migrate::MIGRATOR.iter().count()
        )),
        Ok(st) => r.warn(
            format!("database: migrations {} pending", versions(&st.pending)),
            restart,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_findings() {
        let st = |pending: Vec<i64>, unknown: Vec<i64>, older| migrate::Status {
            pending,
            unknown,
            older,
        };
        let mut r = Report::default();
        report(&mut r, Ok(st(vec![], vec![], false)));
        report(&mut r, Ok(st(vec![1, 2, 3], vec![], true)));
        report(&mut r, Ok(st(vec![3], vec![], false)));
        report(&mut r, Ok(st(vec![], vec![9], false)));
        let out = r.render(false);
        assert!(out.contains("ok    database schema up to date"), "{out}");
        assert!(
            out.contains(
                "WARN  database made by a node from before schema migrations (1, 2, 3 pending)"
            ),
            "{out}"
        );
        assert!(
            out.contains("WARN  database: migrations 3 pending"),
            "{out}"
        );
        assert!(
            out.contains("FAIL  database migrated by a newer node (migrations 9"),
            "{out}"
        );
        assert!(out.ends_with("1 problem, 2 warnings\n"), "{out}");
    }
}
