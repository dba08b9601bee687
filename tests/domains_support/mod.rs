//! Custom-domain tests' parts: a node resolving test names to itself, accounts with their own
//! domains and certificates, publishers and players in a private mount namespace, and the packet-
//! hash comparison.

#![allow(dead_code)]

use crate::common;
use crate::common::calls::call_as;
use crate::common::node::in_namespace;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// The video bitstream filter applied to both sides of a comparison:
/// Annex B slices only (no AUD, SEI, SPS, PPS).
pub const SLICES: &str = "h264_mp4toannexb,filter_units=remove_types=6|7|8|9";

/// The names the node resolves to itself (so it can prove them).
pub const PROVEN: &[&str] = &[
    "push.a.example.test",
    "push.b.example.test",
    "push.c.example.test",
    "push.live.example.test",
];

/// A child process killed on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(Some(cmd.spawn().expect("spawn a client")))
    }

    /// The exit status within `limit`, or `None` (still running).
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.0.as_mut().unwrap().stdout.take().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The kit's node resolving [`PROVEN`] to itself, logging at debug, and
/// without plain RTMP unless the test names it.
pub struct Node(pub common::Node);

impl std::ops::Deref for Node {
    type Target = common::Node;
    fn deref(&self) -> &common::Node {
        &self.0
    }
}

impl Node {
    pub fn start(extra: &[&str]) -> Node {
        // The node proves uploads' names by fetching a token from them: it
        // resolves them to itself through a private hosts file, and fetches
        // from its own HTTP port.
        let mut b = common::Node::builder()
            .resolve(PROVEN)
            .log_level("debug")
            .args(&["--domain-verify-port", "0"])
            .args(extra);
        if !extra.iter().any(|a| a.starts_with("--rtmp")) {
            b = b.arg("--no-rtmp");
        }
        Node(b.start())
    }

    pub fn port(&self, which: &str) -> u16 {
        let a: std::net::SocketAddr = self.ready[which].as_str().unwrap().parse().unwrap();
        a.port()
    }

    /// The sum of a counter's samples whose labels include `label`.
    pub async fn counter(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::get(format!(
            "http://{}/metrics",
            self.ready["metrics"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// An account's API access.
pub struct Account {
    pub id: String,
    pub token: String,
}

impl Account {
    pub fn default_of(node: &Node) -> Account {
        Account {
            id: node.creds["accountId"].as_str().unwrap().into(),
            token: node.creds["apiToken"].as_str().unwrap().into(),
        }
    }

    pub async fn create(node: &Node, name: &str) -> Account {
        let (s, v) = call_as(
            Method::POST,
            &format!("{}/client/v4/accounts", node.api()),
            node.creds["adminToken"].as_str().unwrap(),
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        Account {
            id: v["result"]["id"].as_str().unwrap().into(),
            token: v["result"]["apiToken"].as_str().unwrap().into(),
        }
    }

    pub fn url(&self, node: &Node, rest: &str) -> String {
        format!(
            "{}/client/v4/accounts/{}/stream/{rest}",
            node.api(),
            self.id
        )
    }

    pub async fn input(&self, node: &Node) -> Value {
        let (s, v) = call_as(
            Method::POST,
            &self.url(node, "live_inputs"),
            &self.token,
            Some(json!({})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["result"].clone()
    }

    pub async fn add_domain(
        &self,
        node: &Node,
        domain: &str,
        cert: &str,
        key: &str,
    ) -> (StatusCode, Value) {
        call_as(
            Method::POST,
            &self.url(node, "ingest_domains"),
            &self.token,
            Some(json!({"domain": domain, "certificate": cert, "privateKey": key})),
        )
        .await
    }
}

/// A self-signed certificate and key (PEM) for `name`.
pub fn self_signed(name: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

/// The 10 s source clip (320x240, 30 fps, keyframe every second, AAC) and
/// the hashes of its video slices, made once per test binary.
pub fn source() -> &'static (PathBuf, Vec<String>) {
    static SRC: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    SRC.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("banyan-domains-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clip = dir.join("src.flv");
        let st = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=30")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "10", "-c:v", "libx264", "-preset", "ultrafast"])
            .args([
                "-tune",
                "zerolatency",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-bf",
                "0",
            ])
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv",
            ])
            .arg(&clip)
            .status()
            .unwrap();
        assert!(st.success(), "making the source clip");
        let out = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-i"])
            .arg(&clip)
            .args([
                "-map", "0:v", "-c", "copy", "-bsf:v", SLICES, "-f", "framemd5", "-",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let hashes = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(packet_hash)
            .collect();
        (clip, hashes)
    })
}

/// `size,md5` of a framemd5 packet line.
pub fn packet_hash(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    (f.len() == 6).then(|| format!("{},{}", f[4], f[5]))
}

/// ffmpeg publishing the source clip at its own pace to `url`.
pub fn publish(hosts: &Path, url: &str, log: &Path) -> Proc {
    let clip = &source().0;
    Proc::spawn(
        in_namespace(hosts, "ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-re", "-i"])
            .arg(clip)
            .args(["-c", "copy", "-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap()),
    )
}

/// A publish attempt that must be refused: ffmpeg fails within 10 s.
pub fn expect_refused(hosts: &Path, url: &str, log: &Path, what: &str) {
    let mut p = publish(hosts, url, log);
    let st = p.wait_for(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| !s.success()),
        "{what}: publishing was not refused ({st:?})"
    );
}

/// Wait until the input's lifecycle says `live`.
pub async fn wait_live(node: &Node, uid: &str, live: bool) {
    let url = format!("{}/{uid}/lifecycle", node.api());
    for _ in 0..100 {
        let v: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if v["live"] == json!(live) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{uid} never became live={live}:\n{}", node.log_text());
}

/// An ffmpeg player writing one framemd5 line per video packet as it
/// arrives; the lines come back with their arrival time.
pub fn player(hosts: &Path, url: &str, log: &Path) -> (Proc, mpsc::Receiver<(Instant, String)>) {
    let mut p = Proc::spawn(
        in_namespace(hosts, "ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-i", url, "-map", "0:v"])
            .args(["-c", "copy", "-bsf:v", SLICES, "-flush_packets", "1"])
            .args(["-f", "framemd5", "pipe:1"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap()),
    );
    let out = p.take_stdout();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(h) = packet_hash(&line) {
                if tx.send((Instant::now(), h)).is_err() {
                    return;
                }
            }
        }
    });
    (p, rx)
}

/// Every received hash is a source packet, in source order; returns how
/// many matched.
pub fn check_in_order(got: &[String], reference: &[String]) -> usize {
    let mut at = 0;
    for (i, h) in got.iter().enumerate() {
        match reference[at..].iter().position(|r| r == h) {
            Some(k) => at += k + 1,
            None => panic!("received packet {i} ({h}) is not the next source packet"),
        }
    }
    got.len()
}
