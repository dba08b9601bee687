//! Several SRT players of one stream share one TS mux: with real
//! srt-live-transmit players joining at different times, each gets a
//! decodable run of the source's frames, the hub holds one subscriber for
//! all of them, and once live their streams are byte for byte the same TS
//! packets (continuity counters included).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use banyan_ingest::srt::{serve, SrtConfig};
use banyan_ingest::Context;
use banyan_relay::access::{Direction, Grant, KeyEntry, KeyTable};
use banyan_relay::StreamState;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(direction: Direction) -> KeyEntry {
    KeyEntry {
        rtmp_key: format!("rtmp-{direction:?}"),
        srt_passphrase: String::new(),
        whip_key: None,
        grant: Grant {
            uid: "sh1".to_string(),
            account: "acc".to_string(),
            direction,
            enabled: true,
        },
    }
}

fn run(c: &mut std::process::Command, what: &str) {
    let st = c.status().expect("ffmpeg runs");
    assert!(st.success(), "{what}");
}

fn hashes_of(input: &Path, out: &Path) -> Vec<String> {
    run(
        std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(input)
            .args(["-map", "0:v", "-c", "copy", "-bsf:v"])
            .args(["filter_units=remove_types=6|7|8|9", "-f", "framemd5"])
            .arg(out),
        "framemd5",
    );
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(5).map(|h| h.trim().to_string()))
        .collect()
}

fn player(addr: SocketAddr, out: &Path) -> Child {
    let file = std::fs::File::create(out).expect("output file");
    Command::new("srt-live-transmit")
        .arg("-q")
        .arg(format!("srt://{addr}?streamid=playsh1"))
        .arg("file://con")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit player")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_joining_apart_get_the_same_packets_from_one_mux() {
    let dir = Dir(std::env::temp_dir().join(format!("banyan-srt-shared-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let src = dir.0.join("src.ts");
    run(
        std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "10", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-tune", "zerolatency", "-g", "25", "-bf", "0"])
            .args(["-c:a", "aac", "-b:a", "64k", "-f", "mpegts"])
            .arg(&src),
        "source encode",
    );
    let reference = hashes_of(&src, &dir.0.join("src.md5"));

    let keys = Arc::new(KeyTable::new());
    keys.replace(vec![entry(Direction::Publish), entry(Direction::Play)]);
    let ctx = Context::standalone(keys);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        SrtConfig::default(),
        ctx.clone(),
        shutdown.clone(),
    )
    .await
    .expect("srt listener");

    let _publisher = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-i",
        ])
        .arg(&src)
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(format!("srt://{addr}?streamid=sh1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg publisher");
    for _ in 0..100 {
        if ctx.hub.state("sh1") == StreamState::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ctx.hub.state("sh1"), StreamState::Live, "never went live");
    tokio::time::sleep(Duration::from_millis(600)).await;

    let outs: Vec<PathBuf> = (0..3).map(|i| dir.0.join(format!("p{i}.ts"))).collect();
    let mut players = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        players.push(player(addr, out));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Three players, one subscriber of the stream: the shared packetizer.
    assert_eq!(ctx.hub.subscribers("sh1"), 1);
    for p in &mut players {
        let _ = p.start_kill();
    }
    for p in &mut players {
        let _ = tokio::time::timeout(Duration::from_secs(5), p.wait()).await;
    }

    let mut data = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        let mut played = hashes_of(out, &dir.0.join(format!("p{i}.md5")));
        // Stopped mid-frame: the last frame may be cut short.
        played.pop();
        assert!(played.len() >= 40, "player {i}: {} frames", played.len());
        let start = reference
            .iter()
            .position(|h| *h == played[0])
            .unwrap_or_else(|| panic!("player {i}: first frame not in the source"));
        for (k, h) in played.iter().enumerate() {
            assert_eq!(Some(h), reference.get(start + k), "player {i}: frame {k}");
        }
        let bytes = std::fs::read(out).expect("output");
        assert!(
            bytes.chunks(188).all(|p| p[0] == 0x47),
            "player {i}: TS packets from the start ({} bytes)",
            bytes.len()
        );
        data.push(bytes);
    }
    // A second of the last joiner's stream, from its middle, appears verbatim
    // in the others' streams.
    let last = &data[2];
    let at = (last.len() / 2) / 188 * 188;
    let window = &last[at..(at + 188 * 200).min(last.len())];
    assert!(window.len() >= 188 * 100, "too little played");
    for (i, d) in data[..2].iter().enumerate() {
        assert!(
            d.windows(window.len()).any(|w| w == window),
            "player {i} did not get the same packets"
        );
    }
}
