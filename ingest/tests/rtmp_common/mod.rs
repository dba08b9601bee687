//! Shared harness of the RTMP end-to-end tests: an in-process server
//! (Hub + KeyTable + Views, plain and TLS listeners on 127.0.0.1:0), a
//! sample clip, real client processes that are always killed, and FLV /
//! framemd5 readers to compare what arrived with what was sent.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use banyan_ingest::Context;
use banyan_relay::access::{Direction, Grant, KeyEntry, KeyTable};
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig, StreamState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Tests of one binary run one at a time: the machine is small and the
/// timing checks must not compete with each other.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A live input's keys as the tests use them.
pub struct Input {
    pub uid: &'static str,
    pub publish: &'static str,
    pub play: &'static str,
}

pub const U1: Input = Input {
    uid: "11111111111111111111111111111111",
    publish: "pubkey-one-0123456789abcdef",
    play: "playkey-one-0123456789abcdef",
};
pub const U2: Input = Input {
    uid: "22222222222222222222222222222222",
    publish: "pubkey-two-0123456789abcdef",
    play: "playkey-two-0123456789abcdef",
};
/// A disabled input.
pub const U3: Input = Input {
    uid: "33333333333333333333333333333333",
    publish: "pubkey-three-0123456789abcdef",
    play: "playkey-three-0123456789abcdef",
};

fn entries() -> Vec<KeyEntry> {
    let mut v = Vec::new();
    for (input, enabled) in [(&U1, true), (&U2, true), (&U3, false)] {
        for (key, direction) in [
            (input.publish, Direction::Publish),
            (input.play, Direction::Play),
        ] {
            v.push(KeyEntry {
                rtmp_key: key.into(),
                srt_passphrase: format!("srt-{key}"),
                whip_key: None,
                grant: Grant {
                    uid: input.uid.into(),
                    account: "acc".into(),
                    direction,
                    enabled,
                },
            });
        }
    }
    v
}

/// The in-process node: RTMP and RTMPS listeners over one hub.
pub struct Server {
    pub rtmp: u16,
    pub rtmps: u16,
    pub hub: Arc<Hub>,
    pub keys: Arc<KeyTable>,
    pub views: Arc<Views>,
    shutdown: CancellationToken,
}

