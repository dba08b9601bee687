//! The serving side of links: accepts connections from cluster nodes and
//! serves each subscription from an ordinary hub subscriber.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::framing::{encode_to_bytes, frame_prefix, Decoder, Message};
use super::tls::cert_names;
use super::{
    count_cancelled, count_rx, count_tx, Admission, Admit, AdmitRequest, ClusterTls, LinkClient,
    LinkConfig, LinkError, LocalStreams, CODE_CANCELLED,
};
use crate::frame::{Frame, MediaInfo, Track, CLOCK_HZ};
use crate::hub::{Hub, Item, StreamEnd, SubscribeOptions};

/// Which nodes this node serves each stream to, now.
#[derive(Clone, Default)]
pub struct Downstream {
    inner: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl Downstream {
    /// The nodes pulling `uid` from this node.
    pub fn peers(&self, uid: &str) -> Vec<String> {
        self.inner.lock().get(uid).cloned().unwrap_or_default()
    }

    /// Streams with at least one downstream node.
    pub fn streams(&self) -> Vec<String> {
        self.inner.lock().keys().cloned().collect()
    }

    fn add(&self, uid: &str, peer: &str) {
        self.inner
            .lock()
            .entry(uid.to_string())
            .or_default()
            .push(peer.to_string());
    }

    fn remove(&self, uid: &str, peer: &str) {
        let mut map = self.inner.lock();
        if let Some(peers) = map.get_mut(uid) {
            if let Some(i) = peers.iter().position(|p| p == peer) {
                peers.swap_remove(i);
            }
            if peers.is_empty() {
                map.remove(uid);
            }
        }
    }
}

struct Ctx {
    hub: Arc<Hub>,
    cfg: LinkConfig,
    admission: Arc<dyn Admission>,
    downstream: Downstream,
}

/// A node's link endpoint: serves subscriptions to other nodes and makes
/// outgoing connections from the same UDP socket.
pub struct LinkServer {
    endpoint: quinn::Endpoint,
    tls: ClusterTls,
    ctx: Arc<Ctx>,
}

impl LinkServer {
    /// Bind the link socket with default tunables; returns the bound address.
    pub fn bind(
        addr: SocketAddr,
        tls: &ClusterTls,
        hub: Arc<Hub>,
    ) -> Result<(LinkServer, SocketAddr), LinkError> {
        LinkServer::bind_with(addr, tls, hub, LinkConfig::default())
    }

    /// Bind the link socket. Must run inside a tokio runtime.
    pub fn bind_with(
        addr: SocketAddr,
        tls: &ClusterTls,
        hub: Arc<Hub>,
        cfg: LinkConfig,
    ) -> Result<(LinkServer, SocketAddr), LinkError> {
        let crypto = QuicServerConfig::try_from(tls.server_config()?)
            .map_err(|e| LinkError::Tls(format!("QUIC server config: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(cfg.transport());
        let mut endpoint = quinn::Endpoint::server(server, addr).map_err(LinkError::Bind)?;
        endpoint.set_default_client_config(super::client::client_config(tls, &cfg)?);
        let local = endpoint.local_addr().map_err(LinkError::Bind)?;
        let ctx = Arc::new(Ctx {
            hub,
            cfg,
            admission: Arc::new(LocalStreams),
            downstream: Downstream::default(),
        });
        Ok((
            LinkServer {
                endpoint,
                tls: tls.clone(),
                ctx,
            },
            local,
        ))
    }

    /// Use `admission` to answer subscription requests (the default serves
    /// every stream live in the local hub).
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> LinkServer {
        // Only called before `run`, while this is the only reference.
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.admission = admission;
        }
        self
    }

    /// The live view of who pulls what from this node.
    pub fn downstream(&self) -> Downstream {
        self.ctx.downstream.clone()
    }

    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        self.endpoint.local_addr().map_err(LinkError::Bind)
    }

    /// Connect to node `peer_name` at `peer_addr` from this node's socket.
    pub async fn connect(
        &self,
        peer_addr: SocketAddr,
        peer_name: &str,
    ) -> Result<LinkClient, LinkError> {
        LinkClient::connect_on(
            self.endpoint.clone(),
            peer_addr,
            peer_name,
            &self.tls.node_name,
            self.ctx.cfg.clone(),
        )
        .await
    }

    /// Serve until `shutdown` resolves, then close every connection.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let ctx = self.ctx.clone();
                    tokio::spawn(async move {
                        match incoming.await {
                            Ok(conn) => serve_connection(conn, ctx).await,
                            Err(e) => {
                                metrics::counter!("banyan_link_handshakes_refused_total").increment(1);
                                tracing::info!(error = %e, "link handshake refused");
                            }
                        }
                    });
                }
            }
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        self.endpoint.wait_idle().await;
    }
}

