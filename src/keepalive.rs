//! Idle keep-alive connections held without an HTTP connection's buffers.
//!
//! A hyper HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for as long as it lives, idle or not; a player that polls a
//! playlist once a second spends nearly all its time idle. So the listener
//! runs hyper only while a connection has something to do: [`Lean`] wraps
//! the connection's stream and records in [`Shared`] what hyper does with
//! it, and each time hyper's connection waits, the listener asks
//! [`Shared::idle`]: no response open, every byte written and flushed,
//! hyper waiting to read, and the last byte read ending a request head.
//! Then it takes the stream back from hyper (`into_parts`), drops hyper's
//! connection with its buffers, and waits for the next bytes itself,
//! holding only the stream; the next request starts a new hyper connection.
//! Responses are not marked `connection: close`: to the client it is one
//! kept-alive connection.
//!
//! The rule never cuts a request short: a request head split across reads
//! leaves the last byte read short of `\r\n\r\n`, a request being answered
//! holds an [`Open`] until its response body ends, and bytes hyper has
//! written but not flushed leave the stream dirty (hyper flushes the
//! stream only once its own buffer is empty).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::deadline::StallGuard;

/// What the connection's stream and its requests share, for the listener
/// to see between two polls of hyper's connection.
#[derive(Debug)]
pub struct Shared {
    /// Requests whose response has not ended.
    open: AtomicUsize,
    /// Something was written (or a response ended) since the stream was
    /// last flushed.
    dirty: AtomicBool,
    /// The last four bytes read (`\r\n\r\n` before any: nothing pending).
    tail: AtomicU32,
    /// The last read found nothing to read.
    waiting: AtomicBool,
    /// A read found the end of the stream: the client closed its side.
    closed: AtomicBool,
}

const HEAD_END: u32 = u32::from_be_bytes(*b"\r\n\r\n");

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            open: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            tail: AtomicU32::new(HEAD_END),
            waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// Whether the client closed its side of the connection (nothing is
    /// left unread, so closing ours needs no `shutdown` first).
    pub fn peer_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether hyper's connection, now waiting, has nothing left to do
    /// until the client sends more: see the module's text.
    pub fn idle(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0
            && !self.dirty.load(Ordering::Relaxed)
            && self.waiting.load(Ordering::Relaxed)
            && self.tail.load(Ordering::Relaxed) == HEAD_END
    }

    fn note_read(&self, got: &[u8]) {
        let mut tail = self.tail.load(Ordering::Relaxed);
        for &b in &got[got.len().saturating_sub(4)..] {
            tail = (tail << 8) | u32::from(b);
        }
        self.tail.store(tail, Ordering::Relaxed);
    }
}

/// One request being answered; dropped when its response body ends (or
/// when the request is dropped unanswered).
#[derive(Debug)]
pub struct Open(Arc<Shared>);

impl Open {
    pub fn new(shared: &Arc<Shared>) -> Open {
        shared.open.fetch_add(1, Ordering::Relaxed);
        Open(shared.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dirty.store(true, Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that releases its [`Open`] at its end.
pub struct Tracked<B> {
    inner: B,
    open: Option<Open>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, open: Open) -> Tracked<B> {
        Tracked {
            inner,
            open: Some(open),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.open = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream the listener can wait on for something to read without
/// reading it.
pub trait ReadReady {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Read what is there now without waiting, if the stream can (`None`:
    /// it cannot, leave the reading to hyper).
    fn try_read_now(&mut self, _buf: &mut [u8]) -> Option<io::Result<usize>> {
        None
    }
}

impl ReadReady for StallGuard<TcpStream> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }

    fn try_read_now(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some(self.get_ref().try_read(buf))
    }
}

impl<S: ReadReady> ReadReady for tokio_rustls::server::TlsStream<S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, tls) = self.get_mut();
        // The handshake may have read the first request with it: what TLS
        // already holds is ready now (and so is an error or a close, for
        // hyper to read).
        match tls.process_new_packets() {
            Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => {
                io.poll_read_ready(cx)
            }
            _ => Poll::Ready(Ok(())),
        }
    }

    /// What TLS has decrypted, after taking what the socket holds now: the
    /// same read-ahead as plain TCP, so an HTTPS request is answered past
    /// hyper too and a client that closed is seen without hyper.
    fn try_read_now(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        use std::io::Read as _;
        let (io, tls) = self.get_mut();
        loop {
            if let Err(e) = tls.process_new_packets() {
                return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            match tls.reader().read(buf) {
                Ok(n) => return Some(Ok(n)), // 0: the client's close_notify
                // Closed without close_notify, as many clients do.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Some(Ok(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Some(Err(e)),
            }
            // Nothing decrypted yet: feed TLS what has arrived, if anything.
            let mut now = ReadNow { io, unable: false };
            match tls.read_tls(&mut now) {
                _ if now.unable => return None,
                Ok(0) => return Some(Ok(0)),
                Ok(_) => {}
                Err(e) => return Some(Err(e)), // WouldBlock: nothing yet
            }
        }
    }
}

/// A stream's [`ReadReady::try_read_now`] as [`std::io::Read`], for TLS
/// to read records from.
struct ReadNow<'a, S> {
    io: &'a mut S,
    /// The stream cannot read without waiting.
    unable: bool,
}

impl<S: ReadReady> std::io::Read for ReadNow<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.io.try_read_now(buf) {
            Some(r) => r,
            None => {
                self.unable = true;
                Err(io::ErrorKind::Unsupported.into())
            }
        }
    }
}

