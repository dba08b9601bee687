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
pub mod guard;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use banyan_relay::views::Protocol;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{Context, IngestError};

pub use conn::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, STALL_TIMEOUT};

/// Accept RTMP (`tls = None`) or RTMPS connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    ctx: Context,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let acceptor = tls.map(TlsAcceptor::from);
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
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, protocol = protocol.as_str(), "rtmp connection");
            let mut origin = conn::Origin {
                ip: peer.ip(),
                domain_account: None,
            };
            match acceptor {
                None => conn::run(tcp, ctx, protocol, origin, shutdown).await,
                Some(acceptor) => {
                    let tls = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                    };
                    match tls {
                        Ok(Ok(stream)) => {
                            // A custom domain named in SNI admits only its
                            // own account's keys.
                            origin.domain_account = stream
                                .get_ref()
                                .1
                                .server_name()
                                .and_then(|name| ctx.admission.domain_account(name));
                            conn::run(stream, ctx, protocol, origin, shutdown).await
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
                }
            }
        });
    }
}
