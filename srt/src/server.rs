//! The listener driver: one OS thread per listener.
//!
//! The thread owns every libsrt socket of the listener. It waits in
//! `srt_epoll_uwait`, accepts connections, reads messages of publishing
//! callers and writes messages of playing callers. It talks to tokio only
//! through bounded channels: received messages go out with `try_send` (a full
//! queue drops the message and counts it in `banyan_srt_dropped_total`), and
//! messages to send are taken with `try_recv`, so the thread never blocks on
//! tokio and tokio never blocks on libsrt.
//!
//! Admission happens in libsrt's listen callback, before any media flows: the
//! [`Gate`] looks the stream id up in memory and answers with the direction
//! and the passphrase, which the callback sets on the new socket, or with a
//! reject code. A wrong passphrase is then refused by libsrt itself.

use std::collections::HashMap;
use std::ffi::CStr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use libc::{c_char, c_int, c_void};
use tokio::sync::mpsc;

use crate::{sys, Epoll, Events, MsgCtrl, Socket, SrtError, TransType};

/// Reject codes sent to refused callers (`SRT_REJX_*` of `access_control.h`).
pub mod reject {
    pub const BAD_REQUEST: i32 = 1400;
    pub const UNAUTHORIZED: i32 = 1401;
    pub const OVERLOAD: i32 = 1402;
    pub const FORBIDDEN: i32 = 1403;
    pub const NOT_FOUND: i32 = 1404;
    pub const BAD_MODE: i32 = 1405;
    pub const UNACCEPTABLE: i32 = 1406;
    pub const CONFLICT: i32 = 1409;
}

/// Which way media flows on a connection, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The caller publishes; the server receives.
    Receive,
    /// The caller plays; the server sends.
    Send,
}

/// The answer of a [`Gate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept; encrypt with `passphrase` if given (10 to 79 bytes).
    Accept {
        mode: Mode,
        passphrase: Option<String>,
    },
    /// Refuse with a reject code (see [`reject`]).
    Reject(i32),
}

/// Admission control, called in libsrt's listen callback
/// ([`Gate::decide_from`]; keep it cheap: no I/O, no waiting) and once more
/// when the connection is accepted ([`Gate::decide`]). A caller refused by
/// libsrt after the callback (a wrong passphrase) is never accepted.
pub trait Gate: Send + Sync + 'static {
    fn decide(&self, stream_id: &str) -> Decision;

    /// The decision in the listen callback, knowing the caller's address
    /// (`None` if libsrt gave none usable). Defaults to [`Gate::decide`].
    fn decide_from(&self, stream_id: &str, peer: Option<SocketAddr>) -> Decision {
        let _ = peer;
        self.decide(stream_id)
    }
}

impl<F: Fn(&str) -> Decision + Send + Sync + 'static> Gate for F {
    fn decide(&self, stream_id: &str) -> Decision {
        self(stream_id)
    }
}

/// Tunables of a listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TSBPD latency: the receive latency of publishers' sockets and the
    /// minimum asked of players.
    pub latency: Duration,
    /// Hold received packets until their TSBPD time. Off by default: the
    /// relay forwards at once and lets the player's TSBPD restore pacing,
    /// so a relay hop does not add a whole receive latency.
    pub receive_tsbpd: bool,
    /// Accepted connections waiting for tokio.
    pub accept_queue: usize,
    /// Received messages per publisher waiting for tokio.
    pub receive_queue: usize,
    /// Messages per player waiting for the thread.
    pub send_queue: usize,
    pub backlog: i32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            latency: Duration::from_millis(120),
            receive_tsbpd: false,
            accept_queue: 64,
            receive_queue: 4096,
            send_queue: 4096,
            backlog: 64,
        }
    }
}

/// A message for a player.
#[derive(Debug, Clone)]
pub struct Message {
    pub payload: Bytes,
    /// Source time in [`crate::time_now`]'s clock (0: now). The thread keeps
    /// it monotonic, not before the connection and not in the future.
    pub srctime: i64,
}

