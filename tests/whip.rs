//! WHIP ingest end to end: headless Chromium (Debian's, driven by
//! playwright-core) publishes a canvas and a tone as H.264 and Opus to the
//! input's `webRTC.url`, while ffmpeg plays it over RTMPS and SRT (H.264 and
//! AAC, the Opus transcoded once) and hls.js plays the watch page over
//! LL-HLS. The hostile side: a wrong secret, the RTMP key in its place, a
//! second publisher, offers that are not SDP or send no video are refused;
//! `DELETE` on the session ends the broadcast.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{post_body as post, Client, Input, Node, Proto};
use serde_json::{json, Value};
use tokio::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A well-formed offer that sends only audio (no video: refused).
const AUDIO_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// ffmpeg recording `secs` of a playback URL as frame checksums.
fn record(url: &str, out: &Path, secs: u32, what: &str) -> Client {
    let mut c = common::ffmpeg();
    c.arg("-i")
        .arg(url)
        .args(["-t", &secs.to_string(), "-map", "0", "-f", "framemd5"])
        .arg(out);
    Client::spawn(c, what)
}

/// (video frames, audio frames) of a framemd5 file.
fn frames(out: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let count = |s: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.split(',').next().map(str::trim) == Some(s))
            .count()
    };
    (count("0"), count("1"))
}

