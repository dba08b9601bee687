//! Every ingest protocol to every playback protocol, through the real
//! binary, with real clients.
//!
//! One test per ingest protocol (RTMP, RTMPS, SRT): ffmpeg publishes the
//! source clip at its own pace (`-re -c copy`, FLV for RTMP(S), MPEG-TS
//! with the input's passphrase for SRT) and three ffmpeg players attach at
//! once over RTMP, RTMPS and SRT. Each player's video and audio packets,
//! normalised the same way as the source's (see `common`), must be one
//! contiguous run of the source's, starting on a keyframe and running to
//! the source's last packet (over SRT ingest, less the short tail ffmpeg's
//! SRT caller drops when it closes: see `tail_slack`).
//!
//! The same publish also serves:
//! - a player joining more than 3 s in, mid-GOP: its first packet is a keyframe,
//!   ffmpeg decodes everything without an error, and its first packet
//!   arrives quickly (time printed);
//! - ffplay, headless but decoding, for 4 s over RTMPS or SRT: no decode
//!   errors in its log;
//! - the end of stream: the node runs with `--reconnect-window 1`, so once
//!   the publisher leaves every player exits by itself a little after that
//!   window (time printed).
//!
//! `cargo test --test matrix -- --nocapture` shows the measured figures.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ffmpeg, publish, source, Client, Hashes, Input, Node, Proto, FRAMEMD5_ARGS, GOP};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// One publish at a time: the machine is small and shared, and a strict
/// frame-by-frame comparison should not depend on CPU contention.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The late player joins once the stream is past this many seconds, in
/// the middle of a GOP (see `wait_mid_gop`).
const LATE_JOIN: usize = 3;
/// The node's reconnect window, in seconds.
const WINDOW: &str = "1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_ingest_plays_on_every_protocol() {
    matrix_from(Proto::Rtmp, Proto::Rtmps, Some(Proto::Srt)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_ingest_plays_on_every_protocol() {
    matrix_from(Proto::Rtmps, Proto::Srt, Some(Proto::Rtmps)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_ingest_plays_on_every_protocol() {
    matrix_from(Proto::Srt, Proto::Rtmp, Some(Proto::Rtmps)).await;
}

/// An ffmpeg player writing the normalised hashes to a file.
fn player(input: &Input, proto: Proto, out: &std::path::Path) -> Client {
    let mut c = ffmpeg();
    c.arg("-i")
        .arg(input.play_url(proto))
        .args(FRAMEMD5_ARGS)
        .arg(out);
    Client::spawn(c, &format!("{} player", proto.name()))
}

/// A player that joins mid-stream: ffmpeg writing hashes on stdout and
/// decoding video and audio into a second output. Its time to the first
/// packet is taken on ffmpeg's stdout over RTMP(S). Over SRT, ffmpeg's
/// MPEG-TS probe always reads its whole `-analyzeduration` of stream time
/// before the first output packet, whatever the source (ffmpeg's own
/// files too), so the time is taken on the raw transport stream of an
/// srt-live-transmit viewer started at the same moment instead.
struct LateJoiner {
    client: Client,
    spawned: Instant,
    reader: tokio::task::JoinHandle<(Option<Instant>, String)>,
    raw_ts: Option<tokio::task::JoinHandle<Result<Instant, String>>>,
}

impl LateJoiner {
    fn spawn(input: &Input, proto: Proto) -> LateJoiner {
        let mut c = ffmpeg();
        // x264's stream carries no frame-rate timing: ffmpeg would read
        // 1 s of an FLV stream to estimate it before its first packet.
        c.args(["-fpsprobesize", "0", "-i"])
            .arg(input.play_url(proto))
            .args(FRAMEMD5_ARGS)
            .arg("pipe:1")
            .args(["-map", "0:v", "-map", "0:a"])
            // The join backlog arrives with its timestamps compressed into a
            // few milliseconds (the hub's catch-up): keep every decoded frame
            // and a clock fine enough that they stay distinct.
            .args(["-fps_mode:v", "passthrough", "-enc_time_base:v", "1:90000"])
            .args(["-f", "null", "-"])
            .stdout(Stdio::piped());
        let spawned = Instant::now();
        let raw_ts =
            (proto == Proto::Srt).then(|| tokio::spawn(first_ts_keyframe(input.play_url(proto))));
        let mut client = Client::spawn(c, &format!("late {} player", proto.name()));
        let stdout = client.child.stdout.take().expect("piped stdout");
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut first = None;
            let mut text = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if first.is_none() && l.starts_with("0,") {
                    first = Some(Instant::now());
                }
                text.push_str(&l);
                text.push('\n');
            }
            (first, text)
        });
        LateJoiner {
            client,
            spawned,
            reader,
            raw_ts,
        }
    }
}

