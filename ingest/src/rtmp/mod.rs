//! RTMP and RTMPS: publishing into the hub and playing from it.
//!
//! * [`serve`]: the listener. One task per connection; RTMPS is the same
//!   protocol inside TLS (rustls).
//! * `conn`: the tokio driver of a connection (timeouts, hub glue).
//! * [`session`]: the sans-IO protocol core around `rml_rtmp`, with every
//!   library call contained (`catch_unwind`) and every peer byte checked
//!   first by the [`guard`].
//!
//! URLs: `rtmp(s)://HOST/live/<streamKey>` publishes (a publish key of an
//! enabled live input), `rtmp(s)://HOST/live/<playbackKey>` plays. Policy:
//! a second publisher on a live input is refused while the first is live;
//! the first keeps the stream. Over RTMPS to a custom ingest domain (SNI),
//! only keys of the domain's account are accepted; failed attempts count
//! against the source address ([`crate::admission`]).

mod conn;
pub mod front;
pub mod guard;
pub mod player;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use banyan_relay::views::Protocol;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;

use crate::net::{self, PerAddress, TrustedProxies};
use crate::{Context, IngestError};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

pub use conn::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, STALL_TIMEOUT};

/// Limits of one RTMP(S) listener against slow, silent or too many peers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time from accept to a completed RTMP handshake (TLS included),
    /// however the peer paces its bytes.
    pub handshake_timeout: Duration,
    /// A client that has not started publishing or playing this long after
    /// its handshake, or a publisher that completes no message this long (a
    /// trickle of bytes is not progress), is disconnected.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed at accept, logged and
    /// counted in `banyan_connections_refused_total{reason="limit"}`.
    pub max_connections: usize,
    /// Connections served at once per client address; more are closed at
    /// once and counted (`reason="per_address"`).
    pub max_per_address: usize,
    /// Expect a PROXY protocol header (v1 or v2) before anything else, and
    /// take the client's address from it. Only trusted proxies may connect.
    pub proxy_protocol: bool,
    /// The proxies allowed to send a PROXY header.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// On RTMPS: the config used when a ClientHello offers ALPN
    /// `acme-tls/1` (an ACME server checking a TLS-ALPN-01 challenge). The
    /// connection is closed after the handshake, without any RTMP.
    pub acme_tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: 10_000,
            max_per_address: 64,
            proxy_protocol: false,
            trusted_proxies: Arc::new(TrustedProxies::default()),
            acme_tls: None,
        }
    }
}

/// Accept RTMP (`tls = None`) or RTMPS connections until `shutdown`, with
/// the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    ctx: Context,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    serve_with(listener, tls, ctx, shutdown, Limits::default()).await
}

/// Accept RTMP (`tls = None`) or RTMPS connections until `shutdown`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    ctx: Context,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<(), IngestError> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_address = PerAddress::new(limits.max_per_address);
    let mut last_limit_warning: Option<tokio::time::Instant> = None;
    let acceptor = tls;
    let protocol = if acceptor.is_some() {
        Protocol::Rtmps
    } else {
        Protocol::Rtmp
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, protocol = protocol.as_str(), "rtmp listener ready");
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("banyan_connections_refused_total", "reason" => "limit", "listener" => protocol.as_str())
                .increment(1);
            // One warning per 10 s at most: a flood must not flood the log.
            let now = tokio::time::Instant::now();
            if last_limit_warning.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                last_limit_warning = Some(now);
                tracing::warn!(%peer, protocol = protocol.as_str(), max = limits.max_connections,
                    "connection refused: connection limit reached");
            }
            drop(tcp);
            continue;
        };
        let accepted_at = tokio::time::Instant::now();
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let per_address = per_address.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let setup = conn::Setup {
                handshake_deadline: accepted_at + limits.handshake_timeout,
                idle_timeout: limits.idle_timeout,
            };
            let listener = protocol.as_str();
            let mut tcp = tcp;
            // Behind a load balancer, the client's address comes first.
            let (client, pre) = if limits.proxy_protocol {
                if !limits.trusted_proxies.contains(peer.ip()) {
                    net::refused(listener, "proxy_untrusted", peer.ip());
                    return;
                }
                let header = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout_at(setup.handshake_deadline, front::read_proxy_header(&mut tcp)) => r,
                };
                match header {
                    Ok(Ok((source, pre))) => (source.map_or(peer.ip(), |s| s.ip()), pre),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, ?e, "bad PROXY header");
                        net::refused(listener, "proxy_header", peer.ip());
                        return;
                    }
                    Err(_) => {
                        net::refused(listener, "handshake", peer.ip());
                        return;
                    }
                }
            } else {
                (peer.ip(), Vec::new())
            };
            let Some(_per_address) = per_address.try_acquire(client) else {
                net::refused(listener, "per_address", client);
                return;
            };
            let tcp = front::Rewind::new(pre, tcp);
            tracing::debug!(%peer, %client, protocol = listener, "rtmp connection");
            let mut origin = conn::Origin {
                ip: client,
                domain_account: None,
            };
            // The TLS side lives in a box of its own: inline, its handshake
            // and stream would size the task of every plain RTMP viewer.
            match acceptor {
                None => conn::run(tcp, ctx, protocol, origin, setup, shutdown).await,
                Some(config) => Box::pin(async move {
                    let acme = limits.acme_tls.clone();
                    let handshake = async move {
                        let start =
                            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                                .await?;
                        let offers_acme = start
                            .client_hello()
                            .alpn()
                            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
                        match acme {
                            Some(acme) if offers_acme => {
                                let mut stream = start.into_stream(acme).await?;
                                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                                Ok(None)
                            }
                            _ => start.into_stream(config).await.map(Some),
                        }
                    };
                    let tls = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout_at(setup.handshake_deadline, handshake) => r,
                    };
                    match tls {
                        Ok(Ok(None)) => {
                            metrics::counter!("banyan_acme_tls_alpn_answers_total").increment(1);
                            tracing::info!(%peer, "rtmps: answered a TLS-ALPN-01 challenge");
                        }
                        Ok(Ok(Some(stream))) => {
                            // A custom domain named in SNI admits only its
                            // own account's keys.
                            origin.domain_account = stream
                                .get_ref()
                                .1
                                .server_name()
                                .and_then(|name| ctx.admission.domain_account(name));
                            conn::run(stream, ctx, protocol, origin, setup, shutdown).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("banyan_rtmp_connections_refused_total", "reason" => "tls")
                                .increment(1);
                            tracing::info!(%peer, error = %e, "rtmps: tls handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("banyan_rtmp_connections_refused_total", "reason" => "handshake")
                                .increment(1);
                            tracing::info!(%peer, "rtmps: tls handshake timed out");
                        }
                    }
                })
                .await,
            }
        });
    }
}
