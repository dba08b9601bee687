//! The HLS service over HTTP: a stream pushed into a Hub in real time,
//! served by the router on 127.0.0.1, played by ffmpeg frame-exactly, with
//! blocking reload, ranges, CORS, 404s and viewer sessions checked.

mod hls_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banyan_egress::hls::{HlsConfig, HlsService};
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig};
use hls_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, k: &str) -> &str {
        self.headers.get(k).map_or("", String::as_str)
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
async fn http(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(p) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..p]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[p + 2 + n + 2..];
    }
}

fn part_count(list: &str) -> usize {
    list.lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_the_live_stream_and_ll_hls_rules_hold() {
    let dir = TempDir::new("http");
    let clip = make_clip(dir.path(), 8);
    let hub = Hub::new(HubConfig {
        reconnect_window: Duration::ZERO,
        ..HubConfig::default()
    });
    let views = Views::new();
    let svc = HlsService::new(hub.clone(), views.clone(), HlsConfig::default());
    let app = svc.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Publish in real time.
    let uid = "0123456789abcdef0123456789abcdef";
    let mut publisher = hub.publish(uid).unwrap();
    publisher.set_info(Some(clip.video.clone()), Some(clip.audio.clone()));
    let frames = clip.frames.clone();
    let pusher = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        for f in frames {
            let at = t0 + Duration::from_micros((f.dts.max(0) as u64) * 1000 / 90);
            tokio::time::sleep_until(at).await;
            publisher.push(f);
        }
        drop(publisher);
    });

    // Unknown streams are 404.
    let r = http(
        addr,
        "GET",
        "/ffffffffffffffffffffffffffffffff/manifest/video.m3u8",
        &[],
    )
    .await;
    assert_eq!(r.status, 404);

    // Multivariant playlist.
    let r = http(addr, "GET", &format!("/{uid}/manifest/video.m3u8"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(r.header("access-control-allow-origin"), "*");
    let mv = r.text();
    let codecs = format!("CODECS=\"{},mp4a.40.2\"", clip.video.codec);
    assert!(mv.contains(&codecs), "{mv}");
    assert!(mv.contains("RESOLUTION=320x240"), "{mv}");
    assert!(mv.contains("CLOSED-CAPTIONS=NONE"), "{mv}");
    assert!(mv.contains("BANDWIDTH="), "{mv}");
    let media_uri = mv
        .lines()
        .find(|l| l.starts_with("media.m3u8?s="))
        .expect("media playlist URI with a session")
        .to_string();
    let media_path = format!("/{uid}/manifest/{media_uri}");

    // Media playlist: LL-HLS tags.
    let r = http(addr, "GET", &media_path, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), "public, max-age=1");
    let list = r.text();
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-TARGETDURATION:",
        "#EXT-X-PART-INF:PART-TARGET=0.333",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999",
        "#EXT-X-MEDIA-SEQUENCE:",
        "#EXT-X-MAP:URI=\"init-",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "INDEPENDENT=YES",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-",
    ] {
        assert!(list.contains(tag), "{tag} missing in\n{list}");
    }
    assert_eq!(svc.viewers(uid), 1);
    assert_eq!(views.live(uid), 1);

    // Blocking reload: ask for the part after the newest one.
    let live_msn: u64 = {
        let seq: u64 = list
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap();
        seq + list.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64
    };
    let after_last = list
        .rsplit("#EXTINF")
        .next()
        .map_or(0, |tail| tail.matches("#EXT-X-PART:").count()) as u64;
    let before = part_count(&list);
    let t = Instant::now();
    let r = http(
        addr,
        "GET",
        &format!("{media_path}&_HLS_msn={live_msn}&_HLS_part={after_last}"),
        &[],
    )
    .await;
    let waited = t.elapsed();
    assert_eq!(r.status, 200);
    let blocked = r.text();
    let hint = format!("part-{}", {
        // The hint of the first answer names the part we waited for.
        let l = list
            .lines()
            .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
            .unwrap();
        l.split("part-")
            .nth(1)
            .unwrap()
            .trim_end_matches(".m4s\"")
            .to_string()
    });
    assert!(
        blocked.contains(&format!("URI=\"{hint}.m4s\"")),
        "the awaited part is listed:\n{blocked}"
    );
    assert!(
        part_count(&blocked) >= before
            || blocked.matches("#EXTINF").count() > list.matches("#EXTINF").count(),
        "the answer moved forward"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "answered as soon as the part existed: {waited:?}"
    );
    // A request far in the future is refused.
    let r = http(
        addr,
        "GET",
        &format!("{media_path}&_HLS_msn={}", live_msn + 50),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);

    // The hinted part, then a single range of it.
    let next_hint = blocked
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_string();
    let t = Instant::now();
    let r = http(addr, "GET", &format!("/{uid}/manifest/{next_hint}"), &[]).await;
    assert_eq!(r.status, 200, "a preload hint request waits for its part");
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert_eq!(r.header("content-type"), "video/iso.segment");
    assert!(r.header("cache-control").contains("immutable"));
    let full = r.body.clone();
    assert_eq!(&full[4..8], b"moof");
    let r = http(
        addr,
        "GET",
        &format!("/{uid}/manifest/{next_hint}"),
        &[("Range", "bytes=0-99")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, full[..100]);
    assert_eq!(
        r.header("content-range"),
        format!("bytes 0-99/{}", full.len())
    );

    // CORS preflight.
    let r = http(
        addr,
        "OPTIONS",
        &format!("/{uid}/manifest/video.m3u8"),
        &[
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), "*");

    // ffmpeg plays the stream until its end; its frames are the source's.
    let out = dir.path().join("got.md5");
    let url = format!("http://{addr}/{uid}/manifest/video.m3u8");
    let mut ff = ChildGuard(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-i", &url, "-map", "0:v", "-f", "framemd5"])
            .arg(&out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = ff.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "ffmpeg ended with the stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success());
    let got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_string()))
        .collect();
    let src = framemd5(clip.h264.to_str().unwrap(), "0:v", &[]);
    assert!(got.len() >= 50, "ffmpeg received {} frames", got.len());
    let at = find_run(&src, &got).expect("received frames are a contiguous run of the source");
    assert_eq!(at % 25, 0, "playback starts at a keyframe");
    assert_eq!(at + got.len(), src.len(), "played to the end of the stream");

    // The end is clean.
    let r = http(addr, "GET", &media_path, &[]).await;
    assert!(r.text().ends_with("#EXT-X-ENDLIST\n"), "{}", r.text());
    // Delivered media time was accounted for the session.
    let drained = views.drain();
    let secs: f64 = drained.iter().map(|d| d.2).sum();
    assert!(secs > 1.0, "delivered {secs} s");

    pusher.await.unwrap();
    server.abort();
}
