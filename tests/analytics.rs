//! Viewing analytics end to end: real publishers and viewers (RTMP, SRT,
//! HLS) against the real binary, then the GraphQL sums, grouping, order,
//! errors, account scoping, the CLI table, a kill -9, and PostgreSQL.
//!
//! Expected minutes come from what the viewers themselves received: ffmpeg
//! viewers write per-packet `framemd5` lines (media time = last video dts -
//! first), the HLS poller measures how long it kept its session alive.

mod common;
mod pg;

use common::{http, BIN};
use pg::Postgres;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

/// The flush interval the tests run with, in seconds.
const FLUSH: u64 = 2;

/// The kit's node with analytics flushed every [`FLUSH`] seconds and
/// per-stream metrics.
struct Node(common::Node);

impl std::ops::Deref for Node {
    type Target = common::Node;
    fn deref(&self) -> &common::Node {
        &self.0
    }
}

impl Node {
    fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node(
            common::Node::builder()
                .data_dir(data_dir)
                .args(&["--analytics-flush", &FLUSH.to_string()])
                .args(&["--metrics-per-stream", "uid"])
                .args(extra)
                .start(),
        )
    }

    fn api(&self) -> String {
        self.0.api()
    }
    fn account(&self) -> String {
        self.0.account().to_string()
    }
    fn token(&self) -> String {
        self.0.token().to_string()
    }

    /// SIGKILL: no chance to flush.
    fn kill9(&mut self) {
        self.0.kill();
    }

    /// SIGTERM; true if it exited 0 within 10 s.
    fn terminate(&mut self) -> bool {
        self.0.terminate() == Some(0)
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Proc {
    /// Wait for the exit, at most `limit`.
    fn wait(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg publishing 320x240 25 fps with audio for `seconds`.
fn publish(url: &str, seconds: u32, ts: bool) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "25", "-bf", "0", "-c:a", "aac", "-b:a", "32k"])
        .args(["-t", &seconds.to_string()]);
    if ts {
        cmd.args(["-bsf:v", "dump_extra=freq=keyframe", "-f", "mpegts"]);
    } else {
        cmd.args(["-f", "flv"]);
    }
    Proc(
        cmd.arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    )
}

/// An ffmpeg viewer writing framemd5 lines of the video for `seconds` of media.
fn view(url: &str, seconds: u32, out: &Path) -> Proc {
    Proc(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-i", url, "-map", "0:v", "-c", "copy"])
            .args(["-t", &seconds.to_string(), "-f", "framemd5"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg viewer"),
    )
}

/// Seconds of video media in a framemd5 file (last dts - first dts).
fn media_seconds(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tb = (1.0, 1000.0);
    let mut dts = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#tb 0: ") {
            let (n, d) = rest.trim().split_once('/').unwrap();
            tb = (n.parse().unwrap(), d.parse().unwrap());
        } else if !line.starts_with('#') {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() >= 2 {
                dts.push(f[1].parse::<i64>().unwrap());
            }
        }
    }
    match (dts.first(), dts.last()) {
        (Some(a), Some(b)) => (b - a) as f64 * tb.0 / tb.1,
        _ => 0.0,
    }
}

/// An HLS viewer of our own: the multivariant playlist once, then the media
/// playlist with its session every 500 ms and the newest part or segment.
/// Returns the seconds between the first and last media playlist fetch.
async fn hls_view(api: &str, uid: &str, seconds: f64) -> f64 {
    let c = http();
    let mv_url = reqwest::Url::parse(&format!("{api}/{uid}/manifest/video.m3u8")).unwrap();
    let mut media = None;
    for _ in 0..40 {
        let r = c.get(mv_url.clone()).send().await.unwrap();
        if r.status().is_success() {
            let text = r.text().await.unwrap();
            media = text
                .lines()
                .find(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| mv_url.join(l.trim()).unwrap());
            if media.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let media = media.expect("a media playlist in the multivariant playlist");
    assert!(media.query().unwrap_or("").contains("s="), "{media}");
    let mut first = None;
    let mut last = Instant::now();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let r = c.get(media.clone()).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        let text = r.text().await.unwrap();
        let newest = text
            .lines()
            .filter_map(|l| {
                if let Some(i) = l.find("URI=\"") {
                    l[i + 5..].split('"').next()
                } else if !l.starts_with('#') && !l.trim().is_empty() {
                    Some(l.trim())
                } else {
                    None
                }
            })
            .next_back()
            .map(str::to_string);
        if let Some(u) = newest {
            let r = c.get(media.join(&u).unwrap()).send().await.unwrap();
            assert!(r.status().is_success(), "{u}: {}", r.status());
            let _ = r.bytes().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last.duration_since(first.unwrap()).as_secs_f64()
}

async fn graphql(node: &Node, token: &str, query: &str, variables: Value) -> (StatusCode, Value) {
    let r = http()
        .post(format!("{}/client/v4/graphql", node.api()))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Groups of a successful answer.
fn groups(s: StatusCode, v: &Value) -> Vec<Value> {
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["errors"], Value::Null, "{v}");
    v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

const BY: &str =
    "query ($a: String!, $order: [OrderBy!]) { viewer { accounts(filter: {accountTag: $a}) {
  streamMinutesViewedAdaptiveGroups(limit: 100, orderBy: $order) {
    sum { minutesViewed } dimensions { DIMS } } } } }";

async fn by(node: &Node, dims: &str, order: Value) -> Vec<Value> {
    let q = BY.replace("DIMS", dims);
    let (s, v) = graphql(
        node,
        &node.token(),
        &q,
        json!({"a": node.account(), "order": order}),
    )
    .await;
    groups(s, &v)
}

async fn create_input(node: &Node, creator: &str) -> Value {
    let r = http()
        .post(format!(
            "{}/client/v4/accounts/{}/stream/live_inputs",
            node.api(),
            node.account()
        ))
        .bearer_auth(node.token())
        .json(&json!({"defaultCreator": creator}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["result"].clone()
}

async fn wait_live(node: &Node, uid: &str) {
    for _ in 0..100 {
        let v: Value = http()
            .get(format!("{}/{uid}/lifecycle", node.api()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["live"] == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{uid} never went live");
}

fn rtmp_url(input: &Value, which: &str) -> String {
    format!(
        "{}{}",
        input[which]["url"].as_str().unwrap(),
        input[which]["streamKey"].as_str().unwrap()
    )
}

fn srt_url(input: &Value, which: &str) -> String {
    let s = &input[which];
    format!(
        "{}?streamid={}&passphrase={}",
        s["url"].as_str().unwrap(),
        s["streamId"].as_str().unwrap(),
        s["passphrase"].as_str().unwrap()
    )
}

fn minutes(g: &Value) -> f64 {
    g["sum"]["minutesViewed"].as_f64().unwrap()
}

fn close(got_min: f64, want_s: f64, what: &str) {
    let want = want_s / 60.0;
    assert!(
        (got_min - want).abs() <= want * 0.05,
        "{what}: {got_min} minutes, expected {want} (±5%)"
    );
}

/// Wait for two flushes.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(FLUSH * 2 + 1)).await;
}

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
