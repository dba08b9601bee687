//! A thin, safe binding to libsrt (1.5, linked through pkg-config), and the
//! per-listener driver thread Banyan runs SRT with.
//!
//! * [`sys`]: hand-written `extern "C"` declarations of what we use.
//! * [`Socket`], [`Epoll`], [`MsgCtrl`], [`Stats`]: the safe layer. Every
//!   `unsafe` block is small and states the invariant it relies on.
//! * [`server`]: one dedicated OS thread per listener runs `srt_epoll`,
//!   accepts, reads and writes, and talks to tokio through bounded channels.
//!   The listen callback asks a [`server::Gate`] (an in-memory lookup) whether
//!   to accept a stream id, in which direction and with which passphrase.
//!
//! Nothing here panics on peer input; libsrt errors become [`SrtError`].

use std::ffi::{CStr, CString};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Once;
use std::time::Duration;

use libc::{c_int, c_void};

pub mod server;
pub mod sys;

/// Errors of the SRT binding.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SrtError {
    /// A libsrt call failed; `code` is libsrt's `SRT_ERRNO`, `message` its text.
    #[error("srt {op}: {message} ({code})")]
    Api {
        op: &'static str,
        code: i32,
        message: String,
    },
    /// The call would block (non-blocking socket, nothing to read or no room to send).
    #[error("srt {op}: would block")]
    WouldBlock { op: &'static str },
    /// An argument cannot be passed to libsrt (interior NUL, size out of range).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// libsrt returned an address family we do not handle.
    #[error("unsupported address family {0}")]
    AddressFamily(i32),
}

static STARTUP: Once = Once::new();

/// Initialise libsrt once per process. Called by every constructor here; it
/// is never cleaned up (libsrt's global state lives as long as the process).
/// libsrt's own log lines go to `tracing` (target `libsrt`): its errors and
/// warnings mostly describe what a refused or broken peer did, so they are
/// logged at debug level.
pub fn startup() {
    STARTUP.call_once(|| {
        // SAFETY: srt_startup takes no arguments and is safe to call once
        // before any other libsrt function; `Once` serialises it. The log
        // handler is a plain function that never unwinds and needs no state.
        unsafe {
            sys::srt_setloghandler(std::ptr::null_mut(), Some(log_handler));
            sys::srt_setlogflags(sys::SRT_LOGF_ALL_DISABLED);
            sys::srt_setloglevel(sys::LOG_WARNING);
            sys::srt_startup();
        }
    });
}

unsafe extern "C" fn log_handler(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const libc::c_char,
    _line: c_int,
    _area: *const libc::c_char,
    message: *const libc::c_char,
) {
    let _ = std::panic::catch_unwind(|| {
        if message.is_null() {
            return;
        }
        // SAFETY: libsrt passes a NUL-terminated message valid for the call.
        let msg = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        let msg = msg.trim_end();
        if level <= sys::LOG_CRIT {
            tracing::warn!(target: "libsrt", "{msg}");
        } else {
            tracing::debug!(target: "libsrt", level, "{msg}");
        }
    });
}

/// libsrt's monotonic clock in microseconds, the clock of [`MsgCtrl::srctime`].
pub fn time_now() -> i64 {
    startup();
    // SAFETY: no arguments, no preconditions besides startup.
    unsafe { sys::srt_time_now() }
}

