//! The pulling side of links: one connection to a peer node, any number of
//! pulls on it, each publishing into the local hub.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::framing::{Decoder, Message, MAX_CONTROL_LEN};
use super::sequencer::{Action, GroupEvent, Sequencer};
use super::server::{read_message, write_message};
use super::{count_cancelled, count_rx, ClusterTls, LinkConfig, LinkError, CODE_CANCELLED};
use crate::hub::{Hub, Publisher};

pub(super) fn client_config(
    tls: &ClusterTls,
    cfg: &LinkConfig,
) -> Result<quinn::ClientConfig, LinkError> {
    let crypto = QuicClientConfig::try_from(tls.client_config()?)
        .map_err(|e| LinkError::Tls(format!("QUIC client config: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(cfg.transport());
    Ok(client)
}

/// A group stream whose header has been read.
struct IncomingGroup {
    seq: u64,
    recv: quinn::RecvStream,
    dec: Decoder,
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<IncomingGroup>>>>;

struct Inner {
    conn: quinn::Connection,
    /// Kept so a client-only endpoint lives as long as its connection.
    _endpoint: quinn::Endpoint,
    peer: String,
    me: String,
    cfg: LinkConfig,
    routes: Routes,
    next_sub: AtomicU64,
    accept: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.accept.abort();
        self.conn.close(0u32.into(), b"done");
    }
}

/// A connection to one peer node. Cheap to clone; the connection closes
/// when the last clone and the last [`PullHandle`] are dropped.
#[derive(Clone)]
pub struct LinkClient {
    inner: Arc<Inner>,
}

impl LinkClient {
    /// Connect from a fresh socket bound to `local_bind` to node
    /// `peer_name` at `peer_addr`. Nodes normally use
    /// [`LinkServer::connect`](super::LinkServer::connect) instead, which
    /// shares the node's link socket.
    pub async fn connect(
        local_bind: SocketAddr,
        peer_addr: SocketAddr,
        peer_name: &str,
        tls: &ClusterTls,
    ) -> Result<LinkClient, LinkError> {
        LinkClient::connect_with(local_bind, peer_addr, peer_name, tls, LinkConfig::default()).await
    }

    /// [`LinkClient::connect`] with explicit tunables.
    pub async fn connect_with(
        local_bind: SocketAddr,
        peer_addr: SocketAddr,
        peer_name: &str,
        tls: &ClusterTls,
        cfg: LinkConfig,
    ) -> Result<LinkClient, LinkError> {
        let mut endpoint = quinn::Endpoint::client(local_bind).map_err(LinkError::Bind)?;
        endpoint.set_default_client_config(client_config(tls, &cfg)?);
        LinkClient::connect_on(endpoint, peer_addr, peer_name, &tls.node_name, cfg).await
    }

    pub(super) async fn connect_on(
        endpoint: quinn::Endpoint,
        peer_addr: SocketAddr,
        peer_name: &str,
        me: &str,
        cfg: LinkConfig,
    ) -> Result<LinkClient, LinkError> {
        let connecting = endpoint.connect(peer_addr, peer_name)?;
        let conn = tokio::time::timeout(cfg.request_timeout, connecting)
            .await
            .map_err(|_| LinkError::Timeout)??;
        let routes: Routes = Arc::default();
        let accept = tokio::spawn(accept_groups(conn.clone(), routes.clone(), cfg.clone()));
        tracing::debug!(peer = peer_name, %peer_addr, "link connected");
        Ok(LinkClient {
            inner: Arc::new(Inner {
                conn,
                _endpoint: endpoint,
                peer: peer_name.to_string(),
                me: me.to_string(),
                cfg,
                routes,
                next_sub: AtomicU64::new(1),
                accept,
            }),
        })
    }

    /// The peer's node name.
    pub fn peer_name(&self) -> &str {
        &self.inner.peer
    }

    /// The current round-trip time estimate to the peer.
    pub fn rtt(&self) -> Duration {
        self.inner.conn.rtt()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.inner.conn.close_reason()
    }

    /// Resolves when the connection ends.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.inner.conn.closed().await
    }

    /// Pull stream `uid` from the peer and publish it into `hub` until the
    /// handle is dropped or the stream ends upstream. Errors when the peer
    /// answers `NotHere`, `Redirect` or `Refused`, or when `hub` already has
    /// a publisher for `uid`.
    pub async fn pull(&self, uid: &str, hub: Arc<Hub>) -> Result<PullHandle, LinkError> {
        let inner = &self.inner;
        let sub = inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let (gtx, grx) = mpsc::channel(16);
        inner.routes.lock().insert(sub, gtx);
        let route = RouteGuard {
            routes: inner.routes.clone(),
            sub,
        };
        let (mut send, mut recv) = inner.conn.open_bi().await?;
        let request = Message::Subscribe {
            sub,
            from: inner.me.clone(),
            uid: uid.to_string(),
        };
        write_message(&mut send, &request).await?;
        let mut dec = Decoder::new(MAX_CONTROL_LEN);
        let answer =
            tokio::time::timeout(inner.cfg.request_timeout, read_message(&mut recv, &mut dec))
                .await
                .map_err(|_| LinkError::Timeout)??;
        match answer {
            Some(Message::Accepted) => {}
            Some(Message::NotHere) => return Err(LinkError::NotHere),
            Some(Message::Redirect { node, addr }) => {
                return Err(LinkError::Redirect { node, addr })
            }
            Some(Message::Refused { reason }) => return Err(LinkError::Refused(reason)),
            Some(_) => return Err(LinkError::Stream("unexpected answer".into())),
            None => return Err(LinkError::Stream("the peer closed the request".into())),
        }
        // Publish only once the upstream serves the stream, so a refused
        // pull leaves no trace in the local hub.
        let publisher = hub.publish(uid)?;
        tracing::info!(stream = %uid, peer = %inner.peer, "pulling stream from peer node");
        let cancelled = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_pull(
            self.clone(),
            cancelled.clone(),
            hub,
            publisher,
            send,
            recv,
            dec,
            grx,
            route,
        ));
        Ok(PullHandle {
            uid: uid.to_string(),
            peer: inner.peer.clone(),
            task,
            ended: None,
            cancelled,
        })
    }
}

/// Unregisters a subscription's route when the pull ends.
struct RouteGuard {
    routes: Routes,
    sub: u64,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes.lock().remove(&self.sub);
    }
}