async fn serve_connection(conn: quinn::Connection, ctx: Arc<Ctx>) {
    let cert: Option<CertificateDer<'static>> = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.into_iter().next());
    let remote = conn.remote_address();
    tracing::debug!(%remote, "link connection accepted");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let ctx = ctx.clone();
                let conn = conn.clone();
                let cert = cert.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_request(conn, send, recv, ctx, cert).await {
                        tracing::debug!(error = %e, "link subscription ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "link connection closed");
                return;
            }
        }
    }
}

/// Read one message from a stream.
pub(super) async fn read_message(
    recv: &mut quinn::RecvStream,
    dec: &mut Decoder,
) -> Result<Option<Message>, LinkError> {
    loop {
        if let Some(m) = dec.next_message()? {
            return Ok(Some(m));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => {
                count_rx(chunk.bytes.len());
                dec.push(&chunk.bytes);
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(LinkError::Stream(e.to_string())),
        }
    }
}

pub(super) async fn write_message(
    send: &mut quinn::SendStream,
    msg: &Message,
) -> Result<(), LinkError> {
    let bytes = encode_to_bytes(msg);
    count_tx(bytes.len());
    send.write_chunk(bytes)
        .await
        .map_err(|e| LinkError::Stream(e.to_string()))
}

async fn serve_request(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<Ctx>,
    cert: Option<CertificateDer<'static>>,
) -> Result<(), LinkError> {
    let mut dec = Decoder::new(super::framing::MAX_CONTROL_LEN);
    let req = tokio::time::timeout(ctx.cfg.request_timeout, read_message(&mut recv, &mut dec))
        .await
        .map_err(|_| LinkError::Timeout)??;
    let Some(Message::Subscribe { sub, from, uid }) = req else {
        return Err(LinkError::Stream("expected a subscribe request".into()));
    };
    if !cert.as_ref().is_some_and(|c| cert_names(c, &from)) {
        tracing::warn!(peer = %from, "link peer's certificate does not name it");
        let reason = "certificate does not name the subscriber".to_string();
        write_message(&mut send, &Message::Refused { reason }).await?;
        let _ = send.finish();
        return Ok(());
    }
    let children = ctx.downstream.peers(&uid);
    let decision = ctx.admission.admit(&AdmitRequest {
        uid: &uid,
        peer: &from,
        children: &children,
        state: ctx.hub.state(&uid),
    });
    let answer = match &decision {
        Admit::Accept => Message::Accepted,
        Admit::NotHere => Message::NotHere,
        Admit::Redirect { node, addr } => Message::Redirect {
            node: node.clone(),
            addr: addr.to_string(),
        },
        Admit::Refuse(reason) => Message::Refused {
            reason: reason.clone(),
        },
    };
    if decision != Admit::Accept {
        write_message(&mut send, &answer).await?;
        let _ = send.finish();
        return Ok(());
    }
    // The peer is a child and a subscriber before it hears `Accepted`: once
    // its pull returns, the tree shows it and its subscription has begun.
    let _child = Child::add(&ctx.downstream, &uid, &from);
    let subscriber = ctx.hub.subscribe(&uid, SubscribeOptions::default());
    write_message(&mut send, &answer).await?;
    let span = tracing::info_span!("link_serve", stream = %uid, peer = %from, sub);
    async {
        tracing::info!("serving stream to peer node");
        let r = serve_subscription(conn, send, recv, sub, subscriber, &ctx.cfg).await;
        tracing::info!("stopped serving stream to peer node");
        r
    }
    .instrument(span)
    .await
}

/// A downstream node registered for a stream while it is served; counted in
/// `banyan_link_subscriptions`. Dropping it unregisters the node.
struct Child<'a> {
    downstream: &'a Downstream,
    uid: &'a str,
    peer: &'a str,
}

