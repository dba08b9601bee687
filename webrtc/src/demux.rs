//! The one UDP socket of every session, and the table that routes its
//! datagrams: by remote address once a session has been reached from it,
//! else by the local ICE ufrag a STUN request names. Everything else is
//! dropped and counted; a session's queue is bounded and a full one drops.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use str0m::ice::StunMessage;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Context, WebRtcConfig, WebRtcError};

/// Largest datagram read (WebRTC keeps under the path MTU).
const MAX_DATAGRAM: usize = 2048;
/// Remote addresses one session may be reached from (ICE candidates tried).
const MAX_ADDRS: usize = 8;

/// One datagram for a session.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub source: SocketAddr,
    pub at: Instant,
    pub data: Vec<u8>,
}

/// The local ufrag a STUN message's USERNAME (`local:remote`) names: how a
/// datagram from an unknown address finds its session.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let msg = StunMessage::parse(data).ok()?;
    let username = msg.username()?;
    username.split_once(':').map(|(local, _)| local)
}

struct Entry {
    tx: mpsc::Sender<Datagram>,
    cancel: CancellationToken,
    ufrag: String,
    ip: IpAddr,
    addrs: Vec<SocketAddr>,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Entry>,
    by_ufrag: HashMap<String, String>,
    by_addr: HashMap<SocketAddr, String>,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds its maximum of sessions.
    Full,
    /// This client address holds its maximum of sessions.
    PerAddress,
}

/// A registered session: what its task needs to receive.
pub(crate) struct Registered {
    pub id: String,
    pub rx: mpsc::Receiver<Datagram>,
    pub cancel: CancellationToken,
}

/// The socket and the session table.
pub struct Sessions {
    pub(crate) cfg: WebRtcConfig,
    pub(crate) ctx: Context,
    pub(crate) socket: Arc<UdpSocket>,
    local: SocketAddr,
    /// The address every host candidate announces.
    pub(crate) announce: SocketAddr,
    table: Mutex<Table>,
    /// AAC to Opus, once per stream.
    pub(crate) transcoders: Arc<crate::audio::Transcoders>,
    /// The text on screen, once per stream.
    pub(crate) captions: Arc<crate::captions::CaptionTexts>,
}

impl Sessions {
    /// Bind the socket (port 0 allowed); it is read once started.
    pub async fn bind(cfg: &WebRtcConfig) -> Result<(UdpSocket, SocketAddr), WebRtcError> {
        let err = |source| WebRtcError::Bind {
            addr: cfg.bind,
            source,
        };
        let socket = UdpSocket::bind(cfg.bind).await.map_err(err)?;
        let local = socket.local_addr().map_err(err)?;
        let ip = match cfg.public_ip {
            Some(ip) => ip,
            None if local.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            None => local.ip(),
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(WebRtcError::Candidate(ip));
        }
        Ok((socket, SocketAddr::new(ip, local.port())))
    }

    /// Serve a bound socket: start reading it.
    pub(crate) fn start(
        cfg: WebRtcConfig,
        socket: UdpSocket,
        announce: SocketAddr,
        ctx: Context,
    ) -> Arc<Sessions> {
        let local = socket.local_addr().unwrap_or(announce);
        let sessions = Arc::new(Sessions {
            cfg,
            ctx,
            socket: Arc::new(socket),
            local,
            announce,
            table: Mutex::new(Table::default()),
            transcoders: Arc::default(),
            captions: Arc::default(),
        });
        tokio::spawn(sessions.clone().read_loop());
        sessions
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sessions now open.
    pub fn len(&self) -> usize {
        self.table.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether one more session from `ip` would be admitted now.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let t = self.table.lock();
        if t.by_id.len() >= self.cfg.max_sessions {
            return Err(Refusal::Full);
        }
        if t.per_ip.get(&ip).copied().unwrap_or(0) >= self.cfg.max_per_address {
            return Err(Refusal::PerAddress);
        }
        Ok(())
    }

    /// Admit a session reached through the ICE ufrag `ufrag`.
    pub(crate) fn register(&self, ip: IpAddr, ufrag: &str) -> Result<Registered, Refusal> {
        let mut t = self.table.lock();
        if t.by_id.len() >= self.cfg.max_sessions {
            return Err(Refusal::Full);
        }
        let n = t.per_ip.entry(ip).or_default();
        if *n >= self.cfg.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        let id = new_id();
        let (tx, rx) = mpsc::channel(self.cfg.queue);
        let cancel = self.ctx.shutdown.child_token();
        t.by_ufrag.insert(ufrag.to_string(), id.clone());
        t.by_id.insert(
            id.clone(),
            Entry {
                tx,
                cancel: cancel.clone(),
                ufrag: ufrag.to_string(),
                ip,
                addrs: Vec::new(),
            },
        );
        metrics::gauge!("banyan_webrtc_sessions").increment(1.0);
        Ok(Registered { id, rx, cancel })
    }

    /// Forget a session (its task ended).
    pub(crate) fn remove(&self, id: &str) {
        let mut t = self.table.lock();
        let Some(e) = t.by_id.remove(id) else {
            return;
        };
        t.by_ufrag.remove(&e.ufrag);
        for a in &e.addrs {
            t.by_addr.remove(a);
        }
        if let Some(n) = t.per_ip.get_mut(&e.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.per_ip.remove(&e.ip);
            }
        }
        metrics::gauge!("banyan_webrtc_sessions").decrement(1.0);
    }

    /// End a session (`DELETE` on its resource); false when unknown.
    pub fn end(&self, id: &str) -> bool {
        match self.table.lock().by_id.get(id) {
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }

    async fn read_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => r,
            };
            match r {
                Ok((n, source)) => self.route(source, &buf[..n]),
                // ICMP errors of earlier sends surface here; nothing to do.
                Err(e) => tracing::debug!(error = %e, "WebRTC socket read"),
            }
        }
    }

    /// Hand one datagram to its session, or drop it (counted).
    pub fn route(&self, source: SocketAddr, data: &[u8]) {
        let mut t = self.table.lock();
        let id = match t.by_addr.get(&source) {
            Some(id) => id.clone(),
            None => {
                let Some(id) = stun_local_ufrag(data)
                    .and_then(|u| t.by_ufrag.get(u))
                    .cloned()
                else {
                    dropped("unknown_peer");
                    return;
                };
                let Some(e) = t.by_id.get_mut(&id) else {
                    dropped("unknown_peer");
                    return;
                };
                if e.addrs.len() >= MAX_ADDRS {
                    dropped("too_many_addresses");
                    return;
                }
                e.addrs.push(source);
                t.by_addr.insert(source, id.clone());
                id
            }
        };
        let Some(e) = t.by_id.get(&id) else {
            dropped("unknown_peer");
            return;
        };
        let d = Datagram {
            source,
            at: Instant::now(),
            data: data.to_vec(),
        };
        if e.tx.try_send(d).is_err() {
            dropped("queue_full");
        }
    }
}

fn dropped(reason: &'static str) {
    metrics::counter!("banyan_webrtc_datagrams_dropped_total", "reason" => reason).increment(1);
}

/// A session id: 128 random bits, hex (the capability its `DELETE` needs).
fn new_id() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_names_no_ufrag() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0x80, 0x60, 0, 1, 2, 3, 4, 5]), None);
        assert_eq!(stun_local_ufrag(&[0u8; 20]), None);
        assert_eq!(stun_local_ufrag(&[0xff; 600]), None);
    }
}
