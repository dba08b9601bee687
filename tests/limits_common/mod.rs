//! Helpers of tests/limits.rs and tests/trusted_proxies.rs: connections
//! and HTTP clients from a chosen loopback address.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
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
