//! Idle keep-alive connections held without an HTTP connection's buffers.
//!
//! A hyper HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for as long as it lives, idle or not; a player that polls a
//! playlist once a second spends nearly all its time idle. So the listener
//! runs hyper only while a connection has something to do: [`Lean`] wraps
//! the connection's stream, and when hyper waits for the next request with
//! nothing left to do (no response open, every byte written, the last byte
//! read ending a request head) it reads an end of stream instead of
//! waiting. hyper then ends cleanly without closing the stream, the
//! listener takes the stream back (`into_parts`) and waits for the next
//! bytes itself, holding only the stream; the next request starts a new
//! hyper connection. Responses are not marked `connection: close`: to the
//! client it is one kept-alive connection.
//!
//! The rule never cuts a request short: a request head split across reads
//! leaves the last byte read short of `\r\n\r\n`, a request being answered
//! holds an [`Open`] until its response body ends, and a response hyper
//! has not finished writing leaves the stream [`Shared::dirty`] until hyper
//! flushes it (hyper flushes the stream only once its own buffer is empty).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::deadline::StallGuard;

/// What the connection's stream and its requests share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Requests whose response has not ended.
    open: AtomicUsize,
    /// Something was written (or a response ended) since the stream was
    /// last flushed.
    dirty: AtomicBool,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    fn idle(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && !self.dirty.load(Ordering::Relaxed)
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
}

impl ReadReady for StallGuard<TcpStream> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
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
}

/// The connection's stream as hyper sees it: see the module's text.
pub struct Lean<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The last four bytes read (`\r\n\r\n` before any: nothing pending).
    tail: [u8; 4],
    /// This stream told hyper the connection was idle.
    parked: bool,
    /// hyper's task, waiting to read: woken when the stream becomes idle.
    reader: Option<Waker>,
}

const HEAD_END: [u8; 4] = *b"\r\n\r\n";

impl<S> Lean<S> {
    pub fn new(inner: S, shared: Arc<Shared>) -> Lean<S> {
        Lean {
            inner,
            shared,
            tail: HEAD_END,
            parked: false,
            reader: None,
        }
    }

    /// Whether hyper's last connection ended because it went idle (and
    /// not because the client closed or asked to close).
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// Before handing the stream to a new hyper connection.
    pub fn unpark(&mut self) {
        self.parked = false;
        self.reader = None;
    }

    fn idle(&self) -> bool {
        self.tail == HEAD_END && self.shared.idle()
    }

    fn note_read(&mut self, got: &[u8]) {
        if got.len() >= 4 {
            self.tail.copy_from_slice(&got[got.len() - 4..]);
        } else {
            for &b in got {
                self.tail.rotate_left(1);
                self.tail[3] = b;
            }
        }
    }
}

impl<S: ReadReady> Lean<S> {
    /// Wait until the client sends something (or closes).
    pub async fn ready(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.inner.poll_read_ready(cx)).await
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lean<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                let n = got.len().min(4);
                let mut last = [0u8; 4];
                last[..n].copy_from_slice(&got[got.len() - n..]);
                self.note_read(&last[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.idle() => {
                // Nothing to read, nothing to answer, nothing to write:
                // end hyper's connection here (an end of stream with
                // nothing buffered is a clean end to it).
                self.parked = true;
                self.reader = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                self.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            r => r,
        }
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
            if self.idle() {
                if let Some(w) = self.reader.take() {
                    w.wake();
                }
            }
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

    #[test]
    fn the_tail_follows_reads_of_any_length() {
        let mut l = Lean::new((), Shared::new());
        assert!(l.idle());
        l.note_read(b"GET / HTTP/1.1\r\nhost: x\r\n");
        assert!(!l.idle(), "a head without its end");
        l.note_read(b"\r");
        l.note_read(b"\n");
        assert!(l.idle());
        l.note_read(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HT");
        assert!(!l.idle(), "a pipelined head cut short");
        l.note_read(b"TP/1.1\r\n\r\n");
        assert!(l.idle());
    }

    #[test]
    fn an_open_response_or_unflushed_bytes_are_not_idle() {
        let shared = Shared::new();
        let l = Lean::new((), shared.clone());
        let open = Open::new(&shared);
        assert!(!l.idle(), "a response is open");
        drop(open);
        assert!(!l.idle(), "the response ended but was not flushed");
        shared.dirty.store(false, Ordering::Relaxed);
        assert!(l.idle());
    }
}