/// srt-live-transmit plays `url`; the time its first video PES arrives,
/// which must hold an IDR slice and the SPS and PPS before it.
async fn first_ts_keyframe(url: String) -> Result<Instant, String> {
    use tokio::io::AsyncReadExt;
    let mut c = Command::new("srt-live-transmit");
    c.args(["-q", &url, "file://con"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut slt = Client::spawn(c, "srt-live-transmit");
    let mut out = slt.child.stdout.take().expect("piped stdout");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut pos = 0;
    let mut pes: Option<(u16, Instant, Vec<u8>)> = None;
    loop {
        let n = match tokio::time::timeout_at(deadline, out.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err("no video within 5 s".into()),
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= pos + 188 {
            let p = &buf[pos..pos + 188];
            pos += 188;
            if p[0] != 0x47 {
                return Err("lost TS sync".into());
            }
            let pusi = p[1] & 0x40 != 0;
            let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
            let afc = p[3] >> 4 & 3;
            let off = if afc & 2 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            if afc & 1 == 0 || off >= 188 {
                continue;
            }
            let payload = &p[off..];
            match &mut pes {
                None if pusi
                    && payload.len() > 9
                    && payload[..3] == [0, 0, 1]
                    && payload[3] & 0xf0 == 0xe0 =>
                {
                    let body = &payload[9 + usize::from(payload[8])..];
                    pes = Some((pid, now, body.to_vec()));
                }
                Some((vpid, at, body)) if *vpid == pid => {
                    if pusi {
                        // The PES is complete: which NAL units does it hold?
                        let types: Vec<u8> = body
                            .windows(4)
                            .filter(|w| w[..3] == [0, 0, 1])
                            .map(|w| w[3] & 0x1f)
                            .collect();
                        let at = *at;
                        let (sps, pps, idr) = (
                            types.iter().position(|&t| t == 7),
                            types.iter().position(|&t| t == 8),
                            types.iter().position(|&t| t == 5),
                        );
                        return match (sps, pps, idr) {
                            (Some(s), Some(p), Some(i)) if s < i && p < i => Ok(at),
                            _ => Err(format!("first video PES holds NAL types {types:?}")),
                        };
                    }
                    body.extend_from_slice(payload);
                }
                _ => {}
            }
        }
    }
}

/// Lines of an ffmpeg error log that are not the end of the input (an SRT
/// input reports the peer's close as an I/O error).
fn errors_but_eof(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("Last message repeated"))
        .filter(|l| !l.ends_with(": Input/output error") && !l.ends_with(": End of file"))
        .collect()
}

/// ffplay, headless with SDL's dummy drivers (so it really decodes), for
/// `secs` or a little more; then its log is checked for playback and
/// decode errors.
async fn ffplay_checks(input: &Input, proto: Proto, secs: u64) {
    let mut c = Command::new("ffplay");
    c.env("SDL_VIDEODRIVER", "dummy")
        .env("SDL_AUDIODRIVER", "dummy")
        .args(["-hide_banner", "-loglevel", "info"])
        // Not `-fflags nobuffer`: it drops the packets read while probing,
        // so decoding would start after the keyframe the player got first.
        .args([
            "-autoexit",
            "-analyzeduration",
            "1000000",
            "-flags",
            "low_delay",
        ])
        .arg(input.play_url(proto))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut ffplay = Client::spawn(c, &format!("ffplay over {}", proto.name()));
    // The status line shows the audio-video clock once frames play.
    let playing = |log: &str| {
        log.split(['\r', '\n'])
            .filter(|l| l.contains("A-V:") && !l.trim_start().starts_with("nan"))
            .count()
    };
    let mut stderr = ffplay.child.stderr.take().expect("piped stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.lock().expect("log lock").push_str(&text);
        }
    });
    // `secs` at least; longer (bounded) if a loaded machine made it start
    // late, until it has shown some 40 status lines of playing.
    let started = Instant::now();
    let mut early = None;
    while started.elapsed() < Duration::from_secs(secs + 5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        early = ffplay.child.try_wait().ok().flatten();
        let enough = playing(&log.lock().expect("log lock")) >= 40;
        if early.is_some() || (enough && started.elapsed() >= Duration::from_secs(secs)) {
            break;
        }
    }
    ffplay.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), reader).await;
    let log = log.lock().expect("log lock").clone();
    let what = format!("ffplay over {}", proto.name());
    assert!(early.is_none(), "{what} exited early ({early:?}): {log}");
    assert!(log.contains("Video: h264"), "{what} saw no video: {log}");
    assert!(log.contains("Audio: aac"), "{what} saw no audio: {log}");
    let playing = playing(&log);
    assert!(playing >= 10, "{what} did not play: {log}");
    let bad: Vec<&str> = log
        .split(['\r', '\n'])
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error")
                || l.contains("non-existing pps")
                || l.contains("corrupt")
                || l.contains("missing picture")
                || l.contains("no frame")
        })
        .collect();
    assert!(bad.is_empty(), "{what} decode errors: {bad:?} in {log}");
    println!("{what}: {playing} status lines, no decode errors");
}

