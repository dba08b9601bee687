//! What a node is, as the other parts see it: the addresses it listens on
//! and the URLs built from them ([`Urls`]), and its credentials file.
//!
//! The node's parts are built and wired in one place, `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The addresses the node actually listens on (real ports, even when the
/// settings said port 0).
#[derive(Debug, Clone)]
pub struct Addrs {
    pub http: SocketAddr,
    pub rtmp: Option<SocketAddr>,
    pub rtmps: SocketAddr,
    pub srt: SocketAddr,
    /// The metrics listener.
    pub metrics: SocketAddr,
    /// The HTTPS listener, when on.
    pub https: Option<SocketAddr>,
    /// The WebRTC (WHEP) UDP socket.
    pub webrtc: SocketAddr,
}

/// `<data-dir>/credentials.json`, mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub account_id: String,
    pub api_token: String,
    pub admin_token: String,
    pub api: String,
}

/// Where the credentials of a data dir are.
pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials.json")
}

/// The node's listeners and the host written into the URLs it hands out.
#[derive(Debug, Clone)]
pub struct Urls {
    pub addrs: Addrs,
    /// `--public-host`.
    pub public_host: Option<String>,
}

impl Urls {
    /// The host written into URLs: `--public-host`, else the bound address.
    fn host(&self, addr: SocketAddr) -> String {
        if let Some(h) = &self.public_host {
            return h.clone();
        }
        let ip = if addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    }

    /// `host:port` for a listener, as written into URLs.
    pub fn authority(&self, addr: SocketAddr) -> String {
        format!("{}:{}", self.host(addr), addr.port())
    }

    /// The base URL of the HTTP API (HTTPS when that listener is on).
    pub fn api_url(&self) -> String {
        match self.addrs.https {
            Some(a) => format!("https://{}", self.authority(a)),
            None => format!("http://{}", self.authority(self.addrs.http)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(public_host: Option<&str>, https: bool) -> Urls {
        let a: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        Urls {
            addrs: Addrs {
                http: a,
                rtmp: None,
                rtmps: "[::1]:1935".parse().unwrap(),
                srt: a,
                webrtc: a,
                metrics: a,
                https: https.then(|| "0.0.0.0:8443".parse().unwrap()),
            },
            public_host: public_host.map(str::to_string),
        }
    }

    #[test]
    fn urls_name_the_public_host_or_a_reachable_address() {
        let u = urls(None, false);
        assert_eq!(u.api_url(), "http://127.0.0.1:8080");
        assert_eq!(u.authority(u.addrs.rtmps), "[::1]:1935");
        let u = urls(Some("live.example.com"), true);
        assert_eq!(u.api_url(), "https://live.example.com:8443");
    }
}
