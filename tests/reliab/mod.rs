//! Shared pieces of tests/hostile.rs and tests/faults.rs: the real binary on
//! port 0 (killed on drop), live inputs through the API, pre-encoded clips
//! published with `-c copy`, ffmpeg players writing framemd5, a raw RTMP
//! client for handcrafted bytes, and the node's RSS and metrics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// One test at a time per test binary: the machine is small and the
/// measurements (RSS, frame gaps) must not depend on a neighbour test.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The kit's node (`crate::common::Node`) with the calls these tests make.
pub struct Node(pub crate::common::Node);

impl std::ops::Deref for Node {
    type Target = crate::common::Node;
    fn deref(&self) -> &crate::common::Node {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut crate::common::Node {
        &mut self.0
    }
}

impl Node {
    /// Start a node on `data` with every listener on port 0, its log
    /// appended to `log`.
    pub fn start(data: &Path, log: &Path, extra: &[&str]) -> Node {
        Node(
            crate::common::Node::builder()
                .data_dir(data)
                .log_file(log)
                .args(extra)
                .start(),
        )
    }

    pub fn account(&self) -> String {
        self.creds["accountId"].as_str().expect("accountId").into()
    }

    pub fn token(&self) -> String {
        self.creds["apiToken"].as_str().expect("apiToken").into()
    }

    /// Create a live input; returns the API's `result`.
    pub async fn create_input(&self, name: &str) -> Value {
        let v: Value = http()
            .post(self.stream_api("live_inputs"))
            .bearer_auth(self.token())
            .json(&json!({"meta": {"name": name}, "defaultCreator": name}))
            .send()
            .await
            .expect("create input")
            .json()
            .await
            .expect("JSON answer");
        assert_eq!(v["success"], json!(true), "create input: {v}");
        v["result"].clone()
    }

    /// GET under the account's stream API; the `result`.
    pub async fn get(&self, rest: &str) -> Value {
        let v: Value = http()
            .get(self.stream_api(rest))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON answer");
        assert_eq!(v["success"], json!(true), "GET {rest}: {v}");
        v["result"].clone()
    }

    pub async fn status(&self, uid: &str) -> Value {
        self.get(&format!("live_inputs/{uid}")).await["status"].clone()
    }

