//! Simple requests answered without building an HTTP connection.
//!
//! Most of what players send is a `GET` of a playlist, a segment or an init
//! section: one head, no body, read whole by the listener ahead of hyper
//! (see [`crate::keepalive::Lean::arrived`]). For those the listener calls
//! the same router itself and writes the response, with no hyper
//! connection built for the request (hyper's buffers, its dispatcher and
//! the service's boxed future). Every other request goes to hyper
//! unchanged: anything but `GET` or `HEAD`, HTTP/1.0, a head cut short or
//! followed by more bytes (pipelined), a request that names a body, an
//! upgrade or an `Expect`, a target not in origin form, or more headers
//! than [`MAX_HEADERS`]. HTTPS is read ahead the same way, through TLS.
//!
//! [`parse`] and [`response_head`] take bytes and give bytes; [`answer`]
//! runs the router and writes.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::SystemTime;

use axum::extract::ConnectInfo;
use axum::Router;
use banyan_ingest::net::TrustedProxies;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Headers a request answered here may carry; more go to hyper.
pub const MAX_HEADERS: usize = 32;

/// A request head that can be answered here.
#[derive(Debug)]
pub struct SimpleGet {
    pub request: Request<()>,
    /// The client asked to close after this answer.
    pub close: bool,
}

/// `buf` as a request to answer here: exactly one whole head, of a `GET`
/// or `HEAD` over HTTP/1.1 with no body and nothing unusual (see the
/// module's text). `None`: leave it to hyper, which also answers what is
/// malformed.
pub fn parse(buf: &[u8]) -> Option<SimpleGet> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() => {}
        _ => return None,
    }
    if req.version != Some(1) {
        return None;
    }
    let method = match req.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let path = req.path?;
    if !path.starts_with('/') {
        return None;
    }
    let uri = Uri::try_from(path).ok()?;
    let mut map = HeaderMap::with_capacity(req.headers.len());
    let mut close = false;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        }
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::CONNECTION {
            value.to_str().ok()?; // not text: hyper's to judge
            if has_token(&value, "upgrade") {
                return None;
            }
            close |= has_token(&value, "close");
        }
        map.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Some(SimpleGet { request, close })
}

/// How a response's body goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD` answer, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: the length is not known ahead.
    Chunked,
}

