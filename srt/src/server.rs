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
//!
//! The callback also enforces [`ServerConfig::max_connections`]: the
//! connections the thread holds plus the handshakes admitted and not yet
//! accepted ([`Slots`]) may not exceed it. A caller beyond it is refused
//! with [`reject::OVERLOAD`] before its stream id is looked up, counted in
//! `banyan_connections_refused_total{reason="limit",listener="srt"}`, and
//! logged once per 10 s at most.

use std::collections::HashMap;
use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Connections at once (publishers, players and admitted handshakes
    /// not yet accepted); callers beyond it are refused at the handshake
    /// with [`reject::OVERLOAD`].
    pub max_connections: usize,
    /// Handshakes admitted and not yet accepted per caller address; more
    /// are refused with [`reject::OVERLOAD`] and counted
    /// (`reason="per_address"`).
    pub max_pending_per_address: usize,
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
            max_connections: 10_000,
            max_pending_per_address: 64,
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
    slots: Arc<Slots>,
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
        let slots = Arc::new(Slots::new(cfg.max_connections, cfg.max_pending_per_address));
        let hook = Box::new(Hook {
            gate: gate.clone(),
            slots: slots.clone(),
        });
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
        let slots2 = slots.clone();
        let thread = std::thread::Builder::new()
            .name(format!("srt-{}", local_addr.port()))
            .spawn(move || {
                let mut d = Driver {
                    lsn,
                    conns: HashMap::new(),
                    accept_tx,
                    gate,
                    slots: slots2,
                    cfg,
                    buf: vec![0u8; 1500],
                };
                d.run(&mut epoll, &stop2);
            })
            .map_err(|_| SrtError::InvalidArgument("cannot spawn the SRT thread"))?;
        Ok((
            Server {
                local_addr,
                slots,
                stop,
                thread: Some(thread),
            },
            accept_rx,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connection slots in use: connections the thread holds plus
    /// handshakes admitted and not yet accepted.
    pub fn connections(&self) -> usize {
        self.slots.in_use()
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
    slots: Arc<Slots>,
}

/// The connection count of a listener, shared by libsrt's callback (which
/// reserves) and the driver thread (which accepts and closes).
struct Slots {
    max: usize,
    /// Connections the driver thread holds (the length of its map).
    live: AtomicUsize,
    /// Sockets admitted by the callback and not yet accepted by the thread.
    /// (with the caller's address, for the per-address cap).
    pending: Mutex<HashMap<sys::SRTSOCKET, Option<IpAddr>>>,
    /// Handshakes in progress allowed per caller address.
    max_per_address: usize,
    /// When the last limit warning was logged.
    warned: Mutex<Option<Instant>>,
}

/// `SRTS_BROKEN`: this state and the later ones (closing, closed,
/// nonexistent) mean a socket will never be accepted.
const SRTS_BROKEN: c_int = 6;

/// `srt_getsockstate`.
fn state(s: sys::SRTSOCKET) -> c_int {
    // SAFETY: a plain query by id; libsrt answers SRTS_NONEXIST for ids it
    // no longer knows.
    unsafe { sys::srt_getsockstate(s) }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slots {
    fn new(max: usize, max_per_address: usize) -> Slots {
        Slots {
            max,
            live: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            max_per_address: max_per_address.max(1),
            warned: Mutex::new(None),
        }
    }

    fn in_use(&self) -> usize {
        let mut pending = lock(&self.pending);
        Self::prune(&mut pending);
        self.live.load(Ordering::SeqCst) + pending.len()
    }

    /// Handshakes that failed after the callback (a wrong passphrase) or
    /// broke before their accept never reach the thread: give their slots
    /// back.
    fn prune(pending: &mut HashMap<sys::SRTSOCKET, Option<IpAddr>>) {
        pending.retain(|&s, _| state(s) < SRTS_BROKEN);
    }

    /// Take a slot for the handshake of `ns`; refused at the limit, or at
    /// the per-address limit of handshakes in progress.
    fn reserve(&self, ns: sys::SRTSOCKET, peer: Option<IpAddr>) -> Result<(), &'static str> {
        let mut pending = lock(&self.pending);
        if self.live.load(Ordering::SeqCst) + pending.len() >= self.max {
            // Only when needed: the pending set is usually empty.
            Self::prune(&mut pending);
            if self.live.load(Ordering::SeqCst) + pending.len() >= self.max {
                return Err("limit");
            }
        }
        if let Some(ip) = peer {
            let from =
                |p: &HashMap<_, Option<IpAddr>>| p.values().filter(|v| **v == Some(ip)).count();
            if from(&*pending) >= self.max_per_address {
                Self::prune(&mut pending);
                if from(&*pending) >= self.max_per_address {
                    return Err("per_address");
                }
            }
        }
        pending.insert(ns, peer);
        Ok(())
    }

    /// The handshake of `ns` was refused.
    fn release(&self, ns: sys::SRTSOCKET) {
        lock(&self.pending).remove(&ns);
    }

    /// The thread accepted `ns` and now holds `live` connections (with
    /// `ns` if it kept it): one step for the callback, so the connection
    /// is counted exactly once.
    fn accepted(&self, ns: sys::SRTSOCKET, live: usize) {
        let mut pending = lock(&self.pending);
        self.live.store(live, Ordering::SeqCst);
        pending.remove(&ns);
    }

    /// Count a refusal at a limit; log it once per 10 s at most.
    fn refused(&self, peer: Option<SocketAddr>, reason: &'static str) {
        metrics::counter!("banyan_connections_refused_total", "reason" => reason, "listener" => "srt")
            .increment(1);
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        if warned.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            *warned = Some(now);
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(%peer, protocol = "srt", max = self.max, reason,
                "connection refused: connection limit reached");
        }
    }
}

/// Why the listen callback refused a caller.
enum Refusal {
    /// Beyond [`ServerConfig::max_connections`] (counted apart).
    Limit,
    /// Refused with this reject code.
    Code(i32),
}

/// libsrt's listen callback: enforce the connection limit, decide on the
/// stream id, set the passphrase on the new socket, or reject.
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
        // SAFETY: libsrt passes the caller's address (or null), valid for
        // the call.
        let peer = unsafe { crate::sockaddr_to_std(peer) }.ok();
        // The limit first: a flood costs no key lookup and no failed
        // attempt against the caller's address.
        if let Err(reason) = hook.slots.reserve(ns, peer.map(|p| p.ip().to_canonical())) {
            hook.slots.refused(peer, reason);
            return Err(Refusal::Limit);
        }
        let sid = if streamid.is_null() {
            String::new()
        } else {
            // SAFETY: libsrt passes a NUL-terminated buffer valid for the
            // call.
            unsafe { CStr::from_ptr(streamid) }
                .to_string_lossy()
                .into_owned()
        };
        let d = admit_handshake(hook, ns, hsversion, peer, &sid);
        if d.is_err() {
            hook.slots.release(ns);
        }
        d.map_err(Refusal::Code)
    });
    let code = match r {
        Ok(Ok(())) => return 0,
        Ok(Err(Refusal::Limit)) => reject::OVERLOAD,
        Ok(Err(Refusal::Code(code))) => {
            metrics::counter!("banyan_srt_rejected_total", "reason" => reject_label(code))
                .increment(1);
            code
        }
        Err(_) => {
            metrics::counter!("banyan_srt_rejected_total", "reason" => "bad_request").increment(1);
            reject::BAD_REQUEST
        }
    };
    // SAFETY: plain value arguments on the socket being refused.
    unsafe { sys::srt_setrejectreason(ns, code) };
    -1
}