/// The calling thread's last libsrt error as `(code, message)`.
fn last_error() -> (i32, String) {
    let mut errno: c_int = 0;
    // SAFETY: srt_getlasterror writes one int through a valid pointer; the
    // error state is thread local in libsrt.
    let code = unsafe { sys::srt_getlasterror(&mut errno) };
    // SAFETY: srt_getlasterror_str returns a pointer to a thread-local,
    // NUL-terminated buffer valid until the next libsrt call on this thread;
    // we copy it out at once.
    let message = unsafe {
        let p = sys::srt_getlasterror_str();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    (code, message)
}

fn api_error(op: &'static str) -> SrtError {
    let (code, message) = last_error();
    if code == sys::SRT_EASYNCRCV || code == sys::SRT_EASYNCSND || code == sys::SRT_ETIMEOUT {
        return SrtError::WouldBlock { op };
    }
    SrtError::Api { op, code, message }
}

fn check(op: &'static str, rc: c_int) -> Result<c_int, SrtError> {
    if rc == sys::SRT_ERROR {
        Err(api_error(op))
    } else {
        Ok(rc)
    }
}

/// A text for a reject reason code (libsrt's own below 1000, ours above).
pub fn reject_reason_str(code: i32) -> String {
    if code >= 1000 {
        return format!("rejected by the server ({code})");
    }
    // SAFETY: srt_rejectreason_str returns a pointer to a static string for
    // any code (unknown codes map to a fixed text).
    unsafe {
        let p = sys::srt_rejectreason_str(code);
        if p.is_null() {
            return format!("reason {code}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// A socket address in C form, large enough for IPv4 and IPv6.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: c_int,
}

impl RawAddr {
    fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as c_int,
        }
    }

    fn from_std(addr: SocketAddr) -> RawAddr {
        let mut raw = RawAddr::empty();
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and suitably aligned
                // for sockaddr_in; we write one whole struct at its start.
                unsafe {
                    std::ptr::write(&mut raw.storage as *mut _ as *mut libc::sockaddr_in, sin)
                };
                raw.len = std::mem::size_of::<libc::sockaddr_in>() as c_int;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe {
                    std::ptr::write(&mut raw.storage as *mut _ as *mut libc::sockaddr_in6, sin6)
                };
                raw.len = std::mem::size_of::<libc::sockaddr_in6>() as c_int;
            }
        }
        raw
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        &mut self.storage as *mut _ as *mut libc::sockaddr
    }
}

/// Convert a C socket address to a Rust one.
///
/// # Safety
/// `p` is null or points to a valid `sockaddr` whose family tells its size.
pub(crate) unsafe fn sockaddr_to_std(p: *const libc::sockaddr) -> Result<SocketAddr, SrtError> {
    if p.is_null() {
        return Err(SrtError::AddressFamily(-1));
    }
    match (*p).sa_family as c_int {
        libc::AF_INET => {
            let sin = &*(p as *const libc::sockaddr_in);
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let sin6 = &*(p as *const libc::sockaddr_in6);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        f => Err(SrtError::AddressFamily(f)),
    }
}

/// Transmission type (`SRTO_TRANSTYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransType {
    Live,
    File,
}

/// Message control of one send or receive (`SRT_MSGCTRL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgCtrl {
    /// Source time in microseconds of [`time_now`]'s clock; 0 means "now".
    pub srctime: i64,
    /// Message number (output).
    pub msgno: i32,
    /// Sequence number of the first packet of a received message (output).
    pub pktseq: i32,
}

impl Default for MsgCtrl {
    /// libsrt's defaults: no source time, message and packet numbers chosen
    /// by libsrt (-1; 0 is refused as a parameter error).
    fn default() -> Self {
        MsgCtrl {
            srctime: 0,
            msgno: -1,
            pktseq: -1,
        }
    }
}

impl MsgCtrl {
    fn to_sys(self) -> sys::SRT_MSGCTRL {
        sys::SRT_MSGCTRL {
            flags: 0,
            msgttl: -1,
            inorder: 0,
            boundary: 0,
            srctime: self.srctime,
            pktseq: self.pktseq,
            msgno: self.msgno,
            grpdata: std::ptr::null_mut(),
            grpdata_size: 0,
        }
    }
}

/// A subset of a socket's statistics (`srt_bstats`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub pkt_sent_total: i64,
    pub pkt_recv_total: i64,
    pub pkt_snd_loss_total: i32,
    pub pkt_rcv_loss_total: i32,
    pub pkt_retrans_total: i32,
    pub pkt_snd_drop_total: i32,
    pub pkt_rcv_drop_total: i32,
    pub pkt_rcv_undecrypt_total: i32,
    pub rtt_ms: f64,
    pub snd_buf_ms: i32,
    pub rcv_buf_ms: i32,
    pub rcv_tsbpd_delay_ms: i32,
    pub snd_tsbpd_delay_ms: i32,
}

/// An owned libsrt socket; closed on drop.
#[derive(Debug)]
pub struct Socket {
    id: sys::SRTSOCKET,
}

impl Socket {
    /// A new, unbound socket.
    pub fn new() -> Result<Socket, SrtError> {
        startup();
        // SAFETY: no arguments; returns a socket id or SRT_INVALID_SOCK.
        let id = unsafe { sys::srt_create_socket() };
        if id == sys::SRT_INVALID_SOCK {
            return Err(api_error("create_socket"));
        }
        Ok(Socket { id })
    }