/// The connection's stream as hyper sees it: see the module's text.
pub struct Lean<S> {
    inner: S,
    shared: Arc<Shared>,
    /// Bytes the listener read before hyper ran, for hyper's first reads.
    head: Vec<u8>,
    /// How much of `head` hyper has read.
    head_read: usize,
}

/// What the listener found when the client sent something.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrived {
    /// Bytes (kept for hyper), or the stream cannot be read ahead: run
    /// hyper.
    Request,
    /// The client closed: close without starting hyper.
    Closed,
    /// Nothing after all: wait again.
    Nothing,
    /// The read failed.
    Failed(io::ErrorKind),
}

/// Bytes read ahead of hyper: a request head, usually whole.
const HEAD_READ: usize = 1024;

impl<S> Lean<S> {
    pub fn new(inner: S, shared: Arc<Shared>) -> Lean<S> {
        Lean {
            inner,
            shared,
            head: Vec::new(),
            head_read: 0,
        }
    }
}

impl<S: ReadReady> Lean<S> {
    /// Wait until the client sends something (or closes).
    pub async fn ready(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.inner.poll_read_ready(cx)).await
    }

    /// Once [`Lean::ready`]: read what arrived, so that a client that
    /// closed (as players do after a download) is seen without building
    /// an HTTP connection for it. Bytes read are kept for hyper.
    pub fn arrived(&mut self) -> Arrived {
        let mut buf = [0u8; HEAD_READ];
        match self.inner.try_read_now(&mut buf) {
            None => Arrived::Request,
            Some(Ok(0)) => {
                self.shared.closed.store(true, Ordering::Relaxed);
                Arrived::Closed
            }
            Some(Ok(n)) => {
                self.head = buf[..n].to_vec();
                self.head_read = 0;
                Arrived::Request
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Arrived::Nothing,
            Some(Err(e)) => Arrived::Failed(e.kind()),
        }
    }
}

impl<S> Lean<S> {
    /// The bytes read ahead, taken whole if `take` makes something of them
    /// (then hyper never sees them); left for hyper otherwise.
    pub fn take_head<T>(&mut self, take: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
        if self.head.is_empty() || self.head_read != 0 {
            return None;
        }
        let taken = take(&self.head)?;
        self.shared.note_read(&self.head);
        self.head = Vec::new();
        Some(taken)
    }