/// Why a pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEnd {
    /// The stream ended upstream.
    Finished,
    /// The operator disconnected the stream upstream; the local stream was
    /// disconnected too.
    Kicked,
    /// The link failed (peer gone, idle timeout, protocol error): the
    /// cluster layer re-pulls from elsewhere.
    LinkLost(String),
}

/// A running pull. Dropping it stops the pull (the local stream then waits
/// for a publisher within the hub's reconnect window, which is how a healed
/// pull from another node continues seamlessly).
pub struct PullHandle {
    uid: String,
    peer: String,
    task: JoinHandle<PullEnd>,
    ended: Option<PullEnd>,
    cancelled: Arc<AtomicU64>,
}

impl PullHandle {
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The node pulled from.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Groups this pull abandoned incomplete to keep the live edge.
    pub fn groups_cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// True once the pull has ended.
    pub fn is_finished(&self) -> bool {
        self.ended.is_some() || self.task.is_finished()
    }

    /// Resolves when the pull ends, with why.
    pub async fn ended(&mut self) -> PullEnd {
        if let Some(e) = &self.ended {
            return e.clone();
        }
        let end = match (&mut self.task).await {
            Ok(e) => e,
            Err(e) => PullEnd::LinkLost(format!("pull task: {e}")),
        };
        self.ended = Some(end.clone());
        end
    }
}

impl Drop for PullHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accept the peer's group streams and route each to its subscription.
async fn accept_groups(conn: quinn::Connection, routes: Routes, cfg: LinkConfig) {
    while let Ok(recv) = conn.accept_uni().await {
        let routes = routes.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let mut recv = recv;
            let mut dec = Decoder::new(cfg.max_frame_bytes);
            let header =
                tokio::time::timeout(cfg.request_timeout, read_message(&mut recv, &mut dec)).await;
            let Ok(Ok(Some(Message::Group { sub, seq }))) = header else {
                let _ = recv.stop(CODE_CANCELLED.into());
                return;
            };
            let route = routes.lock().get(&sub).cloned();
            if let Some(route) = route {
                // A full route means the pull is stuck; dropping the stream stops it.
                let _ = route.try_send(IncomingGroup { seq, recv, dec });
            } else {
                let _ = recv.stop(CODE_CANCELLED.into());
            }
        });
    }
}

