//! Viewing analytics end to end: real publishers and viewers (RTMP, SRT,
//! HLS) against the real binary, then the GraphQL sums, grouping, order,
//! errors, account scoping, the CLI table, a kill -9, and PostgreSQL.
//!
//! Expected minutes come from what the viewers themselves received: ffmpeg
//! viewers write per-packet `framemd5` lines (media time = last video dts -
//! first), the HLS poller measures how long it kept its session alive.

mod analytics_support;
mod common;
mod pg;

use common::{http, BIN};
use pg::Postgres;
use std::process::Command;
use std::time::Duration;

use analytics_support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_per_creator_over_rtmp_srt_and_hls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut node = Node::start(&dir, &[]);
    let a = create_input(&node, "creator-a").await;
    let b = create_input(&node, "creator-b").await;
    let c = create_input(&node, "creator-c").await;
    let uid = |i: &Value| i["uid"].as_str().unwrap().to_string();
    let (ua, ub, uc) = (uid(&a), uid(&b), uid(&c));
    let _pa = publish(&rtmp_url(&a, "rtmp"), 40, false);
    let _pb = publish(&rtmp_url(&b, "rtmp"), 40, false);
    let _pc = publish(&srt_url(&c, "srt"), 40, true);
    for u in [&ua, &ub, &uc] {
        wait_live(&node, u).await;
    }

    // a: RTMP 16 s; b: HLS 24 s; c: SRT 8 s.
    let md5a = tmp.path().join("a.md5");
    let md5c = tmp.path().join("c.md5");
    let mut va = view(&rtmp_url(&a, "rtmpPlayback"), 16, &md5a);
    let mut vc = view(&srt_url(&c, "srtPlayback"), 8, &md5c);
    let hls_secs = hls_view(&node.api(), &ub, 24.0).await;
    assert!(
        va.wait(Duration::from_secs(15)),
        "RTMP viewer did not finish"
    );
    assert!(
        vc.wait(Duration::from_secs(15)),
        "SRT viewer did not finish"
    );
    let (sa, sc) = (media_seconds(&md5a), media_seconds(&md5c));
    assert!(sa > 14.0 && sc > 6.0, "viewers got {sa} s and {sc} s");
    settle().await;

    // Live metrics: ingest rate per stream, flushes.
    let text = http()
        .get(format!(
            "http://{}/metrics",
            node.ready["metrics"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = |name: &str, uid: &str| -> f64 {
        let prefix = format!("{name}{{stream=\"{uid}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} not in /metrics"))
            .trim()
            .parse()
            .unwrap()
    };
    for u in [&ua, &ub, &uc] {
        let fps = gauge("banyan_ingest_fps", u);
        assert!((20.0..=30.0).contains(&fps), "{u}: {fps} fps");
        assert!(gauge("banyan_ingest_bitrate_bps", u) > 10_000.0);
    }
    assert!(
        text.contains("banyan_analytics_flushes_total{result=\"ok\"}"),
        "{text}"
    );

    // Per creator, most watched first.
    let g = by(&node, "creator", json!(["sum_minutesViewed_DESC"])).await;
    let names: Vec<&str> = g
        .iter()
        .map(|x| x["dimensions"]["creator"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["creator-b", "creator-a", "creator-c"], "{g:?}");
    close(minutes(&g[0]), hls_secs, "creator-b over HLS");
    close(minutes(&g[1]), sa, "creator-a over RTMP");
    close(minutes(&g[2]), sc, "creator-c over SRT");
    assert_eq!(
        g[0]["dimensions"].as_object().unwrap().len(),
        1,
        "only the selected dimension: {g:?}"
    );

    // Per creator and protocol, by creator descending.
    let g = by(&node, "creator protocol uid", json!(["creator_DESC"])).await;
    let got: Vec<(String, String, String)> = g
        .iter()
        .map(|x| {
            let d = &x["dimensions"];
            (
                d["creator"].as_str().unwrap().into(),
                d["protocol"].as_str().unwrap().into(),
                d["uid"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("creator-c".into(), "srt".into(), uc.clone()),
            ("creator-b".into(), "hls".into(), ub.clone()),
            ("creator-a".into(), "rtmp".into(), ua.clone()),
        ]
    );

    // By minute: the parts add up to the whole; dates are today (UTC).
    let g = by(
        &node,
        "datetime creator",
        json!(["datetime_ASC", "creator_ASC"]),
    )
    .await;
    let total: f64 = g.iter().map(minutes).sum();
    close(total, hls_secs + sa + sc, "sum over minutes");
    let times: Vec<&str> = g
        .iter()
        .map(|x| x["dimensions"]["datetime"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    assert!(times.iter().all(|t| t.ends_with(":00Z")), "{times:?}");
    let today = {
        let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // Filters: a creator, a day, a uid; limit.
    let q = "query ($a: String!, $d: String!, $u: String!) { viewer { accounts(filter: {accountTag: $a}) {
      one: streamMinutesViewedAdaptiveGroups(limit: 5, filter: {creator: \"creator-a\", date_geq: $d, date_leq: $d}) {
        sum { minutesViewed } dimensions { date } }
      two: streamMinutesViewedAdaptiveGroups(limit: 5, filter: {uid: $u, date_lt: $d}) {
        sum { minutesViewed } }
      top: streamMinutesViewedAdaptiveGroups(limit: 1, orderBy: [sum_minutesViewed_ASC]) {
        sum { minutesViewed } dimensions { creator } } } } }";
    let (s, v) = graphql(
        &node,
        &node.token(),
        q,
        json!({"a": node.account(), "d": today, "u": uc}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["errors"], Value::Null, "{v}");
    let acc = &v["data"]["viewer"]["accounts"][0];
    assert_eq!(acc["one"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(acc["one"][0]["dimensions"]["date"], json!(today));
    close(minutes(&acc["one"][0]), sa, "creator-a today");
    assert_eq!(acc["two"], json!([]), "nothing before today");
    assert_eq!(acc["top"].as_array().unwrap().len(), 1);
    assert_eq!(acc["top"][0]["dimensions"]["creator"], json!("creator-c"));

    // The CLI table, most watched first.
    let out = Command::new(BIN)
        .args(["analytics", "creators", "--data-dir"])
        .arg(&dir)
        .args(["--since", &today, "--until", &today, "--limit", "10"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{table} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pos = |n: &str| {
        table
            .find(n)
            .unwrap_or_else(|| panic!("{n} not in {table}"))
    };
    assert!(
        pos("creator-b") < pos("creator-a") && pos("creator-a") < pos("creator-c"),
        "{table}"
    );
    assert!(
        table.contains("MINUTES") && table.contains("TOTAL"),
        "{table}"
    );

    // Graceful shutdown flushes; the totals stay after a restart.
    let before = by(&node, "creator", json!(["creator_ASC"])).await;
    assert!(node.terminate(), "SIGTERM exits 0");
    let node = Node::start(&dir, &[]);
    let after = by(&node, "creator", json!(["creator_ASC"])).await;
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(x["dimensions"], y["dimensions"]);
        assert!(minutes(y) >= minutes(x) - 1e-9, "{before:?} {after:?}");
    }
}

#[tokio::test]
async fn invalid_queries_and_other_accounts_get_errors_not_data() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &[]);
    let tok = node.token();
    let acct = node.account();
    let ok_query = "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
        streamMinutesViewedAdaptiveGroups(limit: 10) { sum { minutesViewed } dimensions { creator } } } } }";
    let (s, v) = graphql(&node, &tok, ok_query, json!({"a": acct})).await;
    assert_eq!(groups(s, &v), Vec::<Value>::new());

    let bad = [
        ("query { viewer { ", "syntax"),
        ("query { viewer { nope } }", "unknown field"),
        (
            "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) { streamMinutesViewedAdaptiveGroups(limit: 0) { sum { minutesViewed } } } } }",
            "limit 0",
        ),
        (
            "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) { streamMinutesViewedAdaptiveGroups(limit: 100000) { sum { minutesViewed } } } } }",
            "limit too big",
        ),
        (
            "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) { streamMinutesViewedAdaptiveGroups(limit: 5, filter: {date_geq: \"last week\"}) { sum { minutesViewed } } } } }",
            "bad date",
        ),
        (
            "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) { streamMinutesViewedAdaptiveGroups(limit: 5, orderBy: [uid_ASC]) { sum { minutesViewed } dimensions { creator } } } } }",
            "order on an unselected dimension",
        ),
        (
            "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) { streamMinutesViewedAdaptiveGroups(limit: 5, orderBy: [minutes_DESC]) { sum { minutesViewed } } } } }",
            "unknown order",
        ),
        (
            "query { viewer { accounts(filter: {accountTag: 5}) { streamMinutesViewedAdaptiveGroups(limit: 5) { sum { minutesViewed } } } } }",
            "wrong type",
        ),
    ];
    for (q, what) in bad {
        let (s, v) = graphql(&node, &tok, q, json!({"a": acct})).await;
        assert!(
            s == StatusCode::OK || s == StatusCode::BAD_REQUEST,
            "{what}: {s} {v}"
        );
        assert!(
            v["errors"].as_array().is_some_and(|e| !e.is_empty()
                && e.iter().all(|x| x["message"].as_str().is_some())),
            "{what}: {v}"
        );
        assert_eq!(
            v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"],
            Value::Null,
            "{what}: {v}"
        );
    }
    // Not JSON, no token, a wrong token.
    let r = http()
        .post(format!("{}/client/v4/graphql", node.api()))
        .bearer_auth(&tok)
        .body("{{{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http()
        .post(format!("{}/client/v4/graphql", node.api()))
        .json(&json!({"query": ok_query, "variables": {"a": acct}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (s, v) = graphql(&node, "not-a-token", ok_query, json!({"a": acct})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["data"], Value::Null);

    // A second account: its token cannot read the first account's data,
    // and the first cannot read the second's.
    let r: Value = http()
        .post(format!("{}/client/v4/accounts", node.api()))
        .bearer_auth(node.creds["adminToken"].as_str().unwrap())
        .json(&json!({"name": "other"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = r["result"]["id"].as_str().unwrap().to_string();
    let other_tok = r["result"]["apiToken"].as_str().unwrap().to_string();
    for (t, a) in [(&other_tok, &acct), (&tok, &other)] {
        let (s, v) = graphql(&node, t, ok_query, json!({"a": a})).await;
        assert_ne!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
        assert_eq!(v["data"]["viewer"]["accounts"], Value::Null, "{v}");
    }
    let (s, v) = graphql(&node, &other_tok, ok_query, json!({"a": other})).await;
    assert_eq!(groups(s, &v), Vec::<Value>::new());
}

/// A node killed with SIGKILL while a viewer watches keeps what it flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_one_flush_interval_and_corrupts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut node = Node::start(&dir, &[]);
    let a = create_input(&node, "crash-creator").await;
    let ua = a["uid"].as_str().unwrap().to_string();
    let _p = publish(&rtmp_url(&a, "rtmp"), 30, false);
    wait_live(&node, &ua).await;
    let md5 = tmp.path().join("v.md5");
    let _v = view(&rtmp_url(&a, "rtmpPlayback"), 30, &md5);
    // Watch for about 9 s, then kill -9 in the middle of a flush interval.
    tokio::time::sleep(Duration::from_millis(9_000 + 700)).await;
    node.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = media_seconds(&md5);
    assert!(received > 5.0, "viewer got {received} s");

    let ok = Command::new("sqlite3")
        .arg(dir.join("banyan.db"))
        .arg("PRAGMA integrity_check;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");

    let node = Node::start(&dir, &[]);
    let g = by(&node, "creator", json!(["sum_minutesViewed_DESC"])).await;
    assert_eq!(g.len(), 1, "{g:?}");
    let stored = minutes(&g[0]) * 60.0;
    // Everything up to the last flush is there; at most one interval (plus
    // the time the last flush takes) is lost; nothing is invented.
    assert!(
        stored >= received - FLUSH as f64 - 1.0 && stored <= received + 1.0,
        "stored {stored} s, viewer received {received} s"
    );
    // The node keeps recording after the restart (the database is usable).
    let mut node = node;
    assert!(node.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_analytics_on_postgresql() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = pg.url();
    let mut node = Node::start(&dir, &["--database-url", &url]);
    let a = create_input(&node, "pg-creator").await;
    let ua = a["uid"].as_str().unwrap().to_string();
    let _p = publish(&rtmp_url(&a, "rtmp"), 20, false);
    wait_live(&node, &ua).await;
    let md5 = tmp.path().join("v.md5");
    let mut v = view(&rtmp_url(&a, "rtmpPlayback"), 8, &md5);
    assert!(v.wait(Duration::from_secs(20)));
    let received = media_seconds(&md5);
    assert!(node.terminate(), "SIGTERM flushes and exits 0");
    let node = Node::start(&dir, &["--database-url", &url]);
    let g = by(
        &node,
        "creator uid protocol date",
        json!(["sum_minutesViewed_DESC"]),
    )
    .await;
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["dimensions"]["uid"], json!(ua));
    assert_eq!(g[0]["dimensions"]["protocol"], json!("rtmp"));
    close(minutes(&g[0]), received, "PostgreSQL");
    let g = by(&node, "datetime", json!(["datetime_DESC"])).await;
    close(
        g.iter().map(minutes).sum(),
        received,
        "PostgreSQL by minute",
    );
}