async fn ffprobe(url: &str) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-of",
            "json",
            "-rw_timeout",
            "10000000",
        ])
        .arg(url)
        .output()
        .await
        .expect("ffprobe");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn wait_status(node: &Node, uid: &str, want: &str, tries: u32) -> Value {
    let mut s = Value::Null;
    for _ in 0..tries {
        s = node.status(uid).await;
        if s == json!(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

fn whip_url(input: &Input) -> String {
    input.0["webRTC"]["url"]
        .as_str()
        .expect("webRTC.url")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_over_whip_and_every_protocol_plays_it() {
    let node = Node::start(&[]);
    let input = node.create_input().await;
    let uid = input.uid().to_string();
    let whip = whip_url(&input);
    let secret = whip
        .strip_suffix("/webRTC/publish")
        .and_then(|s| s.rsplit('/').next())
        .expect("/<secret>/webRTC/publish")
        .to_string();
    let stream_key = input.0["rtmps"]["streamKey"].as_str().unwrap().to_string();
    assert_ne!(secret, stream_key, "the WHIP secret is a secret of its own");
    assert_ne!(secret, uid);

    // ---- refusals before anyone publishes
    for bad in [stream_key.as_str(), uid.as_str(), "0123456789abcdef"] {
        let (s, body) = post(
            &format!("{}/{bad}/webRTC/publish", node.api()),
            "application/sdp",
            AUDIO_ONLY,
        )
        .await;
        assert_eq!(s, 401, "{bad}: {body}");
    }
    let (s, _) = post(&whip, "application/json", AUDIO_ONLY).await;
    assert_eq!(s, 415, "an offer that is not application/sdp");
    let (s, _) = post(&whip, "application/sdp", "v=0\r\nnot SDP\0").await;
    assert_eq!(s, 400, "a malformed offer");
    let (s, body) = post(&whip, "application/sdp", AUDIO_ONLY).await;
    assert_eq!(s, 400, "an offer without video: {body}");
    assert_eq!(node.status(&uid).await, json!(null), "nothing went live");

    // ---- the browser broadcasts for 24 s
    let d = tempfile::tempdir().unwrap();
    let pub_out = d.path().join("whip.json");
    let mut browser = Client::spawn(
        {
            let mut cmd = Command::new("node");
            cmd.arg(root().join("tests/browser/whip.mjs"))
                .arg(&whip)
                .args(["--seconds", "24", "--timeout", "40"])
                .stdout(std::fs::File::create(&pub_out).unwrap())
                .stderr(Stdio::null());
            cmd
        },
        "chromium WHIP publisher",
    );
    let live = wait_status(&node, &uid, "connected", 300).await;
    assert_eq!(
        live,
        json!("connected"),
        "the WHIP publisher never went live: {}",
        std::fs::read_to_string(&pub_out).unwrap_or_default()
    );

    // A second publisher is refused while the first is live.
    let (s, _) = post(&whip, "application/sdp", AUDIO_ONLY).await;
    assert_eq!(s, 409, "a second WHIP publisher");

    // ---- what RTMPS, SRT and HLS viewers get: H.264 and AAC
    let rtmps = input.play_url(Proto::Rtmps);
    let probe = ffprobe(&rtmps).await;
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let codec = |t: &str| {
        streams
            .iter()
            .find(|s| s["codec_type"] == json!(t))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(codec("video")["codec_name"], json!("h264"), "{probe}");
    assert_eq!(
        (
            codec("video")["width"].clone(),
            codec("video")["height"].clone()
        ),
        (json!(640), json!(360)),
        "{probe}"
    );
    assert_eq!(codec("audio")["codec_name"], json!("aac"), "{probe}");
    assert_eq!(codec("audio")["sample_rate"], json!("48000"), "{probe}");

    let hls_out = d.path().join("hls.json");
    let mut hls = Client::spawn(
        {
            let mut cmd = Command::new("node");
            cmd.arg(root().join("tests/browser/play.mjs"))
                .arg(format!("{}/{uid}/watch", node.api()))
                // Two browsers and two ffmpegs share the machine: playing is
                // the subject here, latency and smoothness the HLS tests'.
                .args(["--seconds", "6", "--timeout", "30"])
                .args(["--max-latency", "8", "--max-stalls", "2"])
                .stdout(std::fs::File::create(&hls_out).unwrap())
                .stderr(Stdio::null());
            cmd
        },
        "chromium LL-HLS player",
    );
    let mut players = Vec::new();
    for proto in [Proto::Rtmps, Proto::Srt] {
        let out = d.path().join(format!("{}.md5", proto.name()));
        players.push((
            proto,
            out.clone(),
            record(&input.play_url(proto), &out, 5, proto.name()),
        ));
    }
    for (proto, out, mut p) in players {
        let status = p.wait(40.0).await;
        let (v, a) = frames(&out);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} player: {}",
            proto.name(),
            p.stderr().await
        );
        // 5 s of a 30 fps canvas and 48 kHz audio (46.9 AAC frames a second);
        // half at least, on a loaded machine.
        assert!(v >= 75, "{}: {v} video frames in 5 s", proto.name());
        assert!(a >= 110, "{}: {a} audio frames in 5 s", proto.name());
    }
    assert!(hls.wait(50.0).await.is_some(), "hls.js did not finish");
    let res: Value = serde_json::from_str(
        std::fs::read_to_string(&hls_out)
            .unwrap()
            .lines()
            .last()
            .unwrap_or("null"),
    )
    .unwrap_or(Value::Null);
    assert_eq!(res["ok"], json!(true), "hls.js on the watch page: {res}");

    // ---- the publisher's verdict, and DELETE ends the broadcast
    assert!(browser.wait(60.0).await.is_some(), "the publisher hung");
    let res: Value = serde_json::from_str(
        std::fs::read_to_string(&pub_out)
            .unwrap()
            .lines()
            .last()
            .unwrap_or("null"),
    )
    .unwrap_or(Value::Null);
    assert_eq!(res["ok"], json!(true), "the WHIP publisher: {res}");
    assert!(
        res["location"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("/{secret}/webRTC/publish/"))),
        "{res}"
    );
    // Cloudflare's status of a broadcast its publisher ended.
    let after = wait_status(&node, &uid, "client_disconnect", 100).await;
    assert_eq!(
        after,
        json!("client_disconnect"),
        "DELETE ended the broadcast"
    );
}
