//! SRT end to end with real clients: ffmpeg, ffplay and srt-live-transmit
//! publish and play through an in-process listener, hub and key table.
//!
//! What arrived is compared with what was sent: the video slices of every
//! played frame hash the same as the source's, in order, from the keyframe
//! the player joined at (`filter_units` drops AUD/SEI/SPS/PPS on both sides,
//! so parameter sets the relay re-inserts do not count as differences).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use banyan_ingest::srt::{serve, SrtConfig};
use banyan_ingest::Context;
use banyan_relay::access::{Direction, Grant, KeyEntry, KeyTable};
use banyan_relay::{Item, StreamState, SubscribeOptions};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const PUB_PASS: &str = "publish-secret-0123";
const PLAY_PASS: &str = "playback-secret-4567";

/// Heavy tests run one at a time: the machine is small and shared.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("banyan-srt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    Dir(d)
}

/// A 10 s 320x240 H.264 + AAC transport stream with SPS/PPS on every
/// keyframe, made once per test run, and its reference video hashes.
fn source() -> &'static (PathBuf, Vec<String>) {
    static SRC: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    SRC.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("banyan-srt-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ts = dir.join("src.ts");
        let st = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "10", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-tune", "zerolatency", "-g", "25", "-bf", "0"])
            .args([
                "-bsf:v",
                "dump_extra=freq=keyframe",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
            ])
            .args(["-f", "mpegts"])
            .arg(&ts)
            .status()
            .expect("ffmpeg runs");
        assert!(st.success(), "source encode");
        let md5 = dir.join("src.md5");
        framemd5_of(&ts, &md5);
        let hashes = read_hashes(&md5);
        assert!(hashes.len() >= 240, "source frames: {}", hashes.len());
        (ts, hashes)
    })
}

fn framemd5_of(input: &Path, out: &Path) {
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(FRAMEMD5_ARGS)
        .arg(out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "framemd5 of {input:?}");
}

const FRAMEMD5_ARGS: [&str; 10] = [
    "-map",
    "0:v",
    "-c",
    "copy",
    "-bsf:v",
    "filter_units=remove_types=6|7|8|9",
    "-f",
    "framemd5",
    "-flush_packets",
    "1",
];

fn read_hashes(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(5).map(|h| h.trim().to_string()))
        .collect()
}

/// Played hashes must be a run of the source's, in order, with no gap.
fn assert_contiguous(played: &[String], reference: &[String], min: usize, what: &str) {
    assert!(
        played.len() >= min,
        "{what}: only {} frames arrived",
        played.len()
    );
    let start = reference
        .iter()
        .position(|h| *h == played[0])
        .unwrap_or_else(|| panic!("{what}: first played frame is not in the source"));
    for (i, h) in played.iter().enumerate() {
        assert_eq!(
            Some(h),
            reference.get(start + i),
            "{what}: frame {i} after the join differs or is missing"
        );
    }
}

struct Node {
    ctx: Context,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn entry(uid: &str, direction: Direction, pass: &str, enabled: bool) -> KeyEntry {
    KeyEntry {
        rtmp_key: format!("rtmp-{uid}-{direction:?}"),
        srt_passphrase: pass.to_string(),
        whip_key: None,
        grant: Grant {
            uid: uid.to_string(),
            account: "acc".to_string(),
            direction,
            enabled,
        },
    }
}

async fn node(latency_ms: u64) -> Node {
    let keys = Arc::new(KeyTable::new());
    let mut entries = Vec::new();
    for uid in ["in1", "in2", "in3", "in4"] {
        entries.push(entry(uid, Direction::Publish, PUB_PASS, true));
        entries.push(entry(uid, Direction::Play, PLAY_PASS, true));
    }
    entries.push(entry("off", Direction::Publish, PUB_PASS, false));
    entries.push(entry("open", Direction::Publish, "", true));
    keys.replace(entries);
    let ctx = Context::standalone(keys);
    let shutdown = CancellationToken::new();
    let cfg = SrtConfig {
        latency: Duration::from_millis(latency_ms),
        ..SrtConfig::default()
    };
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        cfg,
        ctx.clone(),
        shutdown.clone(),
    )
    .await
    .expect("srt listener");
    Node {
        ctx,
        addr,
        shutdown,
    }
}

fn url(addr: SocketAddr, query: &str) -> String {
    format!("srt://{addr}?{query}")
}

fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    let level = std::env::var("BANYAN_FFMPEG_LOGLEVEL").unwrap_or_else(|_| "error".into());
    c.args(["-hide_banner", "-nostdin", "-loglevel", &level, "-y"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// ffmpeg publishing the source in real time to `target`.
fn publish_ffmpeg(target: &str, extra: &[&str]) -> Child {
    let (src, _) = source();
    ffmpeg()
        .args(["-re", "-i"])
        .arg(src)
        .args(["-c", "copy"])
        .args(extra)
        .args(["-f", "mpegts", target])
        .spawn()
        .expect("ffmpeg publisher")
}

async fn wait_live(node: &Node, uid: &str) {
    for _ in 0..100 {
        if node.ctx.hub.state(uid) == StreamState::Live {
            // Let a keyframe or two reach the hub.
            tokio::time::sleep(Duration::from_millis(600)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{uid} never went live");
}

async fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    tokio::time::timeout(Duration::from_secs(secs), child.wait())
        .await
        .ok()
        .and_then(|r| r.ok())
}

async fn stderr_of(child: &mut Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut s)).await;
    }
    s
}

/// ffmpeg plays `src` and writes the video hashes of `frames` frames.
async fn play_hashes(src: &str, extra: &[&str], frames: usize, out: &Path) -> Vec<String> {
    let mut c = ffmpeg();
    c.args(extra)
        .args(["-i", src])
        .args(["-frames:v", &frames.to_string()])
        .args(FRAMEMD5_ARGS)
        .arg(out);
    let mut child = c.spawn().expect("ffmpeg player");
    let st = wait_exit(&mut child, 15).await;
    let err = stderr_of(&mut child).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "player failed: {st:?} {err}"
    );
    read_hashes(out)
}

