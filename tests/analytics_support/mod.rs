//! Analytics tests' parts: a node with a short flush interval, publishers and viewers over RTMP,
//! SRT and HLS, GraphQL queries and the minute arithmetic.

#![allow(dead_code)]

use crate::common;
use crate::common::http;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The flush interval the tests run with, in seconds.
pub const FLUSH: u64 = 2;

/// The kit's node with analytics flushed every [`FLUSH`] seconds and
/// per-stream metrics.
pub struct Node(pub common::Node);

impl std::ops::Deref for Node {
    type Target = common::Node;
    fn deref(&self) -> &common::Node {
        &self.0
    }
}

impl Node {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node(
            common::Node::builder()
                .data_dir(data_dir)
                .args(&["--analytics-flush", &FLUSH.to_string()])
                .args(&["--metrics-per-stream", "uid"])
                .args(extra)
                .start(),
        )
    }

    pub fn api(&self) -> String {
        self.0.api()
    }
    pub fn account(&self) -> String {
        self.0.account().to_string()
    }
    pub fn token(&self) -> String {
        self.0.token().to_string()
    }

    /// SIGKILL: no chance to flush.
    pub fn kill9(&mut self) {
        self.0.kill();
    }

    /// SIGTERM; true if it exited 0 within 10 s.
    pub fn terminate(&mut self) -> bool {
        self.0.terminate() == Some(0)
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    /// Wait for the exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> bool {
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
pub fn publish(url: &str, seconds: u32, ts: bool) -> Proc {
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
pub fn view(url: &str, seconds: u32, out: &Path) -> Proc {
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
pub fn media_seconds(path: &Path) -> f64 {
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
pub async fn hls_view(api: &str, uid: &str, seconds: f64) -> f64 {
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

pub async fn graphql(
    node: &Node,
    token: &str,
    query: &str,
    variables: Value,
) -> (StatusCode, Value) {
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
pub fn groups(s: StatusCode, v: &Value) -> Vec<Value> {
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["errors"], Value::Null, "{v}");
    v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

pub const BY: &str =
    "query ($a: String!, $order: [OrderBy!]) { viewer { accounts(filter: {accountTag: $a}) {
  streamMinutesViewedAdaptiveGroups(limit: 100, orderBy: $order) {
    sum { minutesViewed } dimensions { DIMS } } } } }";

pub async fn by(node: &Node, dims: &str, order: Value) -> Vec<Value> {
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

pub async fn create_input(node: &Node, creator: &str) -> Value {
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

pub async fn wait_live(node: &Node, uid: &str) {
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

pub fn rtmp_url(input: &Value, which: &str) -> String {
    format!(
        "{}{}",
        input[which]["url"].as_str().unwrap(),
        input[which]["streamKey"].as_str().unwrap()
    )
}

pub fn srt_url(input: &Value, which: &str) -> String {
    let s = &input[which];
    format!(
        "{}?streamid={}&passphrase={}",
        s["url"].as_str().unwrap(),
        s["streamId"].as_str().unwrap(),
        s["passphrase"].as_str().unwrap()
    )
}

pub fn minutes(g: &Value) -> f64 {
    g["sum"]["minutesViewed"].as_f64().unwrap()
}

pub fn close(got_min: f64, want_s: f64, what: &str) {
    let want = want_s / 60.0;
    assert!(
        (got_min - want).abs() <= want * 0.05,
        "{what}: {got_min} minutes, expected {want} (±5%)"
    );
}

/// Wait for two flushes.
pub async fn settle() {
    tokio::time::sleep(Duration::from_secs(FLUSH * 2 + 1)).await;
}
