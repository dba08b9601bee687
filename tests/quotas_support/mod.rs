//! Quota tests' parts: nodes, accounts, the inputs API, seeded views and GraphQL floods, latency
//! percentiles.

#![allow(dead_code)]

use crate::reliab::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    Node::start(&dir.join("data"), &dir.join("node.log"), extra)
}

/// A new account made with the admin token: (id, API token).
pub async fn account(node: &Node, name: &str) -> (String, String) {
    let v: Value = http()
        .post(format!("{}/client/v4/accounts", node.api()))
        .bearer_auth(node.creds["adminToken"].as_str().expect("adminToken"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("create account")
        .json()
        .await
        .expect("JSON");
    assert_eq!(v["success"], json!(true), "{v}");
    (
        v["result"]["id"].as_str().expect("id").into(),
        v["result"]["apiToken"].as_str().expect("apiToken").into(),
    )
}

pub fn inputs_url(node: &Node, account: &str, rest: &str) -> String {
    format!(
        "{}/client/v4/accounts/{account}/stream/live_inputs{rest}",
        node.api()
    )
}

pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.expect("request");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn create(node: &Node, account: &str, token: &str, body: Value) -> (StatusCode, Value) {
    send(
        http()
            .post(inputs_url(node, account, ""))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

pub fn message(v: &Value) -> String {
    v["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {v}"))
        .to_string()
}

/// Seed `rows` minutes of viewing for `account` straight into the node's
/// SQLite file, so that analytics queries have real work to do.
pub async fn seed_views(node: &Node, account: &str, rows: u32) {
    let url = format!("sqlite://{}?mode=rw", node.data.join("banyan.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("open the node's database");
    sqlx::query("PRAGMA busy_timeout = 5000")
        .execute(&pool)
        .await
        .expect("busy timeout");
    sqlx::query(
        "INSERT INTO view_minutes (account_id, minute, uid, creator, protocol, millis) \
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $2) \
         SELECT $1, 29000000 + i / 64, 'u' || (i % 64), 'c' || (i % 7), 'hls', 1000 + i % 997 \
         FROM n",
    )
    .bind(account)
    .bind(i64::from(rows))
    .execute(&pool)
    .await
    .expect("seed view_minutes");
    pool.close().await;
}

pub fn analytics_query(account: &str, fields: usize, limit: u32) -> Value {
    let body: String = (0..fields)
        .map(|i| {
            format!(
                "f{i}: streamMinutesViewedAdaptiveGroups(limit: {limit}, \
                 orderBy: [sum_minutesViewed_DESC], \
                 filter: {{datetime_geq: \"2020-01-01T00:00:00Z\"}}) \
                 {{ sum {{ minutesViewed }} dimensions {{ uid datetime }} }} "
            )
        })
        .collect();
    json!({
        "query": format!(
            "{{ viewer {{ accounts(filter: {{accountTag: \"{account}\"}}) {{ {body} }} }} }}"
        )
    })
}

/// `n` aliases of the analytics field, written as tightly as GraphQL allows.
pub fn alias_flood(account: &str, n: usize) -> Value {
    let body: String = (0..n)
        .map(|i| {
            format!("a{i}:streamMinutesViewedAdaptiveGroups(limit:1){{sum{{minutesViewed}}}} ")
        })
        .collect();
    json!({
        "query": format!("{{viewer{{accounts(filter:{{accountTag:\"{account}\"}}){{{body}}}}}}}")
    })
}

pub fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

/// `n` GET live_inputs of `account`, one after another: their latencies.
pub async fn latencies(node: &Node, account: &str, token: &str, n: usize) -> Vec<Duration> {
    let client = http();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(inputs_url(node, account, ""))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET live_inputs");
        assert_eq!(r.status(), StatusCode::OK);
        let _ = r.bytes().await;
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

/// Wait (bounded) until `GET url` answers `want`.
pub async fn wait_code(url: &str, want: StatusCode, secs: u64, what: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = http().get(url).send().await.map(|r| r.status()).ok();
        if s == Some(want) {
            return;
        }
        assert!(Instant::now() < until, "{what}: {url} answered {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