impl Server {
    pub async fn start() -> Server {
        // RUST_LOG=banyan_ingest=debug shows the server's side.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let hub = Hub::new(HubConfig {
            reconnect_window: Duration::ZERO,
            ..HubConfig::default()
        });
        let keys = Arc::new(KeyTable::new());
        keys.replace(entries());
        let views = Views::new();
        let ctx = Context {
            hub: hub.clone(),
            keys: keys.clone(),
            views: views.clone(),
            captions: banyan_captions::Registry::new(),
            admission: Default::default(),
            events: Default::default(),
        };
        let shutdown = CancellationToken::new();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rtmp = plain.local_addr().unwrap().port();
        let rtmps = tls.local_addr().unwrap().port();
        tokio::spawn(banyan_ingest::rtmp::serve(
            plain,
            None,
            ctx.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(banyan_ingest::rtmp::serve(
            tls,
            Some(tls_config()),
            ctx,
            shutdown.clone(),
        ));
        Server {
            rtmp,
            rtmps,
            hub,
            keys,
            views,
            shutdown,
        }
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp)
    }

    pub fn urls(&self, key: &str) -> String {
        format!("rtmps://127.0.0.1:{}/live/{key}", self.rtmps)
    }

    /// Wait until `uid` is live (or `limit` passes).
    pub async fn wait_live(&self, uid: &str, limit: Duration) -> bool {
        self.wait(limit, || self.hub.state(uid) == StreamState::Live)
            .await
    }

    /// Wait until `cond` holds (or `limit` passes).
    pub async fn wait(&self, limit: Duration, cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .unwrap();
    Arc::new(cfg)
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("banyan-rtmp-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("BANYAN_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A client process, killed and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
    /// Start `cmd args...`, stderr to `log`.
    pub fn spawn(name: &str, cmd: &str, args: &[&str], log: PathBuf, env: &[(&str, &str)]) -> Proc {
        let err = std::fs::File::create(&log).unwrap();
        let mut c = Command::new(cmd);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap_or_else(|e| panic!("starting {cmd}: {e}"));
        Proc {
            name: name.into(),
            child,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it exited.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait for the exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.try_status()
    }

    /// Wait for a successful exit, or fail with the log.
    pub async fn expect_success(&mut self, limit: Duration) {
        match self.wait(limit).await {
            Some(s) if s.success() => {}
            other => panic!(
                "{} did not exit cleanly within {limit:?} ({other:?}):\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    pub fn log_text(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A stopped process must be continued to die promptly.
            self.signal("-CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The sample clip: 320x240@30 testsrc2 + 440 Hz sine, x264 ultrafast
/// zerolatency, one keyframe every 30 frames, no B-frames, AAC; FLV.
pub struct Clip {
    pub path: PathBuf,
    /// framemd5 hashes of its video packets, in order.
    pub hashes: Vec<String>,
    /// Keyframe flag of each video packet.
    pub keyframes: Vec<bool>,
}

/// Seconds of the shared sample clip.
pub const CLIP_SECONDS: u32 = 6;

/// The sample clip, made once per test binary.
pub fn clip() -> &'static Clip {
    static CLIP: OnceLock<Clip> = OnceLock::new();
    CLIP.get_or_init(|| make_clip("clip", &[]))
}

/// A clip of about 25 Mbit/s (noise defeats the encoder): enough to fill
/// the kernel's socket buffers of a player that stopped reading.
pub fn big_clip() -> &'static Clip {
    static CLIP: OnceLock<Clip> = OnceLock::new();
    CLIP.get_or_init(|| make_clip("big", &["-vf", "noise=alls=25:allf=t", "-qp", "5"]))
}

fn make_clip(name: &str, extra: &[&str]) -> Clip {
    let dir = std::env::temp_dir().join(format!("banyan-rtmp-clip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.flv"));
    let secs = CLIP_SECONDS.to_string();
    let mut args: Vec<&str> = vec!["-y", "-v", "error"];
    args.extend(encode_input_args());
    args.extend(["-t", &secs]);
    args.extend(encode_output_args());
    args.extend(extra);
    args.extend(["-f", "flv", path.to_str().unwrap()]);
    let st = Command::new("ffmpeg").args(&args).status().unwrap();
    assert!(st.success(), "encoding the sample clip");
    let hashes = framemd5_of_file(&path);
    let keyframes = keyframe_flags(&path);
    assert_eq!(hashes.len(), keyframes.len());
    assert_eq!(hashes.len(), 30 * CLIP_SECONDS as usize, "video packets");
    Clip {
        path,
        hashes,
        keyframes,
    }
}

/// The generated H.264 + AAC source (lavfi).
pub fn encode_input_args() -> Vec<&'static str> {
    vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
    ]
}

pub fn encode_output_args() -> Vec<&'static str> {
    vec![
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
        "-keyint_min",
        "30",
        "-sc_threshold",
        "0",
        "-bf",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
    ]
}

/// Video packet hashes of a framemd5 file.
pub fn parse_framemd5(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            (cols.len() == 6 && cols[0] == "0").then(|| cols[5].to_string())
        })
        .collect()
}

pub fn framemd5_of_file(path: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-c", "copy", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "framemd5 of {path:?}");
    parse_framemd5(&String::from_utf8_lossy(&out.stdout))
}

fn keyframe_flags(path: &Path) -> Vec<bool> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.starts_with('K'))
        .collect()
}

/// Arguments of an ffmpeg player writing the video packets' framemd5.
pub fn framemd5_player_args<'a>(url: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "-y", "-v", "verbose", "-i", url, "-map", "0:v", "-c", "copy", "-f", "framemd5", out,
    ]
}

