//! The HTTP listener: the axum router served over hyper, with the two
//! limits `axum::serve` does not set: a deadline for a request's headers (a
//! client sending them a byte at a time is cut off) and a cap on open
//! connections (more are answered 503 at once and closed).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// The answer to a connection over the limit, written once without
/// waiting.
fn busy_answer() -> String {
    let body = r#"{"result":null,"success":false,"errors":[{"code":503,"message":"connection limit reached"}],"messages":[]}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serve `app` until `shutdown`, then let open requests finish (the caller
/// bounds how long).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let busy = busy_answer();
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("banyan_connections_refused_total", "reason" => "limit", "listener" => "http")
                .increment(1);
            let now = tokio::time::Instant::now();
            if last_warning.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                last_warning = Some(now);
                tracing::warn!(%peer, max = limits.max_connections, "http connection refused: connection limit reached");
            }
            let _ = tcp.try_write(busy.as_bytes());
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                tower_service::Service::call(&mut app.clone(), req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection ended");
                    }
                    return;
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    while conns.join_next().await.is_some() {}
}
