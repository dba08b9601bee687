//! LL-HLS against the binary with a real player (ffmpeg), at the two ends
//! of a broadcast:
//!
//! - The HLS muxer starts on the first request, on the hub's cached group
//!   of pictures, which reaches it at once. Each segment's
//!   `EXT-X-PROGRAM-DATE-TIME` still follows the one before by exactly its
//!   duration, and the newest media is dated now.
//! - The publisher leaves while the stream waits 30 s for it to come back:
//!   the open part and segment are closed at once, so an ffmpeg HLS player
//!   has every frame up to the source's last within a few seconds, long
//!   before the stream ends (no `EXT-X-ENDLIST` yet).
//! - A broadcast with no video gets an audio-only variant that ffmpeg plays.

mod common;

use std::time::Duration;

use common::{ffmpeg, publish, source, Client, Hashes, Node, Proto, FRAMEMD5_ARGS};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `(program date time, EXTINF seconds)` of each complete segment of a
/// media playlist, in order, and the parts' seconds of the open one.
fn dated_segments(list: &str) -> (Vec<(OffsetDateTime, f64)>, f64) {
    let mut out = Vec::new();
    let mut at = None;
    let mut parts = 0.0;
    for l in list.lines() {
        if let Some(t) = l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            at = Some(OffsetDateTime::parse(t, &Rfc3339).expect("an RFC 3339 time"));
            parts = 0.0;
        } else if let Some(d) = l.strip_prefix("#EXT-X-PART:DURATION=") {
            parts += d.split(',').next().unwrap().parse::<f64>().unwrap();
        } else if let Some(d) = l.strip_prefix("#EXTINF:") {
            let secs: f64 = d.trim_end_matches(',').parse().unwrap();
            out.push((at.take().expect("a date before EXTINF"), secs));
        }
    }
    (out, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_dates_follow_the_clock_and_the_tail_arrives_when_the_publisher_leaves() {
    let src = source();
    let node = Node::start(&["--reconnect-window", "30"]);
    let input = node.create_input().await;
    let uid = input.uid().to_string();
    let url = format!("http://{}/{uid}/manifest/video.m3u8", node.addr("http"));
    let mut publisher = publish(&input, Proto::Rtmp);
    node.wait_connected(&uid, &mut publisher).await;
    // Mid-GOP: the muxer starts on a replayed group of pictures.
    tokio::time::sleep(Duration::from_millis(2_400)).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("hls.md5");
    let mut c = ffmpeg();
    c.args(["-i", &url]).args(FRAMEMD5_ARGS).arg(&out);
    let mut player = Client::spawn(c, "HLS player");

    // Dates, once a few segments are complete, in the media playlist the
    // multivariant one names (with this viewer's session).
    let http = reqwest::Client::new();
    let multivariant = http.get(&url).send().await.unwrap().text().await.unwrap();
    let media = multivariant
        .lines()
        .find(|l| l.starts_with("media.m3u8"))
        .unwrap_or_else(|| panic!("no media playlist in\n{multivariant}"));
    let media = format!("http://{}/{uid}/manifest/{media}", node.addr("http"));
    let mut checked = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list = http.get(&media).send().await.unwrap().text().await.unwrap();
        let (segs, parts) = dated_segments(&list);
        if segs.len() < 4 {
            continue;
        }
        for (i, w) in segs.windows(2).enumerate() {
            let apart = (w[1].0 - w[0].0).as_seconds_f64();
            assert!(
                (apart - w[0].1).abs() < 0.05,
                "segment {i} is dated {apart:.3} s before the next but lasts {:.3} s:\n{list}",
                w[0].1
            );
        }
        let (last_at, last_len) = segs[segs.len() - 1];
        let edge = last_at + time::Duration::seconds_f64(last_len + parts);
        let behind = (OffsetDateTime::now_utc() - edge).as_seconds_f64();
        assert!(
            (-0.5..1.5).contains(&behind),
            "the newest media is dated {behind:.3} s before now:\n{list}"
        );
        checked = true;
        break;
    }
    assert!(checked, "four segments were never listed");

    let st = publisher.wait(40.0).await;
    assert!(st.is_some_and(|s| s.success()), "publisher: {st:?}");
    // Within a few seconds of the publisher leaving, the player has the
    // source's last frame, and the stream has not ended.
    let want = src.hashes.video.last().unwrap().clone();
    let mut got_last = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Hashes::read(&out).video.last() == Some(&want) {
            got_last = true;
            break;
        }
    }
    let list = http.get(&media).send().await.unwrap().text().await.unwrap();
    assert!(
        !list.contains("#EXT-X-ENDLIST"),
        "the stream waits:\n{list}"
    );
    let played = Hashes::read(&out);
    assert!(
        got_last,
        "4 s after the publisher left, the HLS player's last of {} frames is not the \
         source's last:\n{list}",
        played.video.len()
    );
    let start = common::assert_run(
        &played.video,
        &src.hashes.video,
        src.hashes.video.len() / 2,
        "HLS player",
    );
    assert_eq!(
        start + played.video.len(),
        src.hashes.video.len(),
        "a contiguous run to the end"
    );
    player.stop().await;
}

/// A broadcast with no video (ffmpeg publishing only AAC over RTMP) is
/// served over HLS too: an audio-only variant, and ffmpeg plays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_broadcast_plays_over_hls() {
    let node = Node::start(&[]);
    let input = node.create_input().await;
    let uid = input.uid().to_string();
    let url = format!("http://{}/{uid}/manifest/video.m3u8", node.addr("http"));
    let mut c = ffmpeg();
    c.args([
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
    ])
    .args(["-t", "10", "-c:a", "aac", "-b:a", "64k", "-f", "flv"])
    .arg(input.publish_url(Proto::Rtmp));
    let mut publisher = Client::spawn(c, "audio-only RTMP publisher");
    node.wait_connected(&uid, &mut publisher).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let multivariant = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        multivariant.contains("CODECS=\"mp4a.40.2\"") && !multivariant.contains("RESOLUTION"),
        "an audio-only variant:\n{multivariant}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("audio.md5");
    let mut c = ffmpeg();
    c.args(["-i", &url, "-map", "0:a", "-c", "copy", "-f", "framemd5"])
        .args(["-flush_packets", "1"])
        .arg(&out);
    let mut player = Client::spawn(c, "HLS player");
    // About 8 s of the broadcast remain: at 44.1 kHz, 43 AAC frames a
    // second; at least 4 s of them must arrive.
    let mut frames = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        frames = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count();
        if frames >= 4 * 43 {
            break;
        }
    }
    let log = player.stderr().await;
    assert!(frames >= 4 * 43, "{frames} AAC frames arrived: {log}");
    player.stop().await;
    publisher.stop().await;
}
