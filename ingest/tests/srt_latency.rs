//! Relay-added latency, SRT in and SRT out, side by side with
//! srt-live-transmit as a relay and with one direct SRT hop, on one stream.
//!
//! A caller publishes a real-time transport stream (paced by its video
//! PTS); a caller player reads. Latency of a frame = when the last message
//! carrying part of its video PES was received minus when that part was
//! sent, matched by PTS (a frame is usable only once complete). Frames of
//! the first two seconds (join, backlog) are left out. All hops use 120 ms
//! SRT latency.
//!
//! Run: `cargo test -p banyan-ingest --release --test srt_latency -- --ignored --nocapture`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banyan_ingest::srt::{serve, SrtConfig};
use banyan_ingest::Context;
use banyan_relay::access::{Direction, Grant, KeyEntry, KeyTable};
use banyan_relay::StreamState;
use banyan_srt::{MsgCtrl, Socket};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const PUB_PASS: &str = "publish-secret-0123";
const PLAY_PASS: &str = "playback-secret-4567";
const LATENCY: Duration = Duration::from_millis(120);
const SECONDS: u64 = 8;

fn source() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("banyan-srt-lat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ts = dir.join("src.ts");
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &(SECONDS + 1).to_string(), "-c:v", "libx264"])
        .args([
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-bf",
            "0",
        ])
        .args(["-bsf:v", "dump_extra=freq=keyframe", "-c:a", "aac"])
        .args(["-f", "mpegts"])
        .arg(&ts)
        .status()
        .expect("ffmpeg");
    assert!(st.success());
    ts
}

/// PTS of a video PES starting in this packet (PID 0x100), if any.
fn video_pts(p: &[u8]) -> Option<i64> {
    if p.len() < 188 || p[0] != 0x47 || p[1] & 0x40 == 0 {
        return None;
    }
    let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
    if pid != 0x100 {
        return None;
    }
    let mut off = 4;
    if p[3] & 0x20 != 0 {
        off += 1 + usize::from(p[4]);
    }
    let h = p.get(off..off + 14)?;
    if h[..3] != [0, 0, 1] || h[7] & 0x80 == 0 {
        return None;
    }
    let t = &h[9..14];
    Some(
        (i64::from(t[0] >> 1) & 7) << 30
            | i64::from(t[1]) << 22
            | (i64::from(t[2]) >> 1) << 15
            | i64::from(t[3]) << 7
            | i64::from(t[4]) >> 1,
    )
}

/// When the last message carrying part of each video PES passed, by PTS:
/// a frame is usable only once complete.
#[derive(Default)]
struct Tracker {
    cur: Option<i64>,
    times: HashMap<i64, Instant>,
}

impl Tracker {
    fn see(&mut self, msg: &[u8], now: Instant) {
        for p in msg.chunks(188) {
            if p.len() < 4 || (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) != 0x100 {
                continue;
            }
            if let Some(pts) = video_pts(p) {
                self.cur = Some(pts);
            }
            if let Some(c) = self.cur {
                self.times.insert(c, now);
            }
        }
    }
}