/// The media side of an accepted connection.
#[derive(Debug)]
pub enum Channel {
    /// A publisher: received messages (one to seven TS packets each).
    Receiver(mpsc::Receiver<Bytes>),
    /// A player: messages to send. Dropping it closes the connection.
    Sender(mpsc::Sender<Message>),
}

/// An accepted connection, handed to tokio.
#[derive(Debug)]
pub struct Incoming {
    pub stream_id: String,
    pub peer: SocketAddr,
    pub channel: Channel,
}

/// A running listener. Dropping it stops the thread and closes every socket.
pub struct Server {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind, listen and start the driver thread. Accepted connections arrive
    /// on the returned receiver.
    pub fn start(
        addr: SocketAddr,
        cfg: ServerConfig,
        gate: Arc<dyn Gate>,
    ) -> Result<(Server, mpsc::Receiver<Incoming>), SrtError> {
        let lsn = Socket::new()?;
        lsn.set_latency(cfg.latency)?;
        lsn.set_bool(sys::SRTO_TSBPDMODE, cfg.receive_tsbpd)?;
        lsn.set_nonblocking(true)?;
        lsn.bind(addr)?;
        let local_addr = lsn.local_addr()?;
        let hook = Box::new(Hook { gate: gate.clone() });
        // The callback state must outlive every call libsrt may still make
        // from its own threads, even while the listener closes: it is leaked
        // on purpose (one small allocation per listener).
        let opaque = Box::into_raw(hook) as *mut c_void;
        // SAFETY: `listen_hook` matches srt_listen_callback_fn and never
        // unwinds; `opaque` points to a leaked Hook valid for the process.
        check_rc("listen_callback", unsafe {
            sys::srt_listen_callback(lsn.id(), Some(listen_hook), opaque)
        })?;
        lsn.listen(cfg.backlog)?;
        let mut epoll = Epoll::new(256)?;
        epoll.add(
            &lsn,
            Events {
                readable: true,
                error: true,
                ..Events::default()
            },
        )?;
        let (accept_tx, accept_rx) = mpsc::channel(cfg.accept_queue.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("srt-{}", local_addr.port()))
            .spawn(move || {
                let mut d = Driver {
                    lsn,
                    conns: HashMap::new(),
                    accept_tx,
                    gate,
                    cfg,
                    buf: vec![0u8; 1500],
                };
                d.run(&mut epoll, &stop2);
            })
            .map_err(|_| SrtError::InvalidArgument("cannot spawn the SRT thread"))?;
        Ok((
            Server {
                local_addr,
                stop,
                thread: Some(thread),
            },
            accept_rx,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check_rc(op: &'static str, rc: c_int) -> Result<(), SrtError> {
    crate::check(op, rc).map(|_| ())
}

struct Hook {
    gate: Arc<dyn Gate>,
}

/// libsrt's listen callback: decide on the stream id, set the passphrase on
/// the new socket, or reject.
unsafe extern "C" fn listen_hook(
    opaque: *mut c_void,
    ns: sys::SRTSOCKET,
    hsversion: c_int,
    peer: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `opaque` is the leaked Hook installed in `Server::start`.
        let hook = unsafe { &*(opaque as *const Hook) };
        let sid = if streamid.is_null() {
            String::new()
        } else {
            // SAFETY: libsrt passes a NUL-terminated buffer valid for the call.
            unsafe { CStr::from_ptr(streamid) }
                .to_string_lossy()
                .into_owned()
        };
        if hsversion < 5 {
            // HSv4 callers cannot carry a stream id.
            return Err(reject::BAD_REQUEST);
        }
        // SAFETY: libsrt passes the caller's address (or null), valid for
        // the call.
        let peer = unsafe { crate::sockaddr_to_std(peer) }.ok();
        match hook.gate.decide_from(&sid, peer) {
            Decision::Reject(code) => Err(code),
            Decision::Accept { passphrase, .. } => {
                if let Some(p) = passphrase {
                    // SAFETY: `ns` is the socket being accepted, alive for
                    // the callback; we do not close it (libsrt does on reject).
                    let s = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw(ns) });
                    if s.set_passphrase(&p).is_err() {
                        return Err(reject::UNACCEPTABLE);
                    }
                }
                Ok(())
            }
        }
    });
    let code = match r {
        Ok(Ok(())) => return 0,
        Ok(Err(code)) => code,
        Err(_) => reject::BAD_REQUEST,
    };
    metrics::counter!("banyan_srt_rejected_total", "reason" => reject_label(code)).increment(1);
    // SAFETY: plain value arguments on the socket being refused.
    unsafe { sys::srt_setrejectreason(ns, code) };
    -1
}

