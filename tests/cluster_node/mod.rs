//! A cluster node process for the end-to-end cluster tests: started on
//! port 0 with a shared PostgreSQL and cluster CA, killed (-9) on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_banyan");

/// Kills the child on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster node.
pub struct Node {
    pub name: String,
    pub proc: Proc,
    pub ready: Value,
    pub creds: Value,
    pub log: PathBuf,
}

impl Node {
    /// Start node `name`; `extra` adds flags (link address, region, ...).
    pub fn start(
        dir: &Path,
        name: &str,
        db: &str,
        ca: &Path,
        fanout: usize,
        extra: &[&str],
    ) -> Node {
        let data = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir", data.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
            .args(["--metrics", "127.0.0.1:0"])
            .args(["--rtmps", "127.0.0.1:0", "--srt", "127.0.0.1:0"])
            .args(["--webrtc", "127.0.0.1:0"])
            .args(["--database-url", db, "--cluster-node", name])
            .args(extra)
            .args(["--cluster-fanout", &fanout.to_string()])
            .arg("--cluster-ca-cert")
            .arg(ca.join("ca.pem"))
            .arg("--cluster-ca-key")
            .arg(ca.join("ca.key"))
            .env("RUST_LOG", "info,banyan::cluster=debug")
            .env_remove("BANYAN_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn banyan");
        let stdout = child.stdout.take().unwrap();
        let proc = Proc(Some(child));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "node {name} did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let ready: Value = serde_json::from_str(&line).unwrap();
        let creds: Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("credentials.json")).unwrap())
                .unwrap();
        Node {
            name: name.to_string(),
            proc,
            ready,
            creds,
            log,
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.ready["http"].as_str().unwrap())
    }

    /// `/metrics` on the node's metrics listener.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.ready["metrics"].as_str().unwrap())
    }

    pub fn rtmp(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.ready["rtmp"].as_str().unwrap())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub async fn get_json(url: &str, token: &str) -> (u16, Value) {
    let r = http().get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An ffmpeg RTMP player printing one framemd5 line per video packet (each
/// flushed at once); each line is kept with its arrival time.
pub struct Player {
    pub proc: Proc,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
}

impl Player {
    pub fn start(url: &str) -> Player {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(["-rw_timeout", "15000000", "-i", url])
            .args(["-map", "0:v", "-c", "copy", "-flush_packets", "1"])
            .args(["-f", "framemd5", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg player");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if !l.starts_with('#') {
                    sink.lock().unwrap().push((std::time::Instant::now(), l));
                }
            }
        });
        Player {
            proc: Proc(Some(child)),
            lines,
        }
    }

    pub fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The packet hashes, in arrival order.
    pub fn hashes(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, l)| l.rsplit(',').next().map(|h| h.trim().to_string()))
            .collect()
    }

    /// The packets' timestamps (pts, in the stream's time base), in order.
    pub fn pts(&self) -> Vec<i64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, l)| l.split(',').nth(2)?.trim().parse().ok())
            .collect()
    }

    /// Arrival times of packets after `t`.
    pub fn arrivals_after(&self, t: std::time::Instant) -> Vec<std::time::Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at > t)
            .collect()
    }

    /// The longest time without a packet between `from` and `to`
    /// (counting from `from` to the first packet and from the last to `to`),
    /// and when it began.
    pub fn longest_gap(
        &self,
        from: std::time::Instant,
        to: std::time::Instant,
    ) -> (Duration, std::time::Instant) {
        let mut at = from;
        let mut worst = (Duration::ZERO, from);
        for t in self.arrivals_after(from).into_iter().filter(|t| *t <= to) {
            if t.duration_since(at) > worst.0 {
                worst = (t.duration_since(at), at);
            }
            at = t;
        }
        if to.saturating_duration_since(at) > worst.0 {
            worst = (to.saturating_duration_since(at), at);
        }
        worst
    }
}

/// An 8 s 320x240 25 fps clip (one keyframe per second, AAC) for looping
/// publishers.
pub fn make_clip(path: &Path) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "8"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-g", "25", "-bf", "0"])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The hashes of the video packets of `clip`.
pub fn reference_hashes(clip: &Path) -> std::collections::HashSet<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(clip)
        .args(["-map", "0:v", "-c", "copy", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}

/// Poll `f` every 100 ms until it holds; panics with `what` after `limit`.
/// Returns the time it took.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?}: {what}");
}

/// An ffmpeg publisher looping `clip` in real time to `url` for at most
/// `seconds`.
pub fn publisher(clip: &Path, url: &str, seconds: u32) -> Proc {
    Proc(Some(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-stream_loop", "-1", "-i"])
            .arg(clip)
            .args(["-c", "copy", "-t", &seconds.to_string(), "-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg publisher"),
    ))
}

/// A live input created through one node and known to every node.
pub struct Input {
    pub uid: String,
    /// The RTMP stream key (publishing).
    pub key: String,
    /// The RTMP playback key.
    pub pkey: String,
}

/// Create a live input named `name` through `via` (with its credentials)
/// and wait until every node of `nodes` knows it.
pub async fn input_everywhere(via: &Node, nodes: &[Node], name: &str) -> Input {
    let account = via.creds["accountId"].as_str().unwrap();
    let token = via.creds["apiToken"].as_str().unwrap();
    let input: Value = http()
        .post(format!(
            "{}/client/v4/accounts/{account}/stream/live_inputs",
            via.http()
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"meta": {"name": name}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let field = |path: [&str; 2]| {
        input["result"][path[0]][path[1]]
            .as_str()
            .unwrap_or_else(|| panic!("no {path:?} in {input}"))
            .to_string()
    };
    let created = Input {
        uid: input["result"]["uid"].as_str().unwrap().to_string(),
        key: field(["rtmp", "streamKey"]),
        pkey: field(["rtmpPlayback", "streamKey"]),
    };
    for n in nodes {
        let url = format!("{}/{}/lifecycle", n.http(), created.uid);
        wait_until(Duration::from_secs(5), "input known everywhere", || {
            let url = url.clone();
            async move { http().get(&url).send().await.unwrap().status() == 200 }
        })
        .await;
    }
    created
}

/// Wait until every node of `nodes` lists `count` members.
pub async fn wait_members(nodes: &[Node], admin: &str, count: usize) {
    for n in nodes {
        let url = format!("{}/cluster/nodes", n.http());
        wait_until(Duration::from_secs(5), "membership", || {
            let url = url.clone();
            async move {
                let (s, v) = get_json(&url, admin).await;
                s == 200 && v["nodes"].as_array().is_some_and(|a| a.len() == count)
            }
        })
        .await;
    }
}

/// A new cluster certificate authority in `dir` (`banyan cluster-ca`).
pub fn cluster_ca(dir: &Path) -> std::path::PathBuf {
    let ca = dir.join("ca");
    let out = Command::new(BIN)
        .args(["cluster-ca", "--out"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ca
}