fn caller(addr: SocketAddr, stream_id: Option<&str>, pass: Option<&str>) -> Socket {
    for _ in 0..50 {
        let s = Socket::new().expect("socket");
        s.set_latency(LATENCY).expect("latency");
        if let Some(id) = stream_id {
            s.set_str(banyan_srt::sys::SRTO_STREAMID, id).expect("sid");
        }
        if let Some(p) = pass {
            s.set_passphrase(p).expect("pass");
        }
        if s.connect(addr).is_ok() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("cannot connect to {addr}");
}

/// Publish the file in real time; returns PTS -> when the frame was
/// completely sent.
fn publish(sock: Socket, data: Vec<u8>, stop: Instant) -> HashMap<i64, Instant> {
    let mut sent = Tracker::default();
    let start = Instant::now();
    let mut pts0 = None;
    for msg in data.chunks(1316) {
        let pts = msg.chunks(188).find_map(video_pts);
        if let Some(pts) = pts {
            let p0 = *pts0.get_or_insert(pts);
            let due = start + Duration::from_micros(((pts - p0).max(0) as u64) * 1000 / 90);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        if Instant::now() > stop {
            break;
        }
        let now = Instant::now();
        if sock.send(msg, &mut MsgCtrl::default()).is_err() {
            break;
        }
        sent.see(msg, now);
    }
    sent.times
}

/// Read until `stop`; returns PTS -> when the frame was complete.
fn receive(sock: Socket, stop: Instant) -> HashMap<i64, Instant> {
    sock.set_i32(banyan_srt::sys::SRTO_RCVTIMEO, 200)
        .expect("timeout");
    let mut got = Tracker::default();
    let mut buf = [0u8; 1500];
    while Instant::now() < stop {
        match sock.recv(&mut buf, &mut MsgCtrl::default()) {
            Ok(n) => got.see(&buf[..n], Instant::now()),
            Err(banyan_srt::SrtError::WouldBlock { .. }) => {}
            Err(_) => break,
        }
    }
    got.times
}

fn summary(name: &str, sent: &HashMap<i64, Instant>, got: &HashMap<i64, Instant>) -> (f64, f64) {
    let first = sent.values().min().copied().expect("frames sent");
    let cutoff = first + Duration::from_secs(2);
    let mut lat: Vec<f64> = got
        .iter()
        .filter_map(|(pts, r)| {
            sent.get(pts)
                .filter(|s| **s >= cutoff)
                .map(|s| r.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    assert!(lat.len() >= 20, "{name}: only {} frames matched", lat.len());
    let q = |f: f64| lat[((lat.len() as f64 - 1.0) * f) as usize];
    println!(
        "{name:<28} frames {:>4}  p50 {:>6.1} ms  p95 {:>6.1} ms",
        lat.len(),
        q(0.5),
        q(0.95)
    );
    (q(0.5), q(0.95))
}

/// Publisher and player threads against `pub_addr` / `play_addr`.
fn run(
    pub_sock: impl FnOnce() -> Socket + Send + 'static,
    play_sock: impl FnOnce() -> Socket + Send + 'static,
    data: Vec<u8>,
) -> (HashMap<i64, Instant>, HashMap<i64, Instant>) {
    let stop = Instant::now() + Duration::from_secs(SECONDS + 3);
    let p = std::thread::spawn(move || publish(pub_sock(), data, stop));
    std::thread::sleep(Duration::from_millis(700));
    let r = std::thread::spawn(move || receive(play_sock(), stop));
    (p.join().expect("publisher"), r.join().expect("player"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn relay_added_latency() {
    let data = std::fs::read(source()).expect("source");

    // One direct hop: publisher -> listener that is the player.
    let lsn = Socket::new().expect("socket");
    lsn.set_latency(LATENCY).expect("latency");
    lsn.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    lsn.listen(1).expect("listen");
    let direct = lsn.local_addr().expect("addr");
    let d = data.clone();
    let (sent, got) = tokio::task::spawn_blocking(move || {
        run(
            move || caller(direct, None, None),
            move || lsn.accept().expect("accept").0,
            d,
        )
    })
    .await
    .expect("direct");
    let (direct50, direct95) = summary("direct (one SRT hop)", &sent, &got);

    // The SRT driver thread alone: publisher to the tokio side of the channel.
    {
        use banyan_srt::server::{Channel, Decision, Mode, Server, ServerConfig};
        let gate = |_: &str| Decision::Accept {
            mode: Mode::Receive,
            passphrase: None,
        };
        let (server, mut incoming) = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
            Arc::new(gate),
        )
        .expect("server");
        let addr = server.local_addr();
        let recv = tokio::spawn(async move {
            let mut got = HashMap::new();
            let Some(inc) = incoming.recv().await else {
                return got;
            };
            let Channel::Receiver(mut rx) = inc.channel else {
                return got;
            };
            let mut t = Tracker::default();
            while let Some(msg) = rx.recv().await {
                t.see(&msg, Instant::now());
            }
            got.extend(t.times);
            got
        });
        let d = data.clone();
        let stop = Instant::now() + Duration::from_secs(4);
        let sent =
            tokio::task::spawn_blocking(move || publish(caller(addr, Some("x"), None), d, stop))
                .await
                .expect("publish");
        drop(server);
        let got = recv.await.expect("recv");
        summary("publisher -> srt thread", &sent, &got);
    }

    // Banyan as the relay.
    let keys = Arc::new(KeyTable::new());
    keys.replace(
        [(Direction::Publish, PUB_PASS), (Direction::Play, PLAY_PASS)].map(|(direction, pass)| {
            KeyEntry {
                rtmp_key: format!("k-{direction:?}"),
                srt_passphrase: pass.into(),
                whip_key: None,
                grant: Grant {
                    uid: "lat".into(),
                    account: "a".into(),
                    direction,
                    enabled: true,
                },
            }
        }),
    );
    let ctx = Context::standalone(keys);
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let node = serve(
        "127.0.0.1:0".parse().unwrap(),
        SrtConfig {
            receive_tsbpd: std::env::var("BANYAN_RECEIVE_TSBPD").is_ok(),
            ..SrtConfig::default()
        },
        ctx.clone(),
        shutdown.clone(),
    )
    .await
    .expect("listener");
    // Also time frames into the hub: publisher to node.
    let mut sub = ctx.hub.subscribe("lat", Default::default());
    let hub_times = tokio::spawn(async move {
        let mut got = HashMap::new();
        let stop = tokio::time::Instant::now() + Duration::from_secs(SECONDS + 3);
        while let Ok(item) = tokio::time::timeout_at(stop, sub.recv()).await {
            if let banyan_relay::Item::Frame(f) = item {
                if f.track == banyan_relay::Track::Video {
                    got.insert(f.pts, Instant::now());
                }
            }
        }
        got
    });
    let d = data.clone();
    let (sent, got) = tokio::task::spawn_blocking(move || {
        run(
            move || caller(node, Some("lat"), Some(PUB_PASS)),
            move || caller(node, Some("playlat"), Some(PLAY_PASS)),
            d,
        )
    })
    .await
    .expect("banyan");
    assert_ne!(ctx.hub.state("lat"), StreamState::Live, "publisher gone");
    let (banyan50, banyan95) = summary("banyan relay", &sent, &got);
    let hub_got = hub_times.await.expect("hub times");
    summary("publisher -> banyan hub", &sent, &hub_got);

    // srt-live-transmit as the relay.
    let port = |s: &std::net::UdpSocket| s.local_addr().unwrap().port();
    let (a, b) = {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        (port(&a), port(&b))
    };
    let _slt = Command::new("srt-live-transmit")
        .args(["-a:yes", "-q"])
        .arg(format!("srt://127.0.0.1:{a}?mode=listener&latency=120"))
        .arg(format!("srt://127.0.0.1:{b}?mode=listener&latency=120"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pa: SocketAddr = format!("127.0.0.1:{a}").parse().unwrap();
    let pb: SocketAddr = format!("127.0.0.1:{b}").parse().unwrap();
    let (sent, got) = tokio::task::spawn_blocking(move || {
        run(
            move || caller(pa, None, None),
            move || caller(pb, None, None),
            data,
        )
    })
    .await
    .expect("slt");
    let (slt50, slt95) = summary("srt-live-transmit relay", &sent, &got);

    println!(
        "relay-added p50/p95: banyan {:.1}/{:.1} ms, srt-live-transmit {:.1}/{:.1} ms",
        banyan50 - direct50,
        banyan95 - direct95,
        slt50 - direct50,
        slt95 - direct95
    );
    assert!(banyan50 - direct50 < 40.0, "banyan adds too much latency");
}
