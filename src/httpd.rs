//! The HTTP and HTTPS listeners: the axum router served over hyper, with
//! the limits `axum::serve` does not set:
//!
//! * a deadline for a request's headers, which is also the keep-alive idle
//!   deadline, and for the TLS handshake on HTTPS;
//! * between requests, a kept-alive connection holds no HTTP buffers (see
//!   [`crate::keepalive`]; each time counted in
//!   `banyan_http_idle_parks_total`);
//! * a deadline for a whole request body ([`HttpLimits::body_timeout`]): a
//!   body trickled in is cut there (the handler sees an error, the
//!   connection is closed after the answer);
//! * a write-stall deadline ([`HttpLimits::write_timeout`]): a connection
//!   whose writes make no progress that long (a client that never reads) is
//!   closed;
//! * a cap on open connections (more are answered 503 at once and closed)
//!   and a cap per client address (trusted proxies are exempt: their
//!   clients are many).
//!
//! Behind a trusted proxy the client's address comes from the forwarding
//! headers (see [`crate::forwarded`]); handlers read it from
//! `ConnectInfo<SocketAddr>` either way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use banyan_ingest::net::{self, PerAddress, TrustedProxies};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::deadline::{StallGuard, TimedBody};
use crate::keepalive::{Arrived, Lean, Open, ReadReady, Shared, Tracked};

/// Limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers (and the TLS
    /// handshake, and between two requests of a kept-alive connection).
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a whole request body.
    pub body_timeout: Duration,
    /// Longest time a connection's writes may make no progress.
    pub write_timeout: Duration,
    /// Connections at once per client address.
    pub max_per_address: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Arc<TrustedProxies>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_per_address: 64,
            trusted_proxies: Arc::new(TrustedProxies::default()),
        }
    }
}

/// The answer to a connection over a limit, written once without waiting.
fn busy_answer(message: &str) -> String {
    let body = format!(
        r#"{{"result":null,"success":false,"errors":[{{"code":503,"message":"{message}"}}],"messages":[]}}"#
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serve `app` over plain HTTP until `shutdown`, then let open requests
/// finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    serve_with(listener, app, limits, None, shutdown).await
}

/// Serve `app` over HTTP, or HTTPS when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let name: &'static str = if tls.is_some() { "https" } else { "http" };
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_address = PerAddress::new(limits.max_per_address);
    let busy = busy_answer("connection limit reached");
    let busy_address = busy_answer("connection limit per address reached");
    let mut conns = tokio::task::JoinSet::new();
    // Linux gives an accepted socket the listener's TCP_NODELAY: set once
    // here, not once per connection.
    let nodelay_inherited = cfg!(target_os = "linux") && set_nodelay(&listener);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "{name} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            net::refused(name, "limit", peer.ip());
            if acceptor.is_none() {
                let _ = tcp.try_write(busy.as_bytes());
            }
            continue;
        };
        // A trusted proxy carries many clients: only others are capped.
        let addr_slot = if limits.trusted_proxies.contains(peer.ip()) {
            None
        } else {
            match per_address.try_acquire(peer.ip()) {
                Some(s) => Some(s),
                None => {
                    net::refused(name, "per_address", peer.ip());
                    if acceptor.is_none() {
                        let _ = tcp.try_write(busy_address.as_bytes());
                    }
                    continue;
                }
            }
        };
        let accepted_at = tokio::time::Instant::now();
        if !nodelay_inherited {
            let _ = tcp.set_nodelay(true);
        }
        let app = app.clone();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let _slots = (slot, addr_slot);
            let io = StallGuard::new(tcp, limits.write_timeout);
            match acceptor {
                None => serve_conn(io, peer, app, limits, shutdown).await,
                // Boxed: a plain connection's task is not sized for TLS.
                Some(acceptor) => Box::pin(async move {
                    let deadline = accepted_at + limits.header_timeout;
                    let tls = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout_at(deadline, acceptor.accept(io)) => r,
                    };
                    match tls {
                        Ok(Ok(stream)) => serve_conn(stream, peer, app, limits, shutdown).await,
                        Ok(Err(e)) => {
                            metrics::counter!("banyan_connections_refused_total", "reason" => "tls", "listener" => name)
                                .increment(1);
                            tracing::debug!(%peer, error = %e, "https: tls handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("banyan_connections_refused_total", "reason" => "handshake", "listener" => name)
                                .increment(1);
                            tracing::debug!(%peer, "https: tls handshake timed out");
                        }
                    }
                })
                .await,
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Serve one connection's requests. Between requests the connection is
/// held without hyper's buffers (see [`crate::keepalive`]): a plain GET
/// read whole is answered here ([`crate::direct`]), anything else runs
/// hyper from the request's first bytes until the connection is idle
/// again. What waits between requests is only the stream and the
/// connection's settings: the answer and hyper's connection are boxed per
/// use.
async fn serve_conn<S>(
    io: S,
    peer: std::net::SocketAddr,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let shared = Shared::new();
    let mut io = Lean::new(io, shared.clone());
    loop {
        // Idle (or new): wait for the first bytes of a request holding
        // nothing but the stream. The keep-alive idle deadline, and for a
        // new connection the deadline of its first request, is the header
        // deadline.
        let ready = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(limits.header_timeout, io.ready()) => r,
        };
        if !matches!(ready, Ok(Ok(()))) {
            return;
        }
        match io.arrived() {
            Arrived::Request => {}
            Arrived::Nothing => continue,
            // Players close after a download: no HTTP connection for that,
            // and no `shutdown` (the client's side is closed, nothing is
            // unread): dropping the stream closes it.
            Arrived::Closed => return,
            Arrived::Failed(kind) => {
                tracing::debug!(%peer, error = ?kind, "http connection read failed");
                return;
            }
        }
        if let Some(get) = io.take_head(crate::direct::parse) {
            // A plain GET read whole: answered here, no hyper connection.
            metrics::counter!("banyan_http_direct_total").increment(1);
            let answered =
                crate::direct::answer(io.stream_mut(), get, &app, peer, &limits.trusted_proxies)
                    .await;
            match answered {
                Ok(true) => continue,
                Ok(false) => {
                    let _ = tokio::time::timeout(limits.write_timeout, io.shutdown()).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "http connection ended");
                    return;
                }
            }
        }
        let run = run_hyper(io, &shared, peer, &app, &limits, &shutdown);
        match Box::pin(run).await {
            Some(idle) => io = idle,
            None => return,
        }
        metrics::counter!("banyan_http_idle_parks_total").increment(1);
    }
}

