//! Shared pieces of the link tests: a cluster CA, nodes (hub + link
//! server), synthetic media and a UDP impairment proxy.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use banyan_relay::link::{ClusterCa, ClusterTls, Downstream, LinkServer};
use banyan_relay::{AudioConfig, Frame, Hub, HubConfig, Item, Subscriber, VideoConfig};
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn hub() -> Arc<Hub> {
    Hub::new(HubConfig {
        reconnect_window: Duration::from_millis(200),
        ..HubConfig::default()
    })
}

/// A node: a hub and a link server serving it. Stops on drop.
pub struct Node {
    pub name: String,
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    pub tls: ClusterTls,
    pub server: Arc<LinkServer>,
    pub downstream: Downstream,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Node {
    pub fn start(ca: &ClusterCa, name: &str) -> Node {
        let tls = ca.issue_node_cert(name).unwrap();
        let hub = hub();
        let (server, addr) = LinkServer::bind(any_port(), &tls, hub.clone()).unwrap();
        let downstream = server.downstream();
        let server = Arc::new(server);
        let (stop, rx) = oneshot::channel();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.run(async {
                let _ = rx.await;
            })
            .await
        });
        Node {
            name: name.to_string(),
            hub,
            addr,
            tls,
            server,
            downstream,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

pub fn video_config(tag: u8) -> VideoConfig {
    VideoConfig {
        avcc: Bytes::from(vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, tag]),
        width: 320,
        height: 240,
        codec: "avc1.42c01e".into(),
    }
}

pub fn audio_config() -> AudioConfig {
    AudioConfig {
        asc: Bytes::from_static(&[0x12, 0x10]),
        sample_rate: 44100,
        channels: 2,
        codec: "mp4a.40.2".into(),
    }
}

/// Frame `i` of a synthetic 30 fps stream: a keyframe every `gop` frames,
/// the payload names the frame and is `size` bytes long.
pub fn video_frame(i: u64, gop: u64, size: usize) -> Frame {
    let mut payload = vec![(i % 251) as u8; size.max(12)];
    payload[..8].copy_from_slice(&i.to_be_bytes());
    let dts = i as i64 * 3000;
    Frame::video(dts + 3000, dts, i.is_multiple_of(gop), Bytes::from(payload))
}

pub fn audio_frame(i: u64) -> Frame {
    let mut payload = vec![0xa5u8; 24];
    payload[..8].copy_from_slice(&i.to_be_bytes());
    Frame::audio(i as i64 * 3000 + 1000, Bytes::from(payload))
}

/// Receive the next frame (skipping info), within `timeout`.
pub async fn next_frame(sub: &mut Subscriber, timeout: Duration) -> Option<Frame> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Item::Frame(f)) => return Some(f),
            Ok(Item::Info(_)) => continue,
            Ok(Item::End(_)) | Err(_) => return None,
        }
    }
}

/// Impairments of one direction of the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Impair {
    pub delay: Duration,
    /// Packets lost per thousand.
    pub loss_per_mille: u32,
    /// Bytes per second the path carries (0: unlimited); packets beyond a
    /// small queue are dropped, like a router's.
    pub rate: u64,
}

/// A UDP proxy between one client and one server with delay, loss and a
/// rate limit per direction. Stops on drop.
pub struct ImpairProxy {
    pub addr: SocketAddr,
    pub dropped: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One direction: packets enter `rx`, leave after the impairments.
async fn pump(
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    out: Arc<UdpSocket>,
    to: Arc<parking_lot::Mutex<Option<SocketAddr>>>,
    imp: Impair,
    seed: u64,
    dropped: Arc<AtomicU64>,
) {
    let mut rng = Rng(seed);
    // Packets in flight: (release time, bytes).
    let mut line: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    // The rate limiter's clock: when the link is free again.
    let mut busy_until = Instant::now();
    let queue_limit = Duration::from_millis(60);
    loop {
        let next = line.front().map(|(t, _)| *t);
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { return };
                if (rng.next() % 1000) < imp.loss_per_mille as u64 {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let now = Instant::now();
                let mut leave = now;
                if let Some(ns_per_byte) = 1_000_000_000u64.checked_div(imp.rate) {
                    let start = busy_until.max(now);
                    if start - now > queue_limit {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    busy_until = start + Duration::from_nanos(p.len() as u64 * ns_per_byte);
                    leave = busy_until;
                }
                line.push_back((leave + imp.delay, p));
            }
            _ = async { tokio::time::sleep_until(next.unwrap()).await }, if next.is_some() => {
                let now = Instant::now();
                while line.front().is_some_and(|(t, _)| *t <= now) {
                    let (_, p) = line.pop_front().unwrap();
                    let dest = *to.lock();
                    if let Some(d) = dest {
                        let _ = out.send_to(&p, d).await;
                    }
                }
            }
        }
    }
}

impl ImpairProxy {
    /// Proxy to `server`; `up` impairs client-to-server, `down` the reverse.
    pub async fn start(server: SocketAddr, up: Impair, down: Impair) -> ImpairProxy {
        let front = Arc::new(UdpSocket::bind(any_port()).await.unwrap());
        let back = Arc::new(UdpSocket::bind(any_port()).await.unwrap());
        let addr = front.local_addr().unwrap();
        let client = Arc::new(parking_lot::Mutex::new(None));
        let server_addr = Arc::new(parking_lot::Mutex::new(Some(server)));
        let dropped = Arc::new(AtomicU64::new(0));
        let (up_tx, up_rx) = tokio::sync::mpsc::channel(4096);
        let (down_tx, down_rx) = tokio::sync::mpsc::channel(4096);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(pump(
            up_rx,
            back.clone(),
            server_addr,
            up,
            0x9e37_79b9,
            dropped.clone(),
        )));
        tasks.push(tokio::spawn(pump(
            down_rx,
            front.clone(),
            client.clone(),
            down,
            0x7f4a_7c15,
            dropped.clone(),
        )));
        let f = front.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = f.recv_from(&mut buf).await {
                *client.lock() = Some(from);
                let _ = up_tx.try_send(buf[..n].to_vec());
            }
        }));
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                let _ = down_tx.try_send(buf[..n].to_vec());
            }
        }));
        ImpairProxy {
            addr,
            dropped,
            tasks,
        }
    }
}

/// The q-quantile of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}
