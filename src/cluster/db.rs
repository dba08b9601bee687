//! The cluster's shared state in the store (PostgreSQL in a cluster; the SQL
//! is portable like the rest of the store's).
//!
//! * `cluster_nodes`: one row per node, its addresses and its last
//!   heartbeat; a node whose heartbeat is older than the core's `dead_after`
//!   counts as dead.
//! * `stream_origins`: the node a stream's broadcaster pushes to, with a
//!   lease renewed by that node; `live` is 0 while the broadcaster is away
//!   (the hub's reconnect window), so another node may take the origin.
//! * `stream_tree`: `(uid, child, parent)` edges, written by each child
//!   while it pulls; stale edges are swept.
//! * `cluster_rtt`: link round-trip times measured by each node to each
//!   peer it holds a connection to.
//! * `cluster_meta`: small cluster-wide facts (the default account).

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::{AnyPool, Row};

use crate::store::now_micros;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A node as the table knows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub name: String,
    pub region: String,
    pub link_addr: SocketAddr,
    pub http_addr: String,
}

pub async fn heartbeat(
    pool: &AnyPool,
    name: &str,
    region: &str,
    link: SocketAddr,
    http: SocketAddr,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cluster_nodes (name, region, link_addr, http_addr, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET region = excluded.region,
           link_addr = excluded.link_addr, http_addr = excluded.http_addr,
           heartbeat_at = excluded.heartbeat_at",
    )
    .bind(name)
    .bind(region)
    .bind(link.to_string())
    .bind(http.to_string())
    .bind(now_micros())
    .execute(pool)
    .await?;
    Ok(())
}

/// Nodes with a heartbeat within `alive`.
pub async fn live_nodes(pool: &AnyPool, alive: Duration) -> sqlx::Result<Vec<NodeRow>> {
    let rows = sqlx::query(
        "SELECT name, region, link_addr, http_addr FROM cluster_nodes
         WHERE heartbeat_at > $1",
    )
    .bind(now_micros() - micros(alive))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let addr: String = r.try_get("link_addr")?;
        let Ok(link_addr) = addr.parse() else {
            continue;
        };
        out.push(NodeRow {
            name: r.try_get("name")?,
            region: r.try_get("region")?,
            link_addr,
            http_addr: r.try_get("http_addr")?,
        });
    }
    Ok(out)
}

/// A node that leaves says so at once (its peers need not wait for the
/// heartbeat to expire).
pub async fn remove_node(pool: &AnyPool, name: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM cluster_nodes WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM stream_origins WHERE node = $1")
        .bind(name)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM stream_tree WHERE child = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Take or renew the origin lease of `uid`. A live broadcaster takes the
/// lease from a node whose broadcaster is away or whose lease expired; it
/// never takes it from another live origin. True when `node` holds it.
pub async fn take_origin(
    pool: &AnyPool,
    uid: &str,
    node: &str,
    live: bool,
    lease: Duration,
) -> sqlx::Result<bool> {
    let now = now_micros();
    let take_from_away = if live { 1 } else { 0 };
    sqlx::query(
        "INSERT INTO stream_origins (uid, node, live, lease_until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (uid) DO UPDATE SET node = excluded.node, live = excluded.live,
           lease_until = excluded.lease_until
         WHERE stream_origins.node = excluded.node OR stream_origins.lease_until < $5
           OR (stream_origins.live = 0 AND $6 = 1)",
    )
    .bind(uid)
    .bind(node)
    .bind(i64::from(live))
    .bind(now + micros(lease))
    .bind(now)
    .bind(take_from_away as i64)
    .execute(pool)
    .await?;
    let holder: Option<String> = sqlx::query("SELECT node FROM stream_origins WHERE uid = $1")
        .bind(uid)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get("node"))
        .transpose()?;
    Ok(holder.as_deref() == Some(node))
}

pub async fn release_origin(pool: &AnyPool, uid: &str, node: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM stream_origins WHERE uid = $1 AND node = $2")
        .bind(uid)
        .bind(node)
        .execute(pool)
        .await?;
    Ok(())
}

/// Unexpired origin leases: `(uid, node, live)`.
pub async fn origins(pool: &AnyPool) -> sqlx::Result<Vec<(String, String, bool)>> {
    let rows = sqlx::query("SELECT uid, node, live FROM stream_origins WHERE lease_until > $1")
        .bind(now_micros())
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("uid")?,
                r.try_get("node")?,
                r.try_get::<i64, _>("live")? != 0,
            ))
        })
        .collect()
}

pub async fn set_edge(pool: &AnyPool, uid: &str, child: &str, parent: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO stream_tree (uid, child, parent, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (uid, child) DO UPDATE SET parent = excluded.parent,
           updated_at = excluded.updated_at",
    )
    .bind(uid)
    .bind(child)
    .bind(parent)
    .bind(now_micros())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn remove_edge(pool: &AnyPool, uid: &str, child: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM stream_tree WHERE uid = $1 AND child = $2")
        .bind(uid)
        .bind(child)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every edge refreshed within `fresh`: `(uid, child, parent)`. With
/// `sweep`, older ones are deleted.
pub async fn edges(
    pool: &AnyPool,
    fresh: Duration,
    sweep: bool,
) -> sqlx::Result<Vec<(String, String, String)>> {
    let cutoff = now_micros() - micros(fresh);
    if sweep {
        sqlx::query("DELETE FROM stream_tree WHERE updated_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
    }
    let rows = sqlx::query("SELECT uid, child, parent FROM stream_tree WHERE updated_at >= $1")
        .bind(cutoff)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("uid")?, r.try_get("child")?, r.try_get("parent")?)))
        .collect()
}

pub async fn set_rtt(pool: &AnyPool, a: &str, b: &str, rtt: Duration) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cluster_rtt (a, b, rtt_us, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (a, b) DO UPDATE SET rtt_us = excluded.rtt_us,
           updated_at = excluded.updated_at",
    )
    .bind(a)
    .bind(b)
    .bind(micros(rtt))
    .bind(now_micros())
    .execute(pool)
    .await?;
    Ok(())
}

/// RTTs measured within `fresh`: `(a, b, rtt)`.
pub async fn rtts(
    pool: &AnyPool,
    fresh: Duration,
) -> sqlx::Result<Vec<(String, String, Duration)>> {
    let rows = sqlx::query("SELECT a, b, rtt_us FROM cluster_rtt WHERE updated_at > $1")
        .bind(now_micros() - micros(fresh))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let us: i64 = r.try_get("rtt_us")?;
            Ok((
                r.try_get("a")?,
                r.try_get("b")?,
                Duration::from_micros(us.max(0) as u64),
            ))
        })
        .collect()
}

/// Claim `key` with `value` unless someone did first; the value that won.
pub async fn claim_meta(pool: &AnyPool, key: &str, value: &str) -> sqlx::Result<String> {
    sqlx::query(
        "INSERT INTO cluster_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await?;
    sqlx::query("SELECT value FROM cluster_meta WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await?
        .try_get("value")
}
