//! VLC plays SRT and RTMP from the real binary.
//!
//! ffmpeg publishes the source clip over RTMP; two VLCs (`cvlc`, run as the
//! unprivileged user `nobody` when the tests run as root, since VLC refuses
//! root) play it at once, one
//! over SRT and one over RTMP, for 6 s each, writing what they receive to
//! an MPEG-TS file. Each file must hold an H.264 stream of enough frames
//! whose slices are a contiguous run of the source's from a keyframe, and
//! AAC audio.
//!
//! `cargo test --test vlc -- --nocapture`
//!
//! Skipped, saying so, only when `cvlc` is not installed.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{publish, source, Client, Hashes, Input, Node, Proto, FRAMEMD5_ARGS};
use tokio::process::Command;

/// Seconds each VLC plays.
const RUN_TIME: u64 = 6;

fn have_cvlc() -> bool {
    std::process::Command::new("cvlc")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// VLC refuses to run as root: as root, run it as `nobody`.
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn vlc(input: &Input, proto: Proto, out: &Path) -> Client {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    c.args(["-I", "dummy"])
        .args(["--run-time", &RUN_TIME.to_string(), "--play-and-exit"])
        .arg(input.play_url(proto))
        .arg("--sout")
        .arg(format!("#std{{access=file,mux=ts,dst={}}}", out.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Client::spawn(c, &format!("VLC over {}", proto.name()))
}

/// ffprobe: (codec name, packet count) of every stream of `file`.
fn probe(file: &Path) -> Vec<(String, usize)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_packets"])
        .args(["-show_entries", "stream=codec_name,nb_read_packets"])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (c, n) = l.trim().split_once(',')?;
            Some((c.to_string(), n.trim_end_matches(',').parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlc_plays_srt_and_rtmp() {
    if !have_cvlc() {
        eprintln!("SKIPPED vlc_plays_srt_and_rtmp: cvlc is not installed (apt-get install vlc-bin vlc-plugin-base vlc-plugin-access-extra)");
        return;
    }
    let src = source();
    let node = Node::start(&[]);
    let input = node.create_input().await;
    let dir = common::world_writable_dir();
    let mut publisher = publish(&input, Proto::Rtmp);
    node.wait_connected(input.uid(), &mut publisher).await;

    let mut players = Vec::new();
    for proto in [Proto::Srt, Proto::Rtmp] {
        let out = dir.path().join(format!("{}.ts", proto.name()));
        players.push((proto, vlc(&input, proto, &out), out));
    }
    for (proto, client, out) in players.iter_mut() {
        let st = client.wait((RUN_TIME + 15) as f64).await;
        let log = client.stderr().await;
        let what = format!("VLC over {}", proto.name());
        assert!(st.is_some(), "{what} did not stop after --run-time: {log}");
        let streams = probe(out);
        let video = streams.iter().find(|(c, _)| c == "h264");
        let frames = video.map(|v| v.1).unwrap_or(0);
        assert!(
            frames > 90,
            "{what}: {frames} H.264 frames in its output ({streams:?}): {log}"
        );
        assert!(
            streams.iter().any(|(c, n)| c == "aac" && *n > 90),
            "{what}: no AAC audio in its output ({streams:?})"
        );
        // What it received, frame by frame.
        let md5 = dir.path().join(format!("{}.md5", proto.name()));
        let st = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(&*out)
            .args(["-map", "0:v"])
            .args(&FRAMEMD5_ARGS[4..])
            .arg(&md5)
            .status()
            .expect("ffmpeg runs");
        assert!(st.success(), "{what}: hashes of its output");
        let played = Hashes::read(&md5);
        let start = common::assert_run(&played.video, &src.hashes.video, 90, &what);
        assert!(
            src.keyframes.contains(&start),
            "{what}: its first frame (source frame {start}) is not a keyframe"
        );
        println!(
            "{what}: {} H.264 frames identical to the source from keyframe {start}",
            played.video.len()
        );
    }
    drop(publisher);
}