impl<'a> Child<'a> {
    fn add(downstream: &'a Downstream, uid: &'a str, peer: &'a str) -> Self {
        downstream.add(uid, peer);
        metrics::gauge!("banyan_link_subscriptions").increment(1.0);
        Child {
            downstream,
            uid,
            peer,
        }
    }
}

impl Drop for Child<'_> {
    fn drop(&mut self) {
        metrics::gauge!("banyan_link_subscriptions").decrement(1.0);
        self.downstream.remove(self.uid, self.peer);
    }
}

async fn serve_subscription(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    sub: u64,
    mut subscriber: crate::hub::Subscriber,
    cfg: &LinkConfig,
) -> Result<(), LinkError> {
    let mut groups = GroupSender::new(conn, sub, cfg.clone());
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            item = subscriber.recv() => match item {
                Item::Info(info) => groups.info(info),
                Item::Frame(frame) => groups.frame(frame),
                Item::End(end) => {
                    let kicked = end == StreamEnd::Kicked;
                    write_message(&mut send, &Message::End { kicked }).await?;
                    let _ = send.finish();
                    return Ok(());
                }
            },
            // The client sends nothing after its request: any end of this
            // stream (finish, reset, connection loss) unsubscribes.
            r = recv.read(&mut scratch) => {
                if let Ok(Some(_)) = r {
                    return Err(LinkError::Stream("unexpected bytes on the control stream".into()));
                }
                return Ok(());
            }
        }
    }
}

/// A group being written by its own task.
struct GroupTx {
    seq: u64,
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    cancel: watch::Sender<bool>,
    done: Arc<AtomicBool>,
}

impl GroupTx {
    fn cancel(&self) {
        self.cancel.send_replace(true);
    }
}

/// Splits a subscription's frames into groups and writes each group on its
/// own prioritized unidirectional stream. Never waits on the network: a
/// group whose queue is full is reset and the sender skips to the next
/// group.
struct GroupSender {
    conn: quinn::Connection,
    sub: u64,
    cfg: LinkConfig,
    next_seq: u64,
    info: Option<Arc<MediaInfo>>,
    current: Option<GroupTx>,
    older: VecDeque<GroupTx>,
    group_start: i64,
    group_has_video: bool,
    /// The current group was abandoned; drop frames until the next one.
    skipping: bool,
}

impl GroupSender {
    fn new(conn: quinn::Connection, sub: u64, cfg: LinkConfig) -> GroupSender {
        GroupSender {
            conn,
            sub,
            cfg,
            next_seq: 0,
            info: None,
            current: None,
            older: VecDeque::new(),
            group_start: 0,
            group_has_video: false,
            skipping: false,
        }
    }

    fn info(&mut self, info: Arc<MediaInfo>) {
        if let Some(g) = &self.current {
            if !self.skipping {
                let bytes = encode_to_bytes(&Message::Info((*info).clone()));
                if let Some(tx) = &g.tx {
                    if tx.try_send(vec![bytes]).is_err() {
                        self.abandon_current();
                    }
                }
            }
        }
        self.info = Some(info);
    }

    fn frame(&mut self, frame: Frame) {
        let video_key = frame.track == Track::Video && frame.keyframe;
        // Audio-only streams are cut into groups of about a second.
        let audio_cut = !self.group_has_video
            && frame.track == Track::Audio
            && frame.dts.saturating_sub(self.group_start) >= CLOCK_HZ;
        let starts = video_key || audio_cut || (self.current.is_none() && !self.skipping);
        if starts {
            self.start_group(&frame);
        } else if self.skipping {
            metrics::counter!("banyan_frames_dropped_total", "reason" => "link_behind")
                .increment(1);
            return;
        }
        if frame.track == Track::Video {
            self.group_has_video = true;
        }
        let chunks = vec![frame_prefix(&frame), frame.payload];
        let full = match self.current.as_ref().and_then(|g| g.tx.as_ref()) {
            Some(tx) => tx.try_send(chunks).is_err(),
            None => true,
        };
        if full {
            self.abandon_current();
        }
    }

