//! Hostile tests' parts: nodes, a fresh HTTP client, a TCP proxy that throttles a publisher to one
//! byte a second, an SRT caller through the binding, the video steps of what a player wrote, and a
//! reader that waits for given bytes.

#![allow(dead_code)]

use crate::reliab::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    Node::start(&dir.join("data"), &dir.join("node.log"), extra)
}

pub fn http_client_fresh() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// A TCP proxy in front of the node's RTMP port that forwards the client's
/// bytes at full speed until `throttle` is set, then one byte per second.
/// Returns the address to publish to and a handle telling when the node
/// closed the upstream side.
pub async fn throttling_proxy(
    upstream: String,
    throttle: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (String, tokio::task::JoinHandle<Option<Instant>>) {
    use std::sync::atomic::Ordering;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = l.local_addr().expect("proxy addr").to_string();
    let h = tokio::spawn(async move {
        let (client, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
            .await
            .ok()?
            .ok()?;
        let server = TcpStream::connect(&upstream).await.ok()?;
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        // Node to client: at full speed; its end is the node closing.
        let down = tokio::spawn(async move {
            let mut b = vec![0u8; 64 << 10];
            loop {
                match sr.read(&mut b).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(n) => {
                        let _ = cw.write_all(&b[..n]).await;
                    }
                }
            }
        });
        let up = tokio::spawn(async move {
            let mut b = vec![0u8; 64 << 10];
            loop {
                let n = match cr.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for chunk in b[..n].chunks(if throttle.load(Ordering::Relaxed) {
                    1
                } else {
                    n
                }) {
                    if sw.write_all(chunk).await.is_err() {
                        return;
                    }
                    if throttle.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let closed = tokio::time::timeout(Duration::from_secs(40), down).await;
        up.abort();
        closed.ok().and_then(|r| r.ok())
    });
    (addr, h)
}

/// An SRT caller through the binding: connected, or the reject code the
/// listener answered with.
pub fn srt_call(addr: &str, stream_id: &str, passphrase: &str) -> Result<banyan_srt::Socket, i32> {
    let s = banyan_srt::Socket::new().expect("srt socket");
    s.set_str(banyan_srt::sys::SRTO_STREAMID, stream_id)
        .expect("stream id");
    s.set_passphrase(passphrase).expect("passphrase");
    match s.connect(addr.parse().expect("srt address")) {
        Ok(()) => Ok(s),
        Err(_) => Err(s.reject_reason()),
    }
}

/// Video packets of a framemd5 file and the longest step between two
/// successive ones, in seconds (read from the file's `#tb 0:` line).
pub fn video_steps(path: &std::path::Path) -> (usize, f64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tb = text
        .lines()
        .find_map(|l| l.strip_prefix("#tb 0:"))
        .and_then(|t| {
            let (n, d) = t.trim().split_once('/')?;
            Some(n.parse::<f64>().ok()? / d.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    let video: Vec<Packet> = packets(path)
        .into_iter()
        .filter(|p| p.stream == 0)
        .collect();
    let mut max = 0.0f64;
    for w in video.windows(2) {
        let step = (w[1].dts - w[0].dts) as f64 * tb;
        assert!(
            step >= 0.0,
            "video dts went back: {} then {}",
            w[0].dts,
            w[1].dts
        );
        max = max.max(step);
    }
    (video.len(), max)
}

/// Read until `needle` appears (at most 5 s); whether it did.
pub async fn read_until(s: &mut TcpStream, needle: &[u8]) -> bool {
    let mut seen = Vec::new();
    let mut b = vec![0u8; 4096];
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(n)) => seen.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
        if seen.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}