    /// Take ownership of a socket id returned by libsrt.
    ///
    /// # Safety
    /// `id` is a valid socket nobody else closes.
    pub unsafe fn from_raw(id: sys::SRTSOCKET) -> Socket {
        Socket { id }
    }

    pub fn id(&self) -> sys::SRTSOCKET {
        self.id
    }

    pub fn bind(&self, addr: SocketAddr) -> Result<(), SrtError> {
        let raw = RawAddr::from_std(addr);
        // SAFETY: `raw` holds a valid sockaddr of `raw.len` bytes for the call.
        check("bind", unsafe {
            sys::srt_bind(self.id, raw.as_ptr(), raw.len)
        })?;
        Ok(())
    }

    /// Connect as a caller (blocks until the handshake ends unless the
    /// socket is non-blocking). Used by tests and tools; the node only listens.
    pub fn connect(&self, addr: SocketAddr) -> Result<(), SrtError> {
        let raw = RawAddr::from_std(addr);
        // SAFETY: `raw` holds a valid sockaddr of `raw.len` bytes for the call.
        check("connect", unsafe {
            sys::srt_connect(self.id, raw.as_ptr(), raw.len)
        })?;
        Ok(())
    }

    pub fn listen(&self, backlog: i32) -> Result<(), SrtError> {
        // SAFETY: plain value arguments.
        check("listen", unsafe { sys::srt_listen(self.id, backlog) })?;
        Ok(())
    }

    /// Accept one pending connection (would block on a non-blocking listener
    /// with none pending).
    pub fn accept(&self) -> Result<(Socket, SocketAddr), SrtError> {
        let mut raw = RawAddr::empty();
        // SAFETY: `raw` is a writable sockaddr_storage and `raw.len` its size.
        let id = unsafe { sys::srt_accept(self.id, raw.as_mut_ptr(), &mut raw.len) };
        if id == sys::SRT_INVALID_SOCK {
            return Err(api_error("accept"));
        }
        // SAFETY: libsrt returned a fresh socket id that we now own.
        let sock = unsafe { Socket::from_raw(id) };
        // SAFETY: libsrt filled `raw` with the peer address.
        let peer = unsafe { sockaddr_to_std(raw.as_ptr()) }?;
        Ok((sock, peer))
    }

    pub fn local_addr(&self) -> Result<SocketAddr, SrtError> {
        let mut raw = RawAddr::empty();
        // SAFETY: `raw` is writable and `raw.len` its size.
        check("getsockname", unsafe {
            sys::srt_getsockname(self.id, raw.as_mut_ptr(), &mut raw.len)
        })?;
        // SAFETY: libsrt filled `raw`.
        unsafe { sockaddr_to_std(raw.as_ptr()) }
    }

    fn set_raw(&self, opt: c_int, val: *const c_void, len: usize) -> Result<(), SrtError> {
        let len = c_int::try_from(len).map_err(|_| SrtError::InvalidArgument("option length"))?;
        // SAFETY: callers pass a pointer to `len` readable bytes; libsrt copies them.
        check("setsockflag", unsafe {
            sys::srt_setsockflag(self.id, opt, val, len)
        })?;
        Ok(())
    }

    /// Set an integer option.
    pub fn set_i32(&self, opt: c_int, v: i32) -> Result<(), SrtError> {
        self.set_raw(opt, &v as *const i32 as *const c_void, 4)
    }

    /// Set a boolean option.
    pub fn set_bool(&self, opt: c_int, v: bool) -> Result<(), SrtError> {
        self.set_i32(opt, v as i32)
    }

    /// Set a string option (passphrase, stream id).
    pub fn set_str(&self, opt: c_int, v: &str) -> Result<(), SrtError> {
        self.set_raw(opt, v.as_ptr() as *const c_void, v.len())
    }

    /// Read an option into `buf`, returning the length libsrt wrote.
    fn get_raw(&self, opt: c_int, buf: &mut [u8]) -> Result<usize, SrtError> {
        let mut len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `buf` is writable for `len` bytes; libsrt writes at most
        // that many and stores the written length in `len`.
        check("getsockflag", unsafe {
            sys::srt_getsockflag(self.id, opt, buf.as_mut_ptr() as *mut c_void, &mut len)
        })?;
        Ok(usize::try_from(len).unwrap_or(0).min(buf.len()))
    }

    pub fn get_i32(&self, opt: c_int) -> Result<i32, SrtError> {
        let mut buf = [0u8; 4];
        self.get_raw(opt, &mut buf)?;
        Ok(i32::from_ne_bytes(buf))
    }