/// The admission of a handshake that got a connection slot: `ns` is the
/// socket libsrt is creating for it.
fn admit_handshake(
    hook: &Hook,
    ns: sys::SRTSOCKET,
    hsversion: c_int,
    peer: Option<SocketAddr>,
    sid: &str,
) -> Result<(), i32> {
    if hsversion < 5 {
        // HSv4 callers cannot carry a stream id.
        return Err(reject::BAD_REQUEST);
    }
    match hook.gate.decide_from(sid, peer) {
        Decision::Reject(code) => Err(code),
        Decision::Accept { mode, passphrase } => {
            // SAFETY: `ns` is the socket being accepted, alive for the
            // callback; we do not close it (libsrt does on reject).
            let s = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw(ns) });
            if let Some(p) = passphrase {
                if s.set_passphrase(&p).is_err() {
                    return Err(reject::UNACCEPTABLE);
                }
            }
            if mode == Mode::Send && player_diet(&s).is_err() {
                return Err(reject::UNACCEPTABLE);
            }
            Ok(())
        }
    }
}

/// Receive-side sizes of a player's socket. A player sends only control
/// packets, yet libsrt sizes a socket's receive loss list by its flow
/// window (`SRTO_FC`, 25,600 packets: 400 KiB, all written at connect)
/// and its receive buffer by `SRTO_RCVBUF` (8,192 packets: 128 KiB). The
/// least libsrt allows (32 packets) is all a player socket uses. What it
/// sends is bounded by the player's window, not these. Set in the listen
/// callback, before libsrt opens the socket.
fn player_diet(s: &Socket) -> Result<(), SrtError> {
    const PACKETS: i32 = 32;
    s.set_i32(sys::SRTO_FC, PACKETS)?;
    // Bytes, in payloads of the default MSS (1500 - 28).
    s.set_i32(sys::SRTO_RCVBUF, PACKETS * 1472)
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
    slots: Arc<Slots>,
    cfg: ServerConfig,
    buf: Vec<u8>,
}

