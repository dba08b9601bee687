//! The test kit of the end-to-end tests: the real binary started by
//! [`Node::builder`] (`node.rs`: port 0 everywhere, killed on drop), the
//! HTTP API with a token (`calls.rs`), live-encoding publishers
//! (`encode.rs`), the certificate a listener presents (`tls.rs`), and here
//! live inputs created through the API, one source clip per test run with
//! its reference hashes, real-client children killed on drop, and the
//! frame-by-frame comparison of what a player received with what was sent.
//!
//! Hashes are per packet (`-f framemd5 -c copy`) after normalising both
//! sides the same way: H.264 to Annex B (`h264_mp4toannexb`, a no-op on TS
//! input) without AUD/SEI/SPS/PPS (`filter_units`, which also rewrites start
//! codes canonically), AAC without ADTS headers (`aac_adtstoasc`, a no-op on
//! FLV input). What remains is the slices and the raw AAC frames, which
//! every protocol pair must carry unchanged.

#![allow(dead_code)]

pub mod calls;
pub mod encode;
pub mod node;
pub mod ports;
pub mod tls;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

pub use node::Node;

pub const BIN: &str = env!("CARGO_BIN_EXE_banyan");

/// Frames per second of the source clip.
pub const FPS: usize = 30;
/// Keyframe interval of the source clip, in frames.
pub const GOP: usize = 30;
/// Length of the source clip, in seconds.
pub const SECONDS: usize = 12;

/// ffmpeg's log level for the clients (`BANYAN_FFMPEG_LOGLEVEL` to debug).
pub fn loglevel() -> String {
    std::env::var("BANYAN_FFMPEG_LOGLEVEL").unwrap_or_else(|_| "error".into())
}

/// An HTTP client with a 20 s timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// POST `body` as `ctype` (an SDP offer, or something that is not one):
/// the status and the answer's text.
pub async fn post_body(url: &str, ctype: &str, body: &str) -> (u16, String) {
    let r = http()
        .post(url)
        .header("content-type", ctype)
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

/// A live input as the API returned it, with its publish and play URLs.
pub struct Input(pub Value);

/// The protocols a live input is published or played over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Rtmp,
    Rtmps,
    Srt,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Rtmp, Proto::Rtmps, Proto::Srt];

    pub fn name(self) -> &'static str {
        match self {
            Proto::Rtmp => "RTMP",
            Proto::Rtmps => "RTMPS",
            Proto::Srt => "SRT",
        }
    }
}

impl Input {
    pub fn uid(&self) -> &str {
        self.0["uid"].as_str().expect("uid")
    }

    fn field(&self, obj: &str, key: &str) -> &str {
        self.0[obj][key]
            .as_str()
            .unwrap_or_else(|| panic!("{obj}.{key} in {}", self.0))
    }

    /// Where a broadcaster publishes over `proto`.
    pub fn publish_url(&self, proto: Proto) -> String {
        match proto {
            Proto::Rtmp => format!(
                "{}{}",
                self.field("rtmp", "url"),
                self.field("rtmp", "streamKey")
            ),
            Proto::Rtmps => format!(
                "{}{}",
                self.field("rtmps", "url"),
                self.field("rtmps", "streamKey")
            ),
            Proto::Srt => format!(
                "{}?streamid={}&passphrase={}",
                self.field("srt", "url"),
                self.field("srt", "streamId"),
                self.field("srt", "passphrase")
            ),
        }
    }

    /// Where a viewer plays over `proto`.
    pub fn play_url(&self, proto: Proto) -> String {
        match proto {
            Proto::Rtmp => format!(
                "{}{}",
                self.field("rtmpPlayback", "url"),
                self.field("rtmpPlayback", "streamKey")
            ),
            Proto::Rtmps => format!(
                "{}{}",
                self.field("rtmpsPlayback", "url"),
                self.field("rtmpsPlayback", "streamKey")
            ),
            Proto::Srt => format!(
                "{}?streamid={}&passphrase={}",
                self.field("srtPlayback", "url"),
                self.field("srtPlayback", "streamId"),
                self.field("srtPlayback", "passphrase")
            ),
        }
    }
}

/// A real client process; killed on drop.
pub struct Client {
    pub child: Child,
    pub what: String,
}

impl Client {
    pub fn spawn(mut cmd: Command, what: &str) -> Client {
        let child = cmd
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Client {
            child,
            what: what.to_string(),
        }
    }

    /// Wait up to `secs` for the process to exit by itself.
    pub async fn wait(&mut self, secs: f64) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(Duration::from_secs_f64(secs), self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    /// Kill it and wait (bounded) for the exit.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.wait(5.0).await;
    }

    /// Its stderr, when piped (read after it exited).
    pub async fn stderr(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), e.read_to_string(&mut s)).await;
        }
        s
    }
}

/// `ffmpeg` with quiet, non-interactive defaults.
pub fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-nostdin", "-loglevel"])
        .arg(loglevel())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// ffmpeg publishing the source clip at its own pace over `proto`: FLV
