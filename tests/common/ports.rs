//! Ports a test must name before the program that listens on them starts
//! (PostgreSQL, pebble, nginx, srt-live-transmit, a cluster's link list).
//!
//! A port the kernel handed out to `bind(0)` and that was then closed can be
//! handed out again at once, to another test's node or to any outgoing
//! connection, before the intended program binds it. Ports below the
//! kernel's ephemeral range are never handed out that way, so they are
//! chosen there, at random, checked free on both TCP and UDP.

#![allow(dead_code)]

use rand::Rng;

/// A loopback port free on TCP and UDP now, below the ephemeral range.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(10_001);
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(10_000..low);
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}