    /// Wait (bounded) until the input has `status` `want`.
    pub async fn wait_status(&self, uid: &str, want: &str, secs: u64) {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status(uid).await;
            if s == json!(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "input {uid}: status {s}, want {want}; node log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node's `/metrics` text (from its metrics listener).
    pub async fn metrics(&self) -> String {
        let addr = self.ready["metrics"].as_str().expect("metrics");
        http()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Resident set size of the node, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Send a signal to the node.
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -{sig}");
    }

    /// Wait (bounded) for the node to exit; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value of a counter in metrics text: the sum over the series whose
/// name is `name` and whose labels contain every one of `labels`.
pub fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

pub fn rtmp_publish_url(input: &Value) -> String {
    format!(
        "{}{}",
        input["rtmp"]["url"].as_str().expect("rtmp.url"),
        input["rtmp"]["streamKey"].as_str().expect("rtmp.streamKey")
    )
}

pub fn rtmp_play_url(input: &Value) -> String {
    format!(
        "{}{}",
        input["rtmpPlayback"]["url"]
            .as_str()
            .expect("rtmpPlayback.url"),
        input["rtmpPlayback"]["streamKey"]
            .as_str()
            .expect("rtmpPlayback.streamKey")
    )
}

pub fn play_key(input: &Value) -> String {
    input["rtmpPlayback"]["streamKey"]
        .as_str()
        .expect("rtmpPlayback.streamKey")
        .to_string()
}

/// A client process; killed on drop.
pub struct Client {
    pub child: Child,
}

impl Client {
    pub fn spawn(mut cmd: Command) -> Client {
        let child = cmd
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn client");
        Client { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub async fn wait(&mut self, secs: f64) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(Duration::from_secs_f64(secs), self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.wait(5.0).await;
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

pub fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A pre-encoded clip: 10 s, 320x240 at 30 fps, H.264 (keyframe every
/// second, no B-frames) and AAC, as FLV. `pattern` picks the picture so two
/// clips differ in every frame.
pub fn clip(pattern: &str) -> PathBuf {
    static CLIPS: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let clips = CLIPS.get_or_init(Default::default);
    let mut clips = clips.lock().expect("clips");
    if let Some((_, p)) = clips.iter().find(|(n, _)| n == pattern) {
        return p.clone();
    }
    let dir = std::env::temp_dir().join(format!("banyan-reliab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{pattern}.flv"));
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("{pattern}=size=320x240:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", "10", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-g", "30", "-keyint_min", "30"])
        .args(["-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "encode clip {pattern}");
    clips.push((pattern.to_string(), path.clone()));
    path
}

/// ffmpeg publishing `clip` in a loop at its own pace to `url` (FLV).
pub fn publish(clip: &Path, url: &str) -> Client {
    let mut c = ffmpeg();
    c.args(["-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", url]);
    Client::spawn(c)
}

/// Output options writing normalised per-packet hashes (Annex B without
/// parameter sets, SEI or AUD; raw AAC), flushed per packet.
pub const FRAMEMD5: [&str; 14] = [
    "-map",
    "0:v",
    "-map",
    "0:a",
    "-c",
    "copy",
    "-bsf:v",
    "h264_mp4toannexb,filter_units=remove_types=6|7|8|9",
    "-bsf:a",
    "aac_adtstoasc",
    "-f",
    "framemd5",
    "-flush_packets",
    "1",
];

/// ffmpeg playing `url` into framemd5 `out`, for `secs` of media (or until
/// killed when `None`).
pub fn play(url: &str, out: &Path, secs: Option<u32>) -> Client {
    let mut c = ffmpeg();
    c.args(["-rw_timeout", "15000000", "-i", url]);
    if let Some(s) = secs {
        c.args(["-t", &s.to_string()]);
    }
    c.args(FRAMEMD5).arg("-y").arg(out);
    Client::spawn(c)
}

/// One framemd5 packet line.
#[derive(Debug, Clone)]
pub struct Packet {
    pub stream: u32,
    pub dts: i64,
    pub pts: i64,
    pub hash: String,
}

pub fn packets(path: &Path) -> Vec<Packet> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() < 6 {
                return None;
            }
            Some(Packet {
                stream: f[0].parse().ok()?,
                dts: f[1].parse().ok()?,
                pts: f[2].parse().ok()?,
                hash: f[5].to_string(),
            })
        })
        .collect()
}

/// Per-packet video hashes of a clip, normalised as the players' are.
pub fn clip_video_hashes(clip: &Path) -> std::collections::HashSet<String> {
    let out = clip.with_extension("md5");
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(clip)
        .args(FRAMEMD5)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "clip hashes");
    packets(&out)
        .into_iter()
        .filter(|p| p.stream == 0)
        .map(|p| p.hash)
        .collect()
}

/// The video of a played framemd5 file is whole: at least `min` frames,
/// timestamps never going back, no gap longer than `max_gap_ms` (flv time
/// base: milliseconds).
pub fn assert_video_whole(path: &Path, min: usize, max_gap_ms: i64, what: &str) {
    let video: Vec<Packet> = packets(path)
        .into_iter()
        .filter(|p| p.stream == 0)
        .collect();
    assert!(
        video.len() >= min,
        "{what}: {} video frames, want at least {min}",
        video.len()
    );
    for w in video.windows(2) {
        let d = w[1].dts - w[0].dts;
        assert!(
            (0..=max_gap_ms).contains(&d),
            "{what}: video dts {} then {} (step {d} ms, at most {max_gap_ms} allowed)",
            w[0].dts,
            w[1].dts
        );
    }
}

/// A stream published and played by real clients, to show that what
/// happens elsewhere leaves it alone.
pub struct Witness {
    pub publisher: Client,
    pub player: Client,
    pub out: PathBuf,
    pub secs: u32,
}

impl Witness {
    /// Publish the testsrc2 clip to a new input and play `secs` of it.
    pub async fn start(node: &Node, dir: &Path, secs: u32) -> Witness {
        let input = node.create_input("witness").await;
        let uid = input["uid"].as_str().expect("uid").to_string();
        let publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&input));
        node.wait_status(&uid, "connected", 15).await;
        let out = dir.join("witness.md5");
        let player = play(&rtmp_play_url(&input), &out, Some(secs));
        // Playing before the test goes on: its connection is in place.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while packets(&out).iter().filter(|p| p.stream == 0).count() < 3 {
            assert!(
                tokio::time::Instant::now() < until,
                "the witness player got no frames; node log:\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Witness {
            publisher,
            player,
            out,
            secs,
        }
    }

    /// The player finished on its own and got every frame of its seconds.
    pub async fn check(mut self) {
        let st = self.player.wait(self.secs as f64 + 15.0).await;
        assert!(
            st.is_some_and(|s| s.success()),
            "witness player did not finish cleanly: {st:?}"
        );
        let min = (self.secs as usize * 30) * 9 / 10;
        assert_video_whole(&self.out, min, 50, "witness player");
        self.publisher.stop().await;
    }
}

/// Whether the peer closed `tcp` within `limit` (EOF or error on read);
/// bytes that arrive meanwhile are discarded.
pub async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The simple RTMP handshake: C0 C1, read S0 S1 S2, C2.
pub async fn rtmp_handshake(tcp: &mut TcpStream) {
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    tcp.write_all(&c0c1).await.expect("C0C1");
    let mut s = vec![0u8; 1 + 1536 * 2];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut s))
        .await
        .expect("S0S1S2 in time")
        .expect("S0S1S2");
    assert_eq!(s[0], 3, "S0 version");
    tcp.write_all(&s[1..1537]).await.expect("C2");
}

/// One RTMP message in a single type-0 chunk (the payload must fit the
/// chunk size in force).
pub fn chunk(csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![csid & 0x3f, 0, 0, 0];
    let len = payload.len() as u32;
    b.extend_from_slice(&len.to_be_bytes()[1..]);
    b.push(type_id);
    b.extend_from_slice(&stream_id.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

pub fn amf_str(b: &mut Vec<u8>, s: &str) {
    b.push(2);
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

pub fn amf_num(b: &mut Vec<u8>, n: f64) {
    b.push(0);
    b.extend_from_slice(&n.to_be_bytes());
}

pub fn amf_obj(b: &mut Vec<u8>, props: &[(&str, &str)]) {
    b.push(3);
    for (k, v) in props {
        b.extend_from_slice(&(k.len() as u16).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        amf_str(b, v);
    }
    b.extend_from_slice(&[0, 0, 9]);
}

/// Read until `n` `_result` answers have arrived in all (bounded).
async fn await_results(tcp: &mut TcpStream, seen: &mut Vec<u8>, n: usize) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut b = vec![0u8; 8192];
    while seen.windows(7).filter(|w| w == b"_result").count() < n {
        match tokio::time::timeout_at(until, tcp.read(&mut b)).await {
            Ok(Ok(k)) if k > 0 => seen.extend_from_slice(&b[..k]),
            other => panic!("no _result from the node: {other:?}"),
        }
    }
}

/// Set chunk size 4096, connect to `live` and wait for the answer, then
/// createStream and wait (stream 1).
async fn connect_and_create_stream(tcp: &mut TcpStream, addr: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut out = chunk(2, 1, 0, &4096u32.to_be_bytes());
    let mut connect = Vec::new();
    amf_str(&mut connect, "connect");
    amf_num(&mut connect, 1.0);
    amf_obj(
        &mut connect,
        &[("app", "live"), ("tcUrl", &format!("rtmp://{addr}/live"))],
    );
    out.extend(chunk(3, 20, 0, &connect));
    tcp.write_all(&out).await.expect("connect");
    await_results(tcp, &mut seen, 1).await;
    let mut create = Vec::new();
    amf_str(&mut create, "createStream");
    amf_num(&mut create, 2.0);
    create.push(5);
    tcp.write_all(&chunk(3, 20, 0, &create))
        .await
        .expect("createStream");
    await_results(tcp, &mut seen, 2).await;
    seen
}

/// As a player does: connect and createStream, then play `key` on stream 1.
pub async fn rtmp_play(tcp: &mut TcpStream, addr: &str, key: &str) {
    connect_and_create_stream(tcp, addr).await;
    let mut play = Vec::new();
    amf_str(&mut play, "play");
    amf_num(&mut play, 0.0);
    play.push(5);
    amf_str(&mut play, key);
    tcp.write_all(&chunk(8, 20, 1, &play)).await.expect("play");
}

/// As a publisher does: set chunk size 4096, connect to `live`, createStream,
/// then publish `key` on stream 1 and wait for the node's `onStatus`
/// answer (accepted or refused).
pub async fn rtmp_publish(tcp: &mut TcpStream, addr: &str, key: &str) -> Vec<u8> {
    let mut seen = connect_and_create_stream(tcp, addr).await;
    let mut publish = Vec::new();
    amf_str(&mut publish, "publish");
    amf_num(&mut publish, 0.0);
    publish.push(5);
    amf_str(&mut publish, key);
    amf_str(&mut publish, "live");
    tcp.write_all(&chunk(8, 20, 1, &publish))
        .await
        .expect("publish");
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut b = vec![0u8; 8192];
    while !seen.windows(17).any(|w| w == b"NetStream.Publish") {
        match tokio::time::timeout_at(until, tcp.read(&mut b)).await {
            Ok(Ok(k)) if k > 0 => seen.extend_from_slice(&b[..k]),
            other => panic!("no publish answer from the node: {other:?}"),
        }
    }
    seen
}

/// A connected TCP socket with a small receive buffer (a viewer that stops
/// reading fills it quickly).
pub async fn small_buffer_connect(addr: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    let _ = sock.set_recv_buffer_size(4096);
    sock.connect(addr.parse().expect("address"))
        .await
        .expect("connect")
}