/// How much of the source's end may be missing, in seconds: none over RTMP
/// ingest. Over SRT, ffmpeg's caller closes its socket without lingering
/// (libsrt's live mode), so what it had not sent yet is lost, typically the
/// last frame or two and one audio PES of several AAC frames; a bare
/// srt-live-transmit receiver loses the same tail, so it is not the node.
fn tail_slack(ingest: Proto) -> f64 {
    match ingest {
        Proto::Srt => 0.3,
        Proto::Rtmp | Proto::Rtmps => 0.0,
    }
}

/// The video and audio a player received must be a contiguous run of the
/// source's, from a keyframe, up to the source's last packet (less `slack`
/// seconds). Returns the index of its first video packet in the source.
fn check_arrived(played: &Hashes, what: &str, min_video: usize, slack: f64) -> usize {
    let src = source();
    let start = common::assert_run(&played.video, &src.hashes.video, min_video, what);
    assert!(
        src.keyframes.contains(&start),
        "{what}: the first video packet (source packet {start}) is not a keyframe"
    );
    let short = src.hashes.video.len() - (start + played.video.len());
    assert!(
        short as f64 <= slack * common::FPS as f64,
        "{what}: video stopped {short} frames before the source's end"
    );
    // AAC at 44.1 kHz is 43 frames a second against 30 video frames; the
    // audio of a compressed join backlog (up to a GOP) is skipped.
    let min_audio = played.video.len().saturating_sub(GOP) * 13 / 10;
    let a = common::assert_run(
        &played.audio,
        &src.hashes.audio,
        min_audio,
        &format!("{what} (audio)"),
    );
    let short_audio = src.hashes.audio.len() - (a + played.audio.len());
    assert!(
        short_audio as f64 <= slack * 44100.0 / 1024.0,
        "{what}: audio stopped {short_audio} frames before the source's end"
    );
    if short + short_audio > 0 {
        println!("{what}: the last {short} video and {short_audio} audio frames did not arrive");
    }
    start
}

/// How many video frames after the first arrived stamped within 25 ms of
/// it (the hub compresses a join backlog into 20 ms; the next live frame
/// is 33 ms later), from framemd5 text.
fn compressed_backlog(framemd5: &str) -> usize {
    let tb = framemd5
        .lines()
        .find_map(|l| l.strip_prefix("#tb 0: "))
        .and_then(|t| t.trim().split_once('/'))
        .and_then(|(n, d)| Some(n.parse::<f64>().ok()? / d.parse::<f64>().ok()?))
        .unwrap_or(1.0 / 90000.0);
    let dts: Vec<f64> = framemd5
        .lines()
        .filter(|l| l.starts_with("0,"))
        .filter_map(|l| l.split(',').nth(1)?.trim().parse::<f64>().ok())
        .collect();
    dts.iter()
        .skip(1)
        .take_while(|d| (**d - dts[0]) * tb < 0.025)
        .count()
}

