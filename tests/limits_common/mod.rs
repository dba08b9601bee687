//! Helpers of tests/limits.rs and tests/trusted_proxies.rs: connections
//! and HTTP clients from a chosen loopback address.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::reliab::Node;

/// A TCP connection to `to` from the loopback address `from`, with a small
/// receive buffer when `small` (a reader that stops fills it quickly).
pub async fn connect_from(from: &str, to: &str, small: bool) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    if small {
        let _ = sock.set_recv_buffer_size(4096);
    }
    sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind source address");
    sock.connect(to.parse().expect("address"))
        .await
        .expect("connect")
}

/// An HTTP client whose connections come from `from`, one per request.
pub fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("ip"))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Read what arrives until EOF or `limit`; (bytes, whether EOF came).
pub async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let until = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut b = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut b)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
        }
    }
}

/// Status of the answer to a list call on the API, from `from`.
pub async fn list_status(node: &Node, from: &str, token: &str) -> u16 {
    client_from(from)
        .get(node.stream_api("live_inputs"))
        .bearer_auth(token)
        .send()
        .await
        .expect("API call")
        .status()
        .as_u16()
}

/// A TCP connection from `from`, or the error.
pub async fn connect_from_checked(from: &str, to: &str) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))?;
    sock.connect(to.parse().expect("address")).await
}

/// One kept-alive HTTP/1.1 connection, read a response at a time.
pub struct Conn {
    pub tcp: TcpStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write a request");
    }

    /// The next response: (status code, body). `head` answers carry no body;
    /// `pace` reads in 4 KiB steps this far apart.
    pub async fn response(&mut self, head: bool, pace: Option<Duration>) -> (u16, Vec<u8>) {
        let (text, body) = self.response_whole(head, pace).await;
        let status = text[9..12].parse::<u16>().expect("status code");
        (status, body)
    }

    /// The next response: (its head, lowercased; its body).
    pub async fn response_whole(
        &mut self,
        head: bool,
        pace: Option<Duration>,
    ) -> (String, Vec<u8>) {
        let until = Instant::now() + Duration::from_secs(20);
        let mut b = vec![0u8; 4096];
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(&mut b, until).await;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let len = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().expect("content-length"));
        let len = if head { 0 } else { len };
        while self.buf.len() < end + len {
            if let Some(p) = pace {
                tokio::time::sleep(p).await;
            }
            self.fill(&mut b, until).await;
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        (text, body)
    }

    async fn fill(&mut self, b: &mut [u8], until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.tcp.read(b)).await {
            Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&b[..n]),
            r => panic!(
                "the connection ended or stalled mid-response ({r:?}) after {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }
}