/// for RTMP(S), MPEG-TS for SRT.
pub fn publish(input: &Input, proto: Proto) -> Client {
    let src = source();
    let mut c = ffmpeg();
    c.arg("-re").arg("-i").arg(&src.ts).args(["-c", "copy"]);
    match proto {
        Proto::Rtmp | Proto::Rtmps => c.args(["-f", "flv"]),
        Proto::Srt => c.args(["-f", "mpegts"]),
    };
    c.arg(input.publish_url(proto));
    Client::spawn(c, &format!("{} publisher", proto.name()))
}

/// ffmpeg publishing the source clip over RTMP at its own pace, `loops`
/// more times after the first (`-1`: until stopped).
pub fn publish_looped(input: &Input, loops: i32) -> Client {
    let mut c = ffmpeg();
    c.arg("-re")
        .args(["-stream_loop", &loops.to_string()])
        .arg("-i")
        .arg(&source().ts)
        .args(["-c", "copy", "-f", "flv"])
        .arg(input.publish_url(Proto::Rtmp));
    Client::spawn(c, "looped RTMP publisher")
}

/// Output arguments writing the normalised hashes of video and audio.
pub const FRAMEMD5_ARGS: [&str; 14] = [
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

/// Per-packet hashes of one played or source stream.
#[derive(Debug, Default, Clone)]
pub struct Hashes {
    pub video: Vec<String>,
    pub audio: Vec<String>,
}

impl Hashes {
    /// Parse framemd5 text (stream 0 video, stream 1 audio).
    pub fn parse(text: &str) -> Hashes {
        let mut h = Hashes::default();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let mut f = l.split(',').map(str::trim);
            let stream = f.next();
            let Some(hash) = f.nth(4) else { continue };
            match stream {
                Some("0") => h.video.push(hash.to_string()),
                Some("1") => h.audio.push(hash.to_string()),
                _ => {}
            }
        }
        h
    }

    pub fn read(path: &Path) -> Hashes {
        Hashes::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }
}

/// The source clip: 12 s of 320x240 30 fps H.264 (one keyframe a second,
/// no B-frames, SPS/PPS on every keyframe) and AAC, as MPEG-TS.
pub struct Source {
    pub ts: PathBuf,
    pub hashes: Hashes,
    /// Indices (in `hashes.video`) of the keyframes.
    pub keyframes: HashSet<usize>,
}

/// The source clip, encoded once per test binary run.
pub fn source() -> &'static Source {
    static SRC: OnceLock<Source> = OnceLock::new();
    SRC.get_or_init(|| {
        remove_stale_sources();
        let dir = std::env::temp_dir().join(format!("banyan-e2e-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ts = dir.join("src.ts");
        let st = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", &SECONDS.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", &GOP.to_string(), "-keyint_min", &GOP.to_string()])
            .args(["-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"])
            .args(["-bsf:v", "dump_extra=freq=keyframe"])
            .args(["-c:a", "aac", "-b:a", "64k", "-f", "mpegts"])
            .arg(&ts)
            .status()
            .expect("ffmpeg runs");
        assert!(st.success(), "source encode");
        let md5 = dir.join("src.md5");
        let st = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(&ts)
            .args(FRAMEMD5_ARGS)
            .arg(&md5)
            .status()
            .expect("ffmpeg runs");
        assert!(st.success(), "source hashes");
        let hashes = Hashes::read(&md5);
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
            .arg(&ts)
            .output()
            .expect("ffprobe runs");
        let flags = String::from_utf8_lossy(&probe.stdout);
        let keyframes: HashSet<usize> = flags
            .lines()
            .filter(|f| f.starts_with('K') || f.starts_with('_'))
            .enumerate()
            .filter(|(_, f)| f.starts_with('K'))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hashes.video.len(), SECONDS * FPS, "source video frames");
        assert!(
            hashes.audio.len() >= SECONDS * 43,
            "source audio frames: {}",
            hashes.audio.len()
        );
        assert_eq!(keyframes.len(), SECONDS * FPS / GOP, "source keyframes");
        let _ = std::fs::remove_file(&md5);
        Source {
            ts,
            hashes,
            keyframes,
        }
    })
}

/// The source lives as long as the test process; remove those of test
/// processes that are gone.
fn remove_stale_sources() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("banyan-e2e-src-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `played` must be a contiguous run of `reference` of at least `min`
/// entries; returns where in `reference` it starts. Equal hashes may repeat
/// in the reference (audio), so every candidate start is tried.
pub fn assert_run(played: &[String], reference: &[String], min: usize, what: &str) -> usize {
    assert!(
        played.len() >= min,
        "{what}: only {} packets arrived, want at least {min}",
        played.len()
    );
    let candidates: Vec<usize> = reference
        .iter()
        .enumerate()
        .filter(|(_, h)| **h == played[0])
        .map(|(i, _)| i)
        .collect();
    assert!(
        !candidates.is_empty(),
        "{what}: the first packet that arrived is not in the source"
    );
    if let Some(&start) = candidates
        .iter()
        .find(|&&s| reference.get(s..s + played.len()) == Some(played))
    {
        return start;
    }
    let start = candidates[0];
    let i = played
        .iter()
        .enumerate()
        .position(|(i, h)| reference.get(start + i) != Some(h))
        .unwrap_or(played.len());
    panic!(
        "{what}: packet {i} of {} after the join (source packet {}) differs, is missing or is extra",
        played.len(),
        start + i
    );
}

/// A fresh directory the user `nobody` can write into (for VLC).
pub fn world_writable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod temp dir");
    d
}
