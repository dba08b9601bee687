//! The watch page in headless Chromium (tests/browser/play.mjs with
//! playwright-core from web/node_modules): playback starts, advances 10 s
//! without stalls, hls.js reports a latency under 3 s, and the page shows
//! the source's frames: at least 80% of its 25 frames/s presented
//! (requestVideoFrameCallback) and decoded (getVideoPlaybackQuality), no
//! more than 10% dropped, no frame held for longer than half a second.

mod hls_common;

/// Frame rate of the test clip (hls_common::make_clip).
const SOURCE_FPS: f64 = 25.0;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use banyan_egress::hls::{HlsConfig, HlsService};
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig};
use hls_common::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_page_plays_at_low_latency_in_chromium() {
    let root = repo_root();
    assert!(
        root.join("web/node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix web` (scripts/setup.sh does) before this test"
    );
    let dir = TempDir::new("browser");
    let clip = make_clip(dir.path(), 4);
    let hub = Hub::new(HubConfig::default());
    let views = Views::new();
    let svc = HlsService::new(hub.clone(), views, HlsConfig::default());
    let app = svc.router().route(
        "/{uid}/lifecycle",
        get(|| async { axum::Json(serde_json::json!({"isInput": true, "live": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Publish the clip in a loop, in real time, for at most 40 s.
    let uid = "fedcba9876543210fedcba9876543210";
    let mut publisher = hub.publish(uid).unwrap();
    publisher.set_info(Some(clip.video.clone()), Some(clip.audio.clone()));
    let frames = clip.frames.clone();
    let pusher = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        let span = 4 * 90_000;
        for lap in 0..10i64 {
            for f in &frames {
                let mut f = f.clone();
                f.dts += lap * span;
                f.pts += lap * span;
                let at = t0 + Duration::from_micros(f.dts as u64 * 1000 / 90);
                tokio::time::sleep_until(at).await;
                publisher.push(f);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let url = format!("http://{addr}/{uid}/watch");
    let page = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let started = Instant::now();
            let child = Command::new("node")
                .arg(root.join("tests/browser/play.mjs"))
                .args([url.as_str(), "--seconds", "10", "--max-latency", "3"])
                .args(["--timeout", "30"])
                .args(["--min-fps", &(SOURCE_FPS * 0.8).to_string()])
                .args(["--max-dropped", "0.1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("node runs");
            let guard = ChildGuard(child);
            let out = wait_with_output(guard, Duration::from_secs(60));
            (out, started.elapsed())
        }
    })
    .await
    .unwrap();
    let ((ok, stdout, stderr), took) = page;
    pusher.abort();
    server.abort();
    eprintln!("play.mjs ({took:?}): {stdout}\n{stderr}");
    assert!(ok, "watch page playback failed: {stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(v["ok"], true);
    assert!(v["playedSeconds"].as_f64().unwrap() >= 10.0);
    assert!(v["maxLatency"].as_f64().unwrap() < 3.0);
    let presented = v["presentedFps"]
        .as_f64()
        .expect("presented frames counted");
    let decoded = v["decodedFps"].as_f64().expect("decoded frames counted");
    let dropped = v["droppedFrames"].as_f64().unwrap();
    let total = v["decodedFrames"].as_f64().unwrap();
    let gap = v["maxFrameGapMs"].as_f64().unwrap();
    assert!(
        (SOURCE_FPS * 0.8..=SOURCE_FPS * 1.2).contains(&presented),
        "{presented} frames/s presented for a {SOURCE_FPS} frames/s source"
    );
    assert!(decoded >= SOURCE_FPS * 0.8, "{decoded} frames/s decoded");
    assert!(
        dropped <= 0.1 * total,
        "{dropped} of {total} frames dropped"
    );
    assert!(gap <= 500.0, "a frame was held for {gap} ms");
}

/// Wait for the guarded child (bounded), returning success and its output.
fn wait_with_output(mut g: ChildGuard, limit: Duration) -> (bool, String, String) {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = g.0.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = g.0.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = g.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.is_some_and(|s| s.success()), out, err)
}