    pub fn get_bool(&self, opt: c_int) -> Result<bool, SrtError> {
        let mut buf = [0u8; 4];
        let n = self.get_raw(opt, &mut buf)?;
        Ok(buf[..n.max(1)].iter().any(|&b| b != 0))
    }

    pub fn get_string(&self, opt: c_int) -> Result<String, SrtError> {
        let mut buf = [0u8; 1024];
        let n = self.get_raw(opt, &mut buf)?;
        let s = &buf[..n];
        let s = s.split(|&b| b == 0).next().unwrap_or(s);
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    /// The stream id the caller sent.
    pub fn stream_id(&self) -> Result<String, SrtError> {
        self.get_string(sys::SRTO_STREAMID)
    }

    pub fn set_passphrase(&self, pass: &str) -> Result<(), SrtError> {
        self.set_str(sys::SRTO_PASSPHRASE, pass)
    }

    /// Receive latency and the latency asked of the peer.
    pub fn set_latency(&self, latency: Duration) -> Result<(), SrtError> {
        let ms =
            i32::try_from(latency.as_millis()).map_err(|_| SrtError::InvalidArgument("latency"))?;
        self.set_i32(sys::SRTO_LATENCY, ms)
    }

    /// Blocking (default) or non-blocking sends and receives.
    pub fn set_nonblocking(&self, nb: bool) -> Result<(), SrtError> {
        self.set_bool(sys::SRTO_RCVSYN, !nb)?;
        self.set_bool(sys::SRTO_SNDSYN, !nb)
    }

    pub fn trans_type(&self) -> Result<TransType, SrtError> {
        // TRANSTYPE is write-only in libsrt; a file-mode peer shows as
        // message API off.
        Ok(if self.get_bool(sys::SRTO_MESSAGEAPI)? {
            TransType::Live
        } else {
            TransType::File
        })
    }

    /// Send one message (at most 1456 bytes in live mode).
    pub fn send(&self, buf: &[u8], ctrl: &mut MsgCtrl) -> Result<usize, SrtError> {
        let len =
            c_int::try_from(buf.len()).map_err(|_| SrtError::InvalidArgument("message size"))?;
        let mut c = ctrl.to_sys();
        // SAFETY: `buf` is readable for `len` bytes and `c` is a valid
        // SRT_MSGCTRL for the duration of the call.
        let n = check("sendmsg2", unsafe {
            sys::srt_sendmsg2(self.id, buf.as_ptr() as *const libc::c_char, len, &mut c)
        })?;
        ctrl.msgno = c.msgno;
        Ok(n as usize)
    }

    /// Receive one message into `buf`.
    pub fn recv(&self, buf: &mut [u8], ctrl: &mut MsgCtrl) -> Result<usize, SrtError> {
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        let mut c = ctrl.to_sys();
        // SAFETY: `buf` is writable for `len` bytes and `c` is a valid
        // SRT_MSGCTRL for the duration of the call.
        let n = check("recvmsg2", unsafe {
            sys::srt_recvmsg2(self.id, buf.as_mut_ptr() as *mut libc::c_char, len, &mut c)
        })?;
        ctrl.srctime = c.srctime;
        ctrl.msgno = c.msgno;
        ctrl.pktseq = c.pktseq;
        Ok((n as usize).min(buf.len()))
    }

    /// When the connection was established, in [`time_now`]'s clock.
    pub fn connection_time(&self) -> i64 {
        // SAFETY: plain value argument; returns -1 on error.
        unsafe { sys::srt_connection_time(self.id) }
    }

    /// The reason libsrt recorded for a rejected connection.
    pub fn reject_reason(&self) -> i32 {
        // SAFETY: plain value argument.
        unsafe { sys::srt_getrejectreason(self.id) }
    }

    pub fn stats(&self, clear: bool) -> Result<Stats, SrtError> {
        let mut s = sys::SRT_TRACEBSTATS::default();
        // SAFETY: `s` is a valid, writable SRT_TRACEBSTATS with the 1.5 layout.
        check("bstats", unsafe {
            sys::srt_bstats(self.id, &mut s, clear as c_int)
        })?;
        let mut i = sys::SRT_TRACEBSTATS::default();
        // SAFETY: as above; instantaneous values.
        check("bistats", unsafe {
            sys::srt_bistats(self.id, &mut i, 0, 1)
        })?;
        Ok(Stats {
            pkt_sent_total: s.pktSentTotal,
            pkt_recv_total: s.pktRecvTotal,
            pkt_snd_loss_total: s.pktSndLossTotal,
            pkt_rcv_loss_total: s.pktRcvLossTotal,
            pkt_retrans_total: s.pktRetransTotal,
            pkt_snd_drop_total: s.pktSndDropTotal,
            pkt_rcv_drop_total: s.pktRcvDropTotal,
            pkt_rcv_undecrypt_total: s.pktRcvUndecryptTotal,
            rtt_ms: i.msRTT,
            snd_buf_ms: i.msSndBuf,
            rcv_buf_ms: i.msRcvBuf,
            rcv_tsbpd_delay_ms: i.msRcvTsbPdDelay,
            snd_tsbpd_delay_ms: i.msSndTsbPdDelay,
        })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: we own `id`; closing an already broken socket is harmless.
        unsafe {
            sys::srt_close(self.id);
        }
    }
}

/// Readiness events of a socket in an [`Epoll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    pub readable: bool,
    pub writable: bool,
    pub error: bool,
}

