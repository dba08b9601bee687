//! What happens on a connection before RTMP (or TLS) starts: the PROXY
//! protocol header of a trusted load balancer, read under the handshake
//! deadline, and the stream that gives back the bytes read past it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

use crate::proxy_protocol::{self, Parsed, ProxyError};

/// A stream whose first bytes were already read: they are given back first.
pub struct Rewind<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(pre: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind { pre, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why the PROXY header could not be read.
#[derive(Debug)]
pub enum FrontError {
    Io(io::Error),
    Closed,
    Proxy(ProxyError),
}

/// Read a PROXY protocol header (v1 or v2) from `io`; the caller bounds the
/// time. Returns the client's address (`None` for the proxy's own
/// connections) and the bytes read past the header.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<(Option<SocketAddr>, Vec<u8>), FrontError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        match proxy_protocol::parse(&buf).map_err(FrontError::Proxy)? {
            Parsed::Complete(h) => return Ok((h.source, buf.split_off(h.len))),
            Parsed::Incomplete(_) => {}
        }
        let n = io.read(&mut chunk).await.map_err(FrontError::Io)?;
        if n == 0 {
            return Err(FrontError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn header_then_the_rest_is_given_back() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"PROXY TCP4 192.0.2.1 10.0.0.1 4000 1935\r\n\x03hello")
            .await
            .unwrap();
        let (src, rest) = read_proxy_header(&mut b).await.unwrap();
        assert_eq!(src, Some("192.0.2.1:4000".parse().unwrap()));
        let mut r = Rewind::new(rest, b);
        let mut got = [0u8; 6];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x03hello");
        let (mut a2, mut b2) = tokio::io::duplex(64);
        a2.write_all(b"\x03\x00\x00\x00").await.unwrap();
        assert!(matches!(
            read_proxy_header(&mut b2).await,
            Err(FrontError::Proxy(ProxyError::NotProxy))
        ));
    }
}