fn reject_label(code: i32) -> &'static str {
    match code {
        reject::NOT_FOUND => "not_found",
        reject::FORBIDDEN => "forbidden",
        reject::BAD_MODE => "bad_mode",
        reject::UNAUTHORIZED => "unauthorized",
        reject::CONFLICT => "conflict",
        reject::OVERLOAD => "overload",
        reject::UNACCEPTABLE => "unacceptable",
        _ => "bad_request",
    }
}

enum ConnKind {
    Receive(mpsc::Sender<Bytes>),
    Send {
        rx: mpsc::Receiver<Message>,
        pending: Option<Message>,
        conn_time: i64,
        last_srctime: i64,
        waiting_out: bool,
    },
}

struct Conn {
    sock: Socket,
    kind: ConnKind,
}

struct Driver {
    lsn: Socket,
    conns: HashMap<sys::SRTSOCKET, Conn>,
    accept_tx: mpsc::Sender<Incoming>,
    gate: Arc<dyn Gate>,
    cfg: ServerConfig,
    buf: Vec<u8>,
}

impl Driver {
    fn run(&mut self, epoll: &mut Epoll, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let has_senders = self
                .conns
                .values()
                .any(|c| matches!(c.kind, ConnKind::Send { .. }));
            // Players get their messages from tokio without a wake-up of
            // this thread, so the wait stays short while any are connected.
            let timeout = if has_senders {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(20)
            };
            let ready = match epoll.wait(timeout) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "srt epoll wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let mut dead = Vec::new();
            for (fd, ev) in ready {
                if fd == self.lsn.id() {
                    self.accept_one(epoll);
                    continue;
                }
                let finished = ev.readable && !self.read(fd);
                if finished || ev.error {
                    dead.push(fd);
                }
            }
            for fd in dead {
                self.close(epoll, fd);
            }
            let fds: Vec<_> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.kind, ConnKind::Send { .. }))
                .map(|(fd, _)| *fd)
                .collect();
            for fd in fds {
                if !self.flush(epoll, fd) {
                    self.close(epoll, fd);
                }
            }
            // Publishers whose consumer went away.
            let gone: Vec<_> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(&c.kind, ConnKind::Receive(tx) if tx.is_closed()))
                .map(|(fd, _)| *fd)
                .collect();
            for fd in gone {
                self.close(epoll, fd);
            }
        }
        for (_, c) in self.conns.drain() {
            epoll.remove(&c.sock);
        }
    }

    fn close(&mut self, epoll: &Epoll, fd: sys::SRTSOCKET) {
        if let Some(c) = self.conns.remove(&fd) {
            epoll.remove(&c.sock);
            tracing::debug!(sock = fd, "srt connection closed");
        }
    }

    /// Accept one connection per readiness event (the epoll is level
    /// triggered, so further pending ones report again).
    fn accept_one(&mut self, epoll: &Epoll) {
        {
            let (sock, peer) = match self.lsn.accept() {
                Ok(x) => x,
                Err(SrtError::WouldBlock { .. }) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "srt accept failed");
                    return;
                }
            };
            if let Some((fd, inc)) = self.admit(epoll, sock, peer) {
                if self.accept_tx.try_send(inc).is_err() {
                    metrics::counter!("banyan_srt_dropped_total", "dir" => "accept").increment(1);
                    tracing::warn!("srt accept queue full, connection closed");
                    self.close(epoll, fd);
                }
            }
        }
    }

    fn admit(
        &mut self,
        epoll: &Epoll,
        sock: Socket,
        peer: SocketAddr,
    ) -> Option<(sys::SRTSOCKET, Incoming)> {
        let stream_id = sock.stream_id().ok()?;
        if sock.trans_type().ok()? != TransType::Live {
            metrics::counter!("banyan_srt_rejected_total", "reason" => "transtype").increment(1);
            tracing::info!(%peer, "srt caller in file mode refused");
            return None;
        }
        let mode = match self.gate.decide(&stream_id) {
            Decision::Accept { mode, .. } => mode,
            Decision::Reject(_) => return None,
        };
        let (kind, channel) = match mode {
            Mode::Receive => {
                let (tx, rx) = mpsc::channel(self.cfg.receive_queue.max(1));
                (ConnKind::Receive(tx), Channel::Receiver(rx))
            }
            Mode::Send => {
                let (tx, rx) = mpsc::channel(self.cfg.send_queue.max(1));
                let conn_time = sock.connection_time();
                (
                    ConnKind::Send {
                        rx,
                        pending: None,
                        conn_time,
                        last_srctime: conn_time,
                        waiting_out: false,
                    },
                    Channel::Sender(tx),
                )
            }
        };
        let ev = Events {
            readable: mode == Mode::Receive,
            error: true,
            ..Events::default()
        };
        if epoll.add(&sock, ev).is_err() {
            return None;
        }
        let fd = sock.id();
        self.conns.insert(fd, Conn { sock, kind });
        metrics::counter!("banyan_srt_connections_total", "mode" => match mode { Mode::Receive => "publish", Mode::Send => "play" })
            .increment(1);
        Some((
            fd,
            Incoming {
                stream_id,
                peer,
                channel,
            },
        ))
    }

    /// Read everything available. False when the connection is finished.
    fn read(&mut self, fd: sys::SRTSOCKET) -> bool {
        let Some(conn) = self.conns.get(&fd) else {
            return true;
        };
        let ConnKind::Receive(tx) = &conn.kind else {
            return true;
        };
        for _ in 0..1024 {
            let mut ctrl = MsgCtrl::default();
            match conn.sock.recv(&mut self.buf, &mut ctrl) {
                Ok(0) => return true,
                Ok(n) => match tx.try_send(Bytes::copy_from_slice(&self.buf[..n])) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics::counter!("banyan_srt_dropped_total", "dir" => "in").increment(1);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                },
                Err(SrtError::WouldBlock { .. }) => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Send what tokio queued for a player. False when it is finished.
    fn flush(&mut self, epoll: &Epoll, fd: sys::SRTSOCKET) -> bool {
        let Some(conn) = self.conns.get_mut(&fd) else {
            return true;
        };
        let ConnKind::Send {
            rx,
            pending,
            conn_time,
            last_srctime,
            waiting_out,
        } = &mut conn.kind
        else {
            return true;
        };
        let mut blocked = false;
        for _ in 0..4096 {
            let msg = match pending.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                },
            };
            let mut ctrl = MsgCtrl::default();
            if msg.srctime > 0 {
                let now = crate::time_now();
                let t = msg.srctime.max(*conn_time).max(*last_srctime).min(now);
                *last_srctime = t;
                ctrl.srctime = t;
            }
            match conn.sock.send(&msg.payload, &mut ctrl) {
                Ok(_) => {}
                Err(SrtError::WouldBlock { .. }) => {
                    *pending = Some(msg);
                    blocked = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "srt send failed");
                    return false;
                }
            }
        }
        if blocked != *waiting_out {
            *waiting_out = blocked;
            let _ = epoll.update(
                &conn.sock,
                Events {
                    writable: blocked,
                    error: true,
                    ..Events::default()
                },
            );
        }
        true
    }
}