/// Write the status line and headers of `res` to `out`, adding `date`,
/// and `content-length` (from `exact`, the body's exact length if known)
/// or chunked framing as hyper would, and `connection: close` when
/// `close`. Returns how the body follows.
pub fn response_head(
    res: &http::response::Parts,
    exact: Option<u64>,
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Framing {
    let status = res.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers.iter() {
        if name == header::TRANSFER_ENCODING || (close && name == header::CONNECTION) {
            continue; // framing and closing are ours to write
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !res.headers.contains_key(header::DATE) {
        DATE.with(|d| line(out, b"date", d.borrow_mut().now().as_bytes()));
    }
    if close {
        line(out, b"connection", b"close");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = res
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // A `HEAD` answer keeps the length its handler declared (its body is
    // already gone) and adds none.
    let framing = if bodiless || head_request {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = exact {
        line(out, b"content-length", n.to_string().as_bytes());
        Framing::Length(n)
    } else {
        line(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    out.extend_from_slice(b"\r\n");
    framing
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `date` header's value, formatted once a second per thread.
struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

thread_local! {
    static DATE: RefCell<DateCache> = const {
        RefCell::new(DateCache { second: 0, text: String::new() })
    };
}

/// Answer `get` with `app` on `io`. `Ok(true)`: the connection stays open
/// for the next request; `Ok(false)`: close it (asked, or the body broke
/// its framing, which is logged).
pub async fn answer<S: AsyncWrite + Unpin>(
    io: &mut S,
    get: SimpleGet,
    app: &Router,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) -> io::Result<bool> {
    let head_request = get.request.method() == Method::HEAD;
    let close_asked = get.close;
    // Boxed apart: the router's future is freed once it has answered, so
    // a long body write holds only what the write needs.
    let res = Box::pin(respond(get, app, peer, trusted)).await;
    Box::pin(write_response(io, res, head_request, close_asked, peer)).await
}

/// The router's answer to `get`.
async fn respond(
    get: SimpleGet,
    app: &Router,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) -> http::Response<axum::body::Body> {
    let client = crate::forwarded::client_addr(peer, get.request.headers(), trusted);
    let (mut parts, ()) = get.request.into_parts();
    parts.extensions.insert(ConnectInfo(client));
    let req = Request::from_parts(parts, axum::body::Body::empty());
    match tower_service::Service::call(&mut app.clone(), req).await {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

/// Write `res` framed as [`response_head`] says.
async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    res: http::Response<axum::body::Body>,
    head_request: bool,
    close_asked: bool,
    peer: SocketAddr,
) -> io::Result<bool> {
    let (parts, mut body) = res.into_parts();
    let close = close_asked
        || parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| has_token(v, "close"));
    let mut out = Vec::with_capacity(256);
    let framing = response_head(
        &parts,
        body.size_hint().exact(),
        head_request,
        close,
        &mut out,
    );
    drop(parts);
    let mut sent: u64 = 0;
    let mut head = Some(out);
    if framing != Framing::None {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "response body failed; closed");
                    return Ok(false);
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers: not sent over HTTP/1
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            match framing {
                Framing::Length(n) if sent > n => {
                    tracing::debug!(%peer, declared = n, "response body longer than its length; closed");
                    return Ok(false);
                }
                Framing::Chunked => {
                    let mut chunk = head.take().unwrap_or_default();
                    chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    write_all(io, &[&chunk, &data, b"\r\n"]).await?;
                }
                _ => write_all(io, &[&head.take().unwrap_or_default(), &data]).await?,
            }
        }
    }
    let mut tail = head.take().unwrap_or_default();
    match framing {
        Framing::Chunked => tail.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if sent != n => {
            if !tail.is_empty() {
                write_all(io, &[&tail]).await?;
            }
            tracing::debug!(%peer, declared = n, sent, "response body shorter than its length; closed");
            return Ok(false);
        }
        _ => {}
    }
    if !tail.is_empty() {
        write_all(io, &[&tail]).await?;
    }
    io.flush().await?;
    Ok(!close)
}

/// Write every byte of `bufs` (up to three pieces), vectored where the
/// stream can.
async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, bufs: &[&[u8]]) -> io::Result<()> {
    debug_assert!(
        bufs.len() <= 3,
        "at most three pieces: a chunk's head, data, end"
    );
    let mut bufs: [&[u8]; 3] = [
        bufs.first().copied().unwrap_or_default(),
        bufs.get(1).copied().unwrap_or_default(),
        bufs.get(2).copied().unwrap_or_default(),
    ];
    loop {
        let slices = bufs.map(io::IoSlice::new);
        let left: usize = bufs.iter().map(|b| b.len()).sum();
        if left == 0 {
            return Ok(());
        }
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for b in bufs.iter_mut() {
            let took = n.min(b.len());
            *b = &b[took..];
            n -= took;
        }
    }
}

/// Whether a `Connection` header's comma-separated list names `token`.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_plain_get_is_taken_with_its_headers() {
        let get = parse(
            b"GET /live/x/index.m3u8?token=a%20b HTTP/1.1\r\nHost: n\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
        )
        .expect("simple");
        assert_eq!(get.request.method(), Method::GET);
        assert_eq!(get.request.uri().path(), "/live/x/index.m3u8");
        assert_eq!(get.request.uri().query(), Some("token=a%20b"));
        assert_eq!(get.request.headers()["host"], "n");
        let a: Vec<_> = get.request.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert!(!get.close);
        let head =
            parse(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").expect("head");
        assert_eq!(head.request.method(), Method::HEAD);
        assert!(head.close);
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        let refused: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: n\r\n", // cut short
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", // pipelined
            b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nconnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET http://n/ HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nx: a\r\n b\r\n\r\n", // folded
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"",
        ];
        for r in refused {
            assert!(parse(r).is_none(), "{:?}", String::from_utf8_lossy(r));
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse(&many).is_none(), "more headers than taken here");
    }

    fn head_of(res: http::Response<Bytes>, head_request: bool, close: bool) -> (String, Framing) {
        let (parts, body) = res.into_parts();
        let mut out = Vec::new();
        let f = response_head(
            &parts,
            Some(body.len() as u64),
            head_request,
            close,
            &mut out,
        );
        (String::from_utf8(out).expect("ascii"), f)
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let ok = http::Response::builder()
            .header("content-type", "video/mp4")
            .body(Bytes::from_static(b"abcd"))
            .expect("response");
        let (text, f) = head_of(ok, false, false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("GMT\r\ncontent-length: 4\r\n\r\n"), "{text}");
        assert_eq!(f, Framing::Length(4));

        // The handler's own length is kept; a HEAD answer has no body.
        let head = http::Response::builder()
            .header("content-length", "9")
            .body(Bytes::new())
            .expect("response");
        let (text, f) = head_of(head, true, true);
        assert!(
            text.contains("content-length: 9\r\n") && text.contains("connection: close\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("content-length").count(), 1);
        assert_eq!(f, Framing::None);

        let not_modified = http::Response::builder()
            .status(304)
            .body(Bytes::new())
            .expect("response");
        let (text, f) = head_of(not_modified, false, false);
        assert!(
            text.starts_with("HTTP/1.1 304 Not Modified\r\n") && !text.contains("content-length")
        );
        assert_eq!(f, Framing::None);

        let mut out = Vec::new();
        let (parts, _) = http::Response::new(Bytes::new()).into_parts();
        assert_eq!(
            response_head(&parts, None, false, false, &mut out),
            Framing::Chunked
        );
        assert!(String::from_utf8_lossy(&out).contains("transfer-encoding: chunked\r\n"));
    }
}