/// Wait until the stream is in the middle of a GOP, past `LATE_JOIN`
/// seconds, judged by the last frame a player has written to `md5` so far;
/// returns that frame's index in the source.
async fn wait_mid_gop(md5: &std::path::Path) -> usize {
    let src = source();
    for _ in 0..500 {
        let played = Hashes::read(md5);
        let at = played
            .video
            .last()
            .and_then(|h| src.hashes.video.iter().position(|s| s == h));
        if let Some(i) = at {
            if i >= LATE_JOIN * common::FPS && (5..=15).contains(&(i % GOP)) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the stream never reached {LATE_JOIN} s in {md5:?}");
}

async fn matrix_from(ingest: Proto, late: Proto, ffplay: Option<Proto>) {
    let _serial = SERIAL.lock().await;
    let src = source();
    let total = src.hashes.video.len();
    let node = Node::start(&["--reconnect-window", WINDOW]);
    let input = node.create_input().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest_name = ingest.name();

    let mut publisher = publish(&input, ingest);
    node.wait_connected(input.uid(), &mut publisher).await;

    let mut players = Vec::new();
    for proto in Proto::ALL {
        let out = dir.path().join(format!("{}.md5", proto.name()));
        players.push((proto, player(&input, proto, &out), out));
    }

    let rtmp_out = &players[0].2;
    let joined_at = wait_mid_gop(rtmp_out).await;
    let mut late_player = LateJoiner::spawn(&input, late);

    if let Some(p) = ffplay {
        ffplay_checks(&input, p, 4).await;
    }

    let st = publisher.wait(40.0).await;
    let left_at = Instant::now();
    let err = publisher.stderr().await;
    assert!(
        st.is_some_and(|s| s.success()),
        "{ingest_name} publisher: {st:?} {err}"
    );

    // End of stream: every player exits by itself after the window.
    let mut eos = Vec::new();
    for (proto, client, _) in players.iter_mut() {
        let st = client.wait(10.0).await;
        let after = left_at.elapsed();
        let log = client.stderr().await;
        assert!(
            st.is_some(),
            "{ingest_name} -> {}: the player did not get end of stream within 10 s after \
             the publisher left (window {WINDOW} s): {log}",
            proto.name()
        );
        let bad = errors_but_eof(&log);
        assert!(
            bad.is_empty(),
            "{ingest_name} -> {}: player errors {bad:?}",
            proto.name()
        );
        eos.push((proto.name(), after));
    }
    let st = late_player.client.wait(10.0).await;
    let late_log = late_player.client.stderr().await;
    assert!(
        st.is_some(),
        "late {} player: no end of stream: {late_log}",
        late.name()
    );
    let (first_at, late_text) = late_player.reader.await.expect("reader task");

    for (proto, after) in &eos {
        println!(
            "{ingest_name} -> {proto}: end of stream {:.2} s after the publisher left",
            after.as_secs_f64()
        );
        // ffmpeg closes its connection a little before its process exits
        // (hundreds of ms on a loaded machine): the bound is loose, yet an
        // end of stream that ignored the window would come at once.
        assert!(
            after.as_secs_f64() >= 0.3,
            "{ingest_name} -> {proto}: end of stream before the reconnect window ({after:?})"
        );
    }

    // What arrived, frame by frame.
    for (proto, _, out) in &players {
        let what = format!("{ingest_name} -> {}", proto.name());
        let played = Hashes::read(out);
        let start = check_arrived(&played, &what, total - 4 * GOP, tail_slack(ingest));
        println!(
            "{what}: {} video and {} audio packets identical to the source from keyframe {start}",
            played.video.len(),
            played.audio.len()
        );
    }

    // The late joiner.
    let what = format!("{ingest_name} -> late {}", late.name());
    let first_at =
        first_at.unwrap_or_else(|| panic!("{what}: no packet arrived ({st:?}): {late_log}"));
    let first_at = match late_player.raw_ts {
        Some(raw) => raw
            .await
            .expect("raw TS task")
            .unwrap_or_else(|e| panic!("{what}: srt-live-transmit: {e}")),
        None => first_at,
    };
    let ttff = first_at.duration_since(late_player.spawned);
    let played = Hashes::parse(&late_text);
    let start = check_arrived(&played, &what, total - 6 * GOP, tail_slack(ingest));
    assert!(
        start >= 2 * GOP,
        "{what}: joined at source frame {joined_at} but got the stream from source packet {start}"
    );
    let bad = errors_but_eof(&late_log);
    assert!(bad.is_empty(), "{what}: decode errors {bad:?}");
    let backlog = compressed_backlog(&late_text);
    println!(
        "{what}: joined at source frame {joined_at}, first packet (keyframe {start}, then \
         {backlog} frames of compressed backlog) after {:.0} ms, {} frames decoded without error",
        ttff.as_secs_f64() * 1000.0,
        played.video.len()
    );
    assert!(
        ttff < Duration::from_millis(1500),
        "{what}: first packet after {ttff:?}"
    );
}