/// hyper's HTTP/1 connection on `io` until it ends (`None`, the stream
/// closed) or goes idle (`Some`: the stream back, hyper's buffers dropped).
async fn run_hyper<S>(
    io: Lean<S>,
    shared: &Arc<Shared>,
    peer: std::net::SocketAddr,
    app: &Router,
    limits: &HttpLimits,
    shutdown: &CancellationToken,
) -> Option<Lean<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let svc = {
        let shared = shared.clone();
        let trusted = limits.trusted_proxies.clone();
        let body_timeout = limits.body_timeout;
        let app = app.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| -> Answer {
            let open = Open::new(&shared);
            let client = crate::forwarded::client_addr(peer, req.headers(), &trusted);
            let mut req = req.map(|b| axum::body::Body::new(TimedBody::new(b, body_timeout)));
            req.extensions_mut().insert(ConnectInfo(client));
            let answer = tower_service::Service::call(&mut app.clone(), req);
            Box::pin(async move {
                let res = answer.await?;
                Ok(res.map(|b| axum::body::Body::new(Tracked::new(b, open))))
            })
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), svc));
    // hyper's connection, until it ends or goes idle (`None`).
    let run = std::future::poll_fn(|cx| match conn.poll_without_shutdown(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending if shared.idle() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    });
    let r = tokio::select! {
        r = run => r,
        _ = shutdown.cancelled() => {
            Pin::new(&mut *conn).graceful_shutdown();
            Some(std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await)
        }
    };
    let parts = match r {
        Some(Err(e)) => {
            tracing::debug!(%peer, error = %e, "http connection ended");
            return None;
        }
        // The client closed its side: nothing is unread, no `shutdown`.
        Some(Ok(())) if shared.peer_closed() => return None,
        Some(Ok(())) => {
            // The client asked to close, or hyper ended the connection:
            // close it as hyper would have.
            let mut io = conn.into_parts().io.into_inner();
            let _ = tokio::time::timeout(limits.write_timeout, io.shutdown()).await;
            return None;
        }
        None => conn.into_parts(),
    };
    if !parts.read_buf.is_empty() {
        // Not reached: idle means nothing unread was left to hyper.
        tracing::debug!(%peer, "http connection idle with unread bytes; closed");
        return None;
    }
    Some(parts.io.into_inner())
}

/// Set TCP_NODELAY on a listening socket (accepted sockets inherit it on
/// Linux); whether it was set.
fn set_nodelay(listener: &TcpListener) -> bool {
    socket2::SockRef::from(listener)
        .set_tcp_nodelay(true)
        .is_ok()
}

/// What the service answers a request with.
type Answer = Pin<
    Box<
        dyn std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>>
            + Send,
    >,
>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle kept-alive connection's task holds its stream and its
    /// settings, not the router's future of an answer past hyper (boxed
    /// per answer): this fails if that comes back inline, at about 1.5 KiB
    /// in a debug build (the bound is for debug builds; release ones are
    /// smaller).
    #[tokio::test]
    async fn a_connection_task_carries_no_answer_inline() {
        let lsn = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = tokio::net::TcpStream::connect(lsn.local_addr().expect("address"))
            .await
            .expect("connect");
        let (tcp, peer) = lsn.accept().await.expect("accept");
        let io = StallGuard::new(tcp, Duration::from_secs(1));
        let conn = serve_conn(
            io,
            peer,
            Router::new(),
            HttpLimits::default(),
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&conn);
        assert!(size <= 1400, "serve_conn's future is {size} bytes");
        drop(client);
    }
}