    /// The stream, for writing an answer past hyper.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lean<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.head_read < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.head_read);
            let got = &this.head[this.head_read..this.head_read + n];
            buf.put_slice(got);
            this.shared.note_read(got);
            this.shared.waiting.store(false, Ordering::Relaxed);
            this.head_read += n;
            if this.head_read == this.head.len() {
                this.head = Vec::new();
                this.head_read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let room = buf.remaining();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let shared = &this.shared;
        shared.waiting.store(r.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(Ok(())) = r {
            let got = &buf.filled()[before..];
            if got.is_empty() && room > 0 {
                shared.closed.store(true, Ordering::Relaxed);
            }
            shared.note_read(got);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lean<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.shared.dirty.store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.shared.dirty.store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            // hyper flushes the stream only with its own buffer empty.
            self.shared.dirty.store(false, Ordering::Relaxed);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A stream of bytes already arrived, then (if `eof`) the end.
    struct Arrivals {
        data: std::collections::VecDeque<u8>,
        eof: bool,
    }

    impl Arrivals {
        fn pull(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() && !self.eof {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.data.len());
            for (b, d) in buf.iter_mut().zip(self.data.drain(..n)) {
                *b = d;
            }
            Ok(n)
        }
    }

    impl AsyncRead for Arrivals {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut tmp = vec![0u8; buf.remaining()];
            match self.pull(&mut tmp) {
                Ok(n) => {
                    buf.put_slice(&tmp[..n]);
                    Poll::Ready(Ok(()))
                }
                Err(_) => Poll::Pending,
            }
        }
    }

    impl ReadReady for Arrivals {
        fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn try_read_now(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
            Some(self.pull(buf))
        }
    }

    fn arrivals(data: &[u8], eof: bool) -> Lean<Arrivals> {
        let inner = Arrivals {
            data: data.iter().copied().collect(),
            eof,
        };
        Lean::new(inner, Shared::new())
    }

    #[tokio::test]
    async fn bytes_read_ahead_reach_hyper_first_and_in_order() {
        // A head longer than what is read ahead, then a body.
        let mut req = b"POST /x HTTP/1.1\r\nx-pad: ".to_vec();
        req.extend(std::iter::repeat_n(b'p', HEAD_READ + 100));
        req.extend_from_slice(b"\r\ncontent-length: 4\r\n\r\nbody");
        let mut lean = arrivals(&req, true);
        assert_eq!(lean.arrived(), Arrived::Request);
        assert_eq!(lean.head.len(), HEAD_READ);
        let mut got = Vec::new();
        let mut chunk = [0u8; 300]; // smaller than what was read ahead
        loop {
            let n = lean.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == req, "hyper must read exactly what the client sent");
        assert!(lean.head.is_empty(), "the read-ahead is freed once read");
        assert!(lean.shared.peer_closed(), "the end was seen");
    }

    #[test]
    fn a_client_that_closed_or_sent_nothing_starts_no_http_connection() {
        let mut closed = arrivals(b"", true);
        assert_eq!(closed.arrived(), Arrived::Closed);
        assert!(closed.shared.peer_closed());
        let mut quiet = arrivals(b"", false);
        assert_eq!(quiet.arrived(), Arrived::Nothing);
        assert!(!quiet.shared.peer_closed());
    }

    #[tokio::test]
    async fn a_whole_head_read_ahead_leaves_the_connection_able_to_go_idle() {
        let mut lean = arrivals(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", false);
        assert_eq!(lean.arrived(), Arrived::Request);
        let mut buf = [0u8; 8192];
        let n = lean.read(&mut buf).await.expect("read");
        assert_eq!(n, 27);
        assert!(!lean.shared.idle(), "hyper has not waited to read yet");
        // hyper's next read finds nothing: waiting, after a whole head.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut rb = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut lean).poll_read(&mut cx, &mut rb).is_pending());
        assert!(lean.shared.idle());
    }

    fn waiting(shared: &Shared) -> &Shared {
        shared.waiting.store(true, Ordering::Relaxed);
        shared
    }

    #[test]
    fn the_tail_follows_reads_of_any_length() {
        let s = Shared::new();
        assert!(waiting(&s).idle());
        s.note_read(b"GET / HTTP/1.1\r\nhost: x\r\n");
        assert!(!s.idle(), "a head without its end");
        s.note_read(b"\r");
        s.note_read(b"\n");
        assert!(s.idle());
        s.note_read(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HT");
        assert!(!s.idle(), "a pipelined head cut short");
        s.note_read(b"TP/1.1\r\n\r\n");
        assert!(s.idle());
        s.note_read(b"");
        assert!(s.idle(), "nothing read changes nothing");
    }

    #[test]
    fn an_open_response_unflushed_bytes_or_a_busy_reader_are_not_idle() {
        let s = Shared::new();
        assert!(!s.idle(), "hyper has not waited to read yet");
        waiting(&s);
        let open = Open::new(&s);
        assert!(!s.idle(), "a response is open");
        drop(open);
        assert!(!s.idle(), "the response ended but was not flushed");
        s.dirty.store(false, Ordering::Relaxed);
        assert!(s.idle());
    }
}