impl Driver {
    fn run(&mut self, epoll: &mut Epoll, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            // Players get their messages from tokio without a wake-up of
            // this thread, and publishers' data is readable before libsrt
            // says so (below), so the wait stays short while any connection
            // is held.
            let timeout = if !self.conns.is_empty() {
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
            // Without TSBPD, libsrt raises a publisher's read event only when
            // it next sends an ACK (every 10 ms, checked about as often): a
            // frame's last packets would wait 10-20 ms for it although they
            // are readable on arrival. So every publisher is read each turn.
            if !self.cfg.receive_tsbpd {
                let fds: Vec<_> = self
                    .conns
                    .iter()
                    .filter(|(fd, c)| matches!(c.kind, ConnKind::Receive(_)) && !dead.contains(fd))
                    .map(|(fd, _)| *fd)
                    .collect();
                for fd in fds {
                    if !self.read(fd) {
                        dead.push(fd);
                    }
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
        self.count();
    }

    /// Publish the number of connections held to the listen callback
    /// after a close (a count that only falls needs no lock).
    fn count(&self) {
        self.slots.live.store(self.conns.len(), Ordering::SeqCst);
    }

    /// Every connection leaves through here (or the drain at the end).
    fn close(&mut self, epoll: &Epoll, fd: sys::SRTSOCKET) {
        if let Some(c) = self.conns.remove(&fd) {
            epoll.remove(&c.sock);
            self.count();
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
            let id = sock.id();
            if let Some((fd, inc)) = self.admit(epoll, sock, peer) {
                if self.accept_tx.try_send(inc).is_err() {
                    metrics::counter!("banyan_srt_dropped_total", "dir" => "accept").increment(1);
                    tracing::warn!("srt accept queue full, connection closed");
                    self.close(epoll, fd);
                }
            }
            // Held or closed by now: the handshake's slot becomes the
            // connection's, or goes back.
            self.slots.accepted(id, self.conns.len());
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
        // A caller gone between its handshake and this accept: libsrt
        // raises no event for a socket already broken when added, so it
        // would be held forever (and a publisher would keep its stream).
        // Broken later, the epoll reports it.
        if state(sock.id()) >= SRTS_BROKEN {
            epoll.remove(&sock);
            tracing::debug!(%peer, "srt caller gone before its accept");
            return None;
        }
        let fd = sock.id();
        // Counted in the caller, with its handshake's slot released.
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

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "limit-test-passphrase";

    /// Publishers only; the stream id "secret" needs [`PASS`].
    fn gate(sid: &str) -> Decision {
        Decision::Accept {
            mode: Mode::Receive,
            passphrase: (sid == "secret").then(|| PASS.to_string()),
        }
    }

    fn start(max: usize) -> (Server, mpsc::Receiver<Incoming>) {
        let cfg = ServerConfig {
            max_connections: max,
            ..ServerConfig::default()
        };
        Server::start("127.0.0.1:0".parse().unwrap(), cfg, Arc::new(gate)).expect("listener")
    }

    /// A caller: its socket, or the reject reason it got.
    fn call(addr: SocketAddr, sid: &str, pass: Option<&str>) -> Result<Socket, i32> {
        let s = Socket::new().expect("socket");
        s.set_str(sys::SRTO_STREAMID, sid).expect("stream id");
        if let Some(p) = pass {
            s.set_passphrase(p).expect("passphrase");
        }
        match s.connect(addr) {
            Ok(()) => Ok(s),
            Err(_) => Err(s.reject_reason()),
        }
    }

    fn recv(incoming: &mut mpsc::Receiver<Incoming>) -> Incoming {
        for _ in 0..250 {
            if let Ok(inc) = incoming.try_recv() {
                return inc;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no connection handed over");
    }

    fn wait_in_use(server: &Server, want: usize) {
        for _ in 0..500 {
            if server.connections() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} slots in use, want {want} ({} connections held)",
            server.connections(),
            server.slots.live.load(Ordering::SeqCst),
        );
    }

    #[test]
    fn callers_beyond_the_limit_are_refused_and_every_close_frees_its_slot() {
        let (server, mut incoming) = start(2);
        let addr = server.local_addr();
        let a = call(addr, "a", None).expect("first caller");
        let b = call(addr, "b", None).expect("second caller");
        for _ in 0..3 {
            assert_eq!(call(addr, "c", None).err(), Some(reject::OVERLOAD));
        }
        wait_in_use(&server, 2);
        let mut held = vec![recv(&mut incoming), recv(&mut incoming)];

        // The caller hangs up.
        drop(a);
        wait_in_use(&server, 1);
        // The consumer goes away (the publisher's channel is dropped).
        let c = call(addr, "c", None).expect("a slot after a caller left");
        wait_in_use(&server, 2);
        held.clear();
        wait_in_use(&server, 1);
        drop(c);
        drop(b);
        wait_in_use(&server, 0);

        // Many short connections leak nothing, whichever side ends them
        // and however soon.
        for i in 0..30 {
            let s = call(addr, &format!("s{i}"), None).expect("short caller");
            match i % 3 {
                0 => drop(s),
                1 => {
                    wait_in_use(&server, 1);
                    drop(s);
                }
                _ => {
                    let inc = recv(&mut incoming);
                    drop(inc);
                    wait_in_use(&server, 0);
                }
            }
            wait_in_use(&server, 0);
            while incoming.try_recv().is_ok() {}
        }
        // Handshakes libsrt refuses after the callback (no passphrase
        // where one is required) give their slots back too.
        for _ in 0..4 {
            let r = call(addr, "secret", None);
            assert!(
                matches!(r, Err(code) if code != reject::OVERLOAD),
                "a caller without the passphrase must fail on its own"
            );
        }
        let x = call(addr, "secret", Some(PASS)).expect("with the passphrase");
        let y = call(addr, "y", None).expect("the second slot");
        assert_eq!(call(addr, "z", None).err(), Some(reject::OVERLOAD));
        drop((x, y));
        wait_in_use(&server, 0);
        while incoming.try_recv().is_ok() {}
    }
}