impl Events {
    fn bits(self) -> c_int {
        (if self.readable { sys::SRT_EPOLL_IN } else { 0 })
            | (if self.writable { sys::SRT_EPOLL_OUT } else { 0 })
            | (if self.error { sys::SRT_EPOLL_ERR } else { 0 })
    }

    fn from_bits(b: c_int) -> Events {
        Events {
            readable: b & sys::SRT_EPOLL_IN != 0,
            writable: b & sys::SRT_EPOLL_OUT != 0,
            error: b & sys::SRT_EPOLL_ERR != 0,
        }
    }
}

/// An SRT epoll set (level triggered).
#[derive(Debug)]
pub struct Epoll {
    eid: c_int,
    buf: Vec<sys::SRT_EPOLL_EVENT>,
}

impl Epoll {
    /// A new set returning at most `capacity` events per wait.
    pub fn new(capacity: usize) -> Result<Epoll, SrtError> {
        startup();
        // SAFETY: no arguments.
        let eid = check("epoll_create", unsafe { sys::srt_epoll_create() })?;
        // SAFETY: plain value arguments; allows waiting on an empty set.
        unsafe { sys::srt_epoll_set(eid, sys::SRT_EPOLL_ENABLE_EMPTY) };
        Ok(Epoll {
            eid,
            buf: vec![sys::SRT_EPOLL_EVENT::default(); capacity.max(1)],
        })
    }

    pub fn add(&self, sock: &Socket, ev: Events) -> Result<(), SrtError> {
        let bits = ev.bits();
        // SAFETY: `bits` outlives the call.
        check("epoll_add_usock", unsafe {
            sys::srt_epoll_add_usock(self.eid, sock.id, &bits)
        })?;
        Ok(())
    }

    pub fn update(&self, sock: &Socket, ev: Events) -> Result<(), SrtError> {
        let bits = ev.bits();
        // SAFETY: `bits` outlives the call.
        check("epoll_update_usock", unsafe {
            sys::srt_epoll_update_usock(self.eid, sock.id, &bits)
        })?;
        Ok(())
    }

    pub fn remove(&self, sock: &Socket) {
        // SAFETY: plain value arguments; removing an unknown socket only errs.
        unsafe {
            sys::srt_epoll_remove_usock(self.eid, sock.id);
        }
    }

    /// Wait up to `timeout` and return the ready sockets.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<(sys::SRTSOCKET, Events)>, SrtError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let cap = c_int::try_from(self.buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `buf` holds `cap` writable events.
        let n = unsafe { sys::srt_epoll_uwait(self.eid, self.buf.as_mut_ptr(), cap, ms) };
        if n < 0 {
            let e = api_error("epoll_uwait");
            return match e {
                SrtError::WouldBlock { .. } => Ok(Vec::new()),
                e => Err(e),
            };
        }
        let n = (n as usize).min(self.buf.len());
        Ok(self.buf[..n]
            .iter()
            .map(|e| (e.fd, Events::from_bits(e.events)))
            .collect())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own `eid`.
        unsafe {
            sys::srt_epoll_release(self.eid);
        }
    }
}

/// Turn a Rust string into a C string for libsrt, refusing interior NULs.
pub fn c_string(s: &str) -> Result<CString, SrtError> {
    CString::new(s).map_err(|_| SrtError::InvalidArgument("interior NUL"))
}