    /// The current group cannot keep up: reset it, skip to the next group.
    fn abandon_current(&mut self) {
        if let Some(g) = self.current.take() {
            tracing::debug!(group = g.seq, "link behind: group reset");
            g.cancel();
            count_cancelled();
        }
        self.skipping = true;
    }

    fn start_group(&mut self, first: &Frame) {
        self.skipping = false;
        self.group_start = first.dts;
        self.group_has_video = false;
        if let Some(mut g) = self.current.take() {
            // Closing the queue lets the writer finish the stream.
            g.tx = None;
            self.older.push_back(g);
        }
        self.older.retain(|g| !g.done.load(Ordering::Relaxed));
        let limit = self.cfg.groups_in_flight.max(1);
        while self.older.len() + 1 > limit {
            let Some(g) = self.older.pop_front() else {
                break;
            };
            tracing::debug!(group = g.seq, "link behind: older group reset");
            g.cancel();
            count_cancelled();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let (tx, rx) = mpsc::channel(self.cfg.group_queue.max(2));
        let (cancel, cancel_rx) = watch::channel(false);
        let done = Arc::new(AtomicBool::new(false));
        if let Some(info) = &self.info {
            // A fresh queue has room for this first message.
            let _ = tx.try_send(vec![encode_to_bytes(&Message::Info((**info).clone()))]);
        }
        tokio::spawn(write_group(
            self.conn.clone(),
            self.sub,
            seq,
            rx,
            cancel_rx,
            done.clone(),
        ));
        self.current = Some(GroupTx {
            seq,
            tx: Some(tx),
            cancel,
            done,
        });
    }
}

/// Resolves once the group is cancelled; never if the sender side is gone
/// without cancelling (the group then finishes normally).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn priority(seq: u64) -> i32 {
    (seq % i32::MAX as u64) as i32
}

async fn write_group(
    conn: quinn::Connection,
    sub: u64,
    seq: u64,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    mut cancel: watch::Receiver<bool>,
    done: Arc<AtomicBool>,
) {
    let mut stream = tokio::select! {
        _ = cancelled(&mut cancel) => { done.store(true, Ordering::Relaxed); return; }
        s = conn.open_uni() => match s {
            Ok(s) => s,
            Err(_) => { done.store(true, Ordering::Relaxed); return; }
        },
    };
    // The stream is open until reset or finished below.
    let _ = stream.set_priority(priority(seq));
    let header = encode_to_bytes(&Message::Group { sub, seq });
    let mut pending: Option<Vec<Bytes>> = Some(vec![header]);
    let outcome: Result<bool, ()> = async {
        loop {
            let mut chunks = match pending.take() {
                Some(c) => c,
                None => tokio::select! {
                    biased;
                    _ = cancelled(&mut cancel) => return Ok(false),
                    m = rx.recv() => match m {
                        Some(c) => c,
                        None => return Ok(true),
                    },
                },
            };
            let n: usize = chunks.iter().map(|c| c.len()).sum();
            tokio::select! {
                biased;
                _ = cancelled(&mut cancel) => return Ok(false),
                r = stream.write_all_chunks(&mut chunks) => {
                    r.map_err(|_| ())?;
                    count_tx(n);
                }
            }
        }
    }
    .await;
    match outcome {
        Ok(true) => {
            let _ = stream.finish();
            // In flight until the peer has it all (or stops it).
            tokio::select! {
                _ = cancelled(&mut cancel) => {
                    let _ = stream.reset(CODE_CANCELLED.into());
                }
                _ = stream.stopped() => {}
            }
        }
        Ok(false) => {
            let _ = stream.reset(CODE_CANCELLED.into());
        }
        Err(()) => {}
    }
    done.store(true, Ordering::Relaxed);
}