async fn publish_and_play(pub_query: &str, uid: &str) {
    let _serial = SERIAL.lock().await;
    let (_, reference) = source();
    let node = node(120).await;
    let dir = tmpdir(uid);
    let _publisher = publish_ffmpeg(&url(node.addr, pub_query), &[]);
    wait_live(&node, uid).await;
    let play = url(
        node.addr,
        &format!("streamid=play{uid}&passphrase={PLAY_PASS}"),
    );
    let played = play_hashes(&play, &[], 75, &dir.0.join("out.md5")).await;
    assert_contiguous(&played, reference, 75, "ffmpeg over SRT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_and_plays_with_passphrase() {
    publish_and_play(&format!("streamid=in1&passphrase={PUB_PASS}"), "in1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_with_pbkeylen_32() {
    publish_and_play(
        &format!("streamid=in2&passphrase={PUB_PASS}&pbkeylen=32"),
        "in2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_stream_ids() {
    let _serial = SERIAL.lock().await;
    let (_, reference) = source();
    let node = node(120).await;
    let dir = tmpdir("acl");
    let target = url(node.addr, &format!("passphrase={PUB_PASS}&pbkeylen=16"));
    let _publisher = publish_ffmpeg(&target, &["-srt_streamid", "#!::r=in3,m=publish"]);
    wait_live(&node, "in3").await;
    let play = url(node.addr, &format!("passphrase={PLAY_PASS}"));
    let played = play_hashes(
        &play,
        &["-srt_streamid", "#!::r=in3,m=request"],
        50,
        &dir.0.join("out.md5"),
    )
    .await;
    assert_contiguous(&played, reference, 50, "access-control stream id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffplay_decodes_headless() {
    let _serial = SERIAL.lock().await;
    let node = node(120).await;
    let _publisher = publish_ffmpeg(
        &url(node.addr, &format!("streamid=in1&passphrase={PUB_PASS}")),
        &[],
    );
    wait_live(&node, "in1").await;
    let mut ffplay = Command::new("ffplay")
        .env("SDL_VIDEODRIVER", "dummy")
        .env("SDL_AUDIODRIVER", "dummy")
        .args(["-hide_banner", "-loglevel"])
        .arg(std::env::var("BANYAN_FFMPEG_LOGLEVEL").unwrap_or_else(|_| "info".into()))
        // Not `-fflags nobuffer`: it discards the packets read while probing,
        // so decoding would start after the keyframe the stream begins with.
        .args([
            "-autoexit",
            "-analyzeduration",
            "1000000",
            "-flags",
            "low_delay",
        ])
        .arg(url(
            node.addr,
            &format!("streamid=playin1&passphrase={PLAY_PASS}"),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffplay");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(node.ctx.views.live("in1"), 1, "ffplay counted as a viewer");
    let _ = ffplay.start_kill();
    let _ = wait_exit(&mut ffplay, 5).await;
    let log = stderr_of(&mut ffplay).await;
    assert!(log.contains("Video: h264"), "ffplay saw no video: {log}");
    assert!(log.contains("Audio: aac"), "ffplay saw no audio: {log}");
    // The status line shows the audio-video clock once frames play.
    let playing = log
        .split(['\r', '\n'])
        .filter(|l| l.contains("A-V:") && !l.trim_start().starts_with("nan"))
        .count();
    assert!(playing >= 10, "ffplay did not play: {log}");
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("non-existing pps") || l.contains("corrupt")
        })
        .collect();
    assert!(bad.is_empty(), "ffplay decode errors: {bad:?} in {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_live_transmit_publishes_and_plays() {
    let _serial = SERIAL.lock().await;
    let (src, reference) = source();
    let node = node(120).await;
    let dir = tmpdir("slt");
    // ffmpeg paces the file; srt-live-transmit carries it.
    let mut pacer = ffmpeg()
        .args(["-re", "-i"])
        .arg(src)
        .args(["-c", "copy", "-f", "mpegts", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg pacer");
    let pipe: Stdio = pacer
        .stdout
        .take()
        .expect("pacer stdout")
        .try_into()
        .expect("pipe");
    let _publisher = Command::new("srt-live-transmit")
        .args(["-q", "file://con"])
        .arg(url(
            node.addr,
            &format!("streamid=in4&passphrase={PUB_PASS}"),
        ))
        .stdin(pipe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit publisher");
    wait_live(&node, "in4").await;
    let out_ts = dir.0.join("out.ts");
    let out = std::fs::File::create(&out_ts).expect("out.ts");
    let mut player = Command::new("srt-live-transmit")
        .arg("-q")
        .arg(url(
            node.addr,
            &format!("streamid=playin4&passphrase={PLAY_PASS}"),
        ))
        .arg("file://con")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit player");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = player.start_kill();
    let _ = wait_exit(&mut player, 5).await;
    let md5 = dir.0.join("out.md5");
    framemd5_of(&out_ts, &md5);
    let mut played = read_hashes(&md5);
    // The player was stopped mid-frame: its last frame is cut short.
    played.pop();
    assert_contiguous(&played, reference, 60, "srt-live-transmit player");
    drop(pacer);
}

/// A caller that should be refused: ffmpeg publishing a second of video.
async fn refused(target: &str, extra: &[&str]) -> String {
    let mut c = ffmpeg();
    c.args(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10"])
        .args(["-t", "1", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(extra)
        .args(["-f", "mpegts", target]);
    let mut child = c.spawn().expect("ffmpeg");
    let st = wait_exit(&mut child, 10).await;
    let err = stderr_of(&mut child).await;
    assert!(
        st.is_some_and(|s| !s.success()),
        "caller was not refused: {st:?} {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_are_refused_and_the_listener_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let node = node(120).await;
    let a = node.addr;
    // Wrong passphrase.
    refused(&url(a, "streamid=in1&passphrase=wrong-passphrase-000"), &[]).await;
    // Unknown stream id, and a malformed one.
    refused(
        &url(a, &format!("streamid=nosuch&passphrase={PUB_PASS}")),
        &[],
    )
    .await;
    refused(
        &url(a, &format!("streamid=in1/x&passphrase={PUB_PASS}")),
        &[],
    )
    .await;
    // A publish stream id with the playback passphrase, and the reverse
    // direction's key on a play id.
    refused(
        &url(a, &format!("streamid=in1&passphrase={PLAY_PASS}")),
        &[],
    )
    .await;
    // No passphrase where one is required; one where none is expected.
    refused(&url(a, "streamid=in1"), &[]).await;
    refused(
        &url(a, &format!("streamid=open&passphrase={PUB_PASS}")),
        &[],
    )
    .await;
    // pbkeylen with the wrong key length for a key the caller does not have.
    refused(
        &url(
            a,
            "streamid=in1&passphrase=wrong-passphrase-000&pbkeylen=32",
        ),
        &[],
    )
    .await;
    // A disabled input.
    refused(&url(a, &format!("streamid=off&passphrase={PUB_PASS}")), &[]).await;
    // File mode.
    refused(
        &url(
            a,
            &format!("streamid=in1&passphrase={PUB_PASS}&transtype=file"),
        ),
        &[],
    )
    .await;
    assert_eq!(node.ctx.hub.state("in1"), StreamState::Idle);
    // The listener still serves a good publisher.
    let mut sub = node.ctx.hub.subscribe("in1", SubscribeOptions::default());
    let _publisher = publish_ffmpeg(&url(a, &format!("streamid=in1&passphrase={PUB_PASS}")), &[]);
    let got = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            if let Item::Frame(f) = sub.recv().await {
                if f.keyframe {
                    return f;
                }
            }
        }
    })
    .await
    .expect("a keyframe after the refusals");
    assert!(!got.payload.is_empty());
    // A second publisher on a live input is refused.
    refused(&url(a, &format!("streamid=in1&passphrase={PUB_PASS}")), &[]).await;
}

/// A UDP relay between a caller and the listener that drops `loss` of the
/// datagrams and delays the rest by `delay`, both ways.
async fn impairment_proxy(
    server: SocketAddr,
    loss: f64,
    delay: Duration,
    stop: CancellationToken,
) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    back.connect(server).await.expect("connect");
    let addr = front.local_addr().expect("addr");
    let client: Arc<parking_lot::Mutex<Option<SocketAddr>>> = Default::default();
    let seed = Arc::new(std::sync::atomic::AtomicU64::new(0x9e37_79b9_7f4a_7c15));
    let drop_it = move || {
        // xorshift: deterministic enough, no extra dependency.
        let mut x = seed.load(std::sync::atomic::Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.store(x, std::sync::atomic::Ordering::Relaxed);
        (x % 10_000) as f64 / 10_000.0 < loss
    };
    let drop_up = drop_it.clone();
    {
        let (front, back, client, stop) =
            (front.clone(), back.clone(), client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = front.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => return },
                };
                *client.lock() = Some(from);
                if drop_up() {
                    continue;
                }
                let data = buf[..n].to_vec();
                let back = back.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = back.send(&data).await;
                });
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                r = back.recv(&mut buf) => match r { Ok(n) => n, Err(_) => return },
            };
            if drop_it() {
                continue;
            }
            let Some(to) = *client.lock() else { continue };
            let data = buf[..n].to_vec();
            let front = front.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = front.send_to(&data, to).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_to_srt_under_loss_and_delay_plays_clean() {
    let _serial = SERIAL.lock().await;
    let (_, reference) = source();
    let node = node(120).await;
    let dir = tmpdir("loss");
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let delay = Duration::from_millis(20);
    let up = impairment_proxy(node.addr, 0.02, delay, stop.clone()).await;
    let down = impairment_proxy(node.addr, 0.02, delay, stop.clone()).await;
    let _publisher = publish_ffmpeg(
        &url(up, &format!("streamid=in1&passphrase={PUB_PASS}")),
        &[],
    );
    wait_live(&node, "in1").await;
    let played = play_hashes(
        &url(down, &format!("streamid=playin1&passphrase={PLAY_PASS}")),
        &[],
        75,
        &dir.0.join("out.md5"),
    )
    .await;
    assert_contiguous(&played, reference, 75, "SRT under 2% loss, 20 ms delay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_ts_is_survived() {
    let _serial = SERIAL.lock().await;
    let (src, _) = source();
    let node = node(120).await;
    // Damage: bytes of garbage, lost packets (continuity errors), no PAT/PMT
    // for a while, a PES that never ends.
    let data = std::fs::read(src).expect("source");
    let mut bad = Vec::with_capacity(data.len());
    for (i, p) in data.chunks(188).enumerate() {
        match i % 400 {
            7 => bad.extend_from_slice(&[0x47, 0x13, 0x37, 0x00, 0xff, 0x47]),
            50..=52 => continue,
            _ => {}
        }
        if i < 300 && p.len() > 3 && (p[1] & 0x1f) == 0x10 {
            continue; // no PMT at the start
        }
        bad.extend_from_slice(p);
    }
    let mut sub = node.ctx.hub.subscribe("in2", SubscribeOptions::default());
    let mut publisher = Command::new("srt-live-transmit")
        .args(["-q", "file://con"])
        .arg(url(
            node.addr,
            &format!("streamid=in2&passphrase={PUB_PASS}"),
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit publisher");
    let mut stdin = publisher.stdin.take().expect("stdin");
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Paced roughly: 1316 bytes every 2 ms.
        for c in bad.chunks(1316) {
            if stdin.write_all(c).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let keyframes = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while n < 3 {
            match sub.recv().await {
                Item::Frame(f) if f.keyframe => n += 1,
                Item::End(_) => break,
                _ => {}
            }
        }
        n
    })
    .await
    .unwrap_or(0);
    assert!(keyframes >= 3, "keyframes after damage: {keyframes}");
    drop(publisher);
    // And the listener still takes a good publisher.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _good = publish_ffmpeg(
        &url(node.addr, &format!("streamid=in3&passphrase={PUB_PASS}")),
        &[],
    );
    wait_live(&node, "in3").await;
}

/// A node for trying clients by hand: `cargo test -p banyan-ingest --test srt
/// -- --ignored manual_node --nocapture` prints its address and serves for a
/// minute (inputs in1..in4, passphrases as in this file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn manual_node() {
    let node = node(120).await;
    println!("srt listener on {}", node.addr);
    tokio::time::sleep(Duration::from_secs(60)).await;
}