async fn read_group(mut g: IncomingGroup, events: mpsc::Sender<(u64, GroupEvent)>) {
    let seq = g.seq;
    loop {
        let ev = match g.dec.next_message() {
            Ok(Some(Message::Info(i))) => Some(GroupEvent::Info(i)),
            Ok(Some(Message::Frame(f))) => Some(GroupEvent::Frame(f)),
            Ok(Some(_)) | Err(_) => {
                let _ = events.send((seq, GroupEvent::Failed)).await;
                return;
            }
            Ok(None) => None,
        };
        if let Some(ev) = ev {
            if events.send((seq, ev)).await.is_err() {
                return;
            }
            continue;
        }
        match g.recv.read_chunk(256 * 1024, true).await {
            Ok(Some(chunk)) => {
                count_rx(chunk.bytes.len());
                g.dec.push(&chunk.bytes);
            }
            Ok(None) => {
                let ev = if g.dec.buffered() == 0 {
                    GroupEvent::Finished
                } else {
                    GroupEvent::Failed
                };
                let _ = events.send((seq, ev)).await;
                return;
            }
            Err(_) => {
                let _ = events.send((seq, GroupEvent::Failed)).await;
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pull(
    client: LinkClient,
    cancelled: Arc<AtomicU64>,
    hub: Arc<Hub>,
    mut publisher: Publisher,
    _send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut dec: Decoder,
    mut groups: mpsc::Receiver<IncomingGroup>,
    _route: RouteGuard,
) -> PullEnd {
    let uid = publisher.uid().to_string();
    let (ev_tx, mut ev_rx) = mpsc::channel::<(u64, GroupEvent)>(256);
    let mut readers: BTreeMap<u64, JoinHandle<()>> = BTreeMap::new();
    let mut seq = Sequencer::new(client.inner.cfg.group_grace, client.inner.cfg.group_queue);
    let conn = client.inner.conn.clone();
    let end = loop {
        let deadline = seq.deadline();
        let out = tokio::select! {
            g = groups.recv() => {
                let Some(g) = g else { break PullEnd::LinkLost("routes closed".into()) };
                if seq.is_stale(g.seq) {
                    let mut recv = g.recv;
                    let _ = recv.stop(CODE_CANCELLED.into());
                } else {
                    readers.insert(g.seq, tokio::spawn(read_group(g, ev_tx.clone())));
                }
                continue;
            }
            ev = ev_rx.recv() => {
                // `ev_tx` is held here, so the channel never closes.
                let Some((s, ev)) = ev else { continue };
                if matches!(ev, GroupEvent::Finished | GroupEvent::Failed) {
                    readers.remove(&s);
                }
                seq.on_event(s, ev, Instant::now())
            }
            _ = sleep_until_opt(deadline) => seq.on_timeout(Instant::now()),
            m = read_message(&mut recv, &mut dec) => match m {
                Ok(Some(Message::End { kicked: true })) => {
                    drop(publisher);
                    hub.kick(&uid);
                    break PullEnd::Kicked;
                }
                Ok(Some(Message::End { kicked: false })) => break PullEnd::Finished,
                Ok(_) => break PullEnd::LinkLost("control stream closed".into()),
                Err(e) => break PullEnd::LinkLost(e.to_string()),
            },
            e = conn.closed() => break PullEnd::LinkLost(e.to_string()),
        };
        for action in out {
            match action {
                Action::Info(info) => publisher.set_info(info.video, info.audio),
                Action::Frame(frame) => publisher.push(frame),
                Action::Cancel { seq: s, counted } => {
                    if counted {
                        count_cancelled();
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    // Dropping the stream stops it: the sender ends the group.
                    if let Some(r) = readers.remove(&s) {
                        r.abort();
                    }
                }
            }
        }
    };
    for (_, r) in readers {
        r.abort();
    }
    tracing::info!(stream = %uid, peer = %client.inner.peer, end = ?end, "pull ended");
    end
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