/// Check that `got` is the reference from one of its keyframes on, with
/// nothing lost in between. Returns the index in the reference where it
/// started. With `whole`, it must start at the first packet and end at the
/// last.
pub fn check_hashes(what: &str, got: &[String], clip: &Clip, whole: bool) -> usize {
    assert!(!got.is_empty(), "{what}: no video packets arrived");
    let start = clip
        .hashes
        .iter()
        .position(|h| *h == got[0])
        .unwrap_or_else(|| panic!("{what}: first packet is not in the source"));
    assert!(
        clip.keyframes[start],
        "{what}: first packet (source #{start}) is not a keyframe"
    );
    let want = &clip.hashes[start..];
    let n = got.len().min(want.len());
    for i in 0..n {
        assert_eq!(
            got[i],
            want[i],
            "{what}: packet {i} (source #{}) differs",
            start + i
        );
    }
    if whole {
        assert_eq!(start, 0, "{what}: did not start at the first packet");
        assert_eq!(
            got.len(),
            clip.hashes.len(),
            "{what}: got {} of {} packets",
            got.len(),
            clip.hashes.len()
        );
    }
    start
}

/// Check a player that may have fallen behind: what it got is runs of the
/// source in order, each later run starting on a keyframe (the hub skipped
/// it ahead). Returns the number of packets skipped.
pub fn check_skips(what: &str, got: &[String], clip: &Clip) -> usize {
    let mut pos = check_hashes(what, &got[..1.min(got.len())], clip, false);
    let mut skipped = 0;
    for (i, h) in got.iter().enumerate() {
        if clip.hashes.get(pos) == Some(h) {
            pos += 1;
            continue;
        }
        let next = clip.hashes[pos..]
            .iter()
            .position(|x| x == h)
            .map(|j| pos + j)
            .unwrap_or_else(|| panic!("{what}: packet {i} is not later in the source"));
        assert!(
            clip.keyframes[next],
            "{what}: packet {i} resumes at source #{next}, not a keyframe"
        );
        skipped += next - pos;
        pos = next + 1;
    }
    skipped
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Start ffmpeg pushing the sample clip in real time.
pub fn push_clip(dir: &TempDir, name: &str, url: &str, extra: &[&str]) -> Proc {
    push(clip(), dir, name, url, extra)
}

/// Start ffmpeg pushing `clip` in real time.
pub fn push(clip: &Clip, dir: &TempDir, name: &str, url: &str, extra: &[&str]) -> Proc {
    let path = clip.path.to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec!["-v", "error"];
    args.extend(extra);
    args.extend(["-re", "-i", &path, "-c", "copy", "-f", "flv", url]);
    Proc::spawn(name, "ffmpeg", &args, dir.join(&format!("{name}.log")), &[])
}

/// Start an ffmpeg player writing framemd5 to `<name>.md5`.
pub fn md5_player(dir: &TempDir, name: &str, url: &str) -> (Proc, PathBuf) {
    let out = dir.join(&format!("{name}.md5"));
    let o = out.to_str().unwrap().to_string();
    let p = Proc::spawn(
        name,
        "ffmpeg",
        &framemd5_player_args(url, &o),
        dir.join(&format!("{name}.log")),
        &[],
    );
    (p, out)
}

pub fn read_md5(path: &Path) -> Vec<String> {
    parse_framemd5(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Start ffplay, headless but really decoding, logging one line per
/// decoded video frame (showinfo).
pub fn ffplay(dir: &TempDir, name: &str, url: &str) -> Proc {
    Proc::spawn(
        name,
        "ffplay",
        &[
            "-v",
            "info",
            "-autoexit",
            "-flags",
            "low_delay",
            "-vf",
            "showinfo",
            "-i",
            url,
        ],
        dir.join(&format!("{name}.log")),
        &[("SDL_VIDEODRIVER", "dummy"), ("SDL_AUDIODRIVER", "dummy")],
    )
}

/// Decoded frames and decoder complaints in an ffplay log.
pub fn ffplay_report(p: &Proc) -> (usize, Vec<String>) {
    let t = std::fs::read_to_string(&p.log).unwrap_or_default();
    let frames = t
        .lines()
        .filter(|l| l.contains("Parsed_showinfo") && l.contains(" n:"))
        .count();
    let errors = t
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("error") || l.contains("non-existing pps") || l.contains("no frame"))
                && !l.contains("showinfo")
        })
        .map(str::to_string)
        .collect();
    (frames, errors)
}
