//! The link between nodes: streams travel from one node's hub to another's
//! over QUIC.
//!
//! * Security: both ends present a certificate of the cluster CA
//!   ([`ClusterCa`], [`ClusterTls`]) and verify the other's; nothing else can
//!   connect. A subscriber also names itself, and the server checks the name
//!   against the certificate.
//! * One QUIC connection per pair of nodes ([`LinkClient`]); any number of
//!   subscriptions on it, one per stream, each on its own bidirectional
//!   control stream: the client sends `Subscribe`, the server answers
//!   `Accepted`, `NotHere`, `Redirect` (to a child in the stream's tree, see
//!   [`Admission`]) or `Refused`, and later `End` when the stream ends.
//!   Closing the control stream unsubscribes.
//! * Media: each group of pictures (a keyframe and what follows it) goes on
//!   its own unidirectional stream, newer groups at higher priority. At most
//!   [`LinkConfig::groups_in_flight`] groups are in flight: when a new group
//!   starts and an older one is still not delivered, the oldest is reset,
//!   and the receiver cancels an older group it is still waiting on once a
//!   newer one has waited [`LinkConfig::group_grace`]. A lossy hop therefore
//!   costs frames at the tail of a group, never the live edge.
//! * On the sending node a subscription is an ordinary [`Hub::subscribe`]
//!   cursor; on the receiving node a pull is an ordinary [`Hub::publish`]
//!   publisher. The hub, ingest and egress do not know links exist.
//! * The wire format ([`framing`]) is our own, length-prefixed and bounded;
//!   decoding is sans-IO and never panics.
//!
//! Metrics: `banyan_link_bytes_total{direction="tx"|"rx"}` (media and control
//! bytes written to / read from link streams), `banyan_link_groups_cancelled_total`
//! (groups reset by the sender or abandoned by the receiver),
//! `banyan_link_subscriptions` (gauge of served subscriptions).
//!
//! [`Hub::subscribe`]: crate::Hub::subscribe
//! [`Hub::publish`]: crate::Hub::publish

mod client;
pub mod framing;
mod sequencer;
mod server;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use client::{LinkClient, PullEnd, PullHandle};
pub use server::{Downstream, LinkServer};
pub use tls::{generate_ca, issue_node_cert, ClusterCa, ClusterTls, ALPN};

use crate::hub::StreamState;
use framing::FramingError;

/// Errors of the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Certificates or keys are unusable, or a TLS configuration failed.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("binding the link socket: {0}")]
    Bind(#[source] std::io::Error),
    /// The connection attempt could not start.
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed (handshake refused, peer gone,
    /// idle timeout).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream failed while talking to the peer.
    #[error("link stream: {0}")]
    Stream(String),
    /// The peer sent bytes that do not decode.
    #[error("link framing: {0}")]
    Framing(#[from] FramingError),
    /// The peer did not answer in time.
    #[error("the peer did not answer in time")]
    Timeout,
    /// The peer does not have the stream.
    #[error("the peer does not have the stream")]
    NotHere,
    /// The peer is full for this stream: ask `node` at `addr`.
    #[error("redirected to {node} at {addr}")]
    Redirect { node: String, addr: String },
    /// The peer refused the subscription.
    #[error("refused: {0}")]
    Refused(String),
    /// The local hub already has a publisher for the stream.
    #[error(transparent)]
    Hub(#[from] crate::RelayError),
}

/// Tunables of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Upper bound of one frame's payload on the wire.
    pub max_frame_bytes: usize,
    /// A connection silent this long is dead (its pulls end, its
    /// subscriptions stop). Keep-alives are sent at a quarter of it.
    pub idle_timeout: Duration,
    /// Groups of one subscription allowed in flight, the newest included;
    /// starting one more resets the oldest undelivered one.
    pub groups_in_flight: usize,
    /// How long the receiver holds a newer group while an older one is
    /// still incomplete before abandoning the older one.
    pub group_grace: Duration,
    /// Frames queued for one group on the sender before the group counts as
    /// hopelessly behind and is reset.
    pub group_queue: usize,
    /// How long a subscribe request may take.
    pub request_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_frame_bytes: framing::DEFAULT_MAX_FRAME_LEN,
            idle_timeout: Duration::from_secs(1),
            groups_in_flight: 2,
            group_grace: Duration::from_millis(150),
            group_queue: 512,
            request_timeout: Duration::from_secs(3),
        }
    }
}

impl LinkConfig {
    fn transport(&self) -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        // An idle timeout this short is always representable.
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.keep_alive_interval(Some(self.idle_timeout / 4));
        t.max_concurrent_uni_streams(1024u32.into());
        t.max_concurrent_bidi_streams(1024u32.into());
        t.initial_rtt(Duration::from_millis(100));
        Arc::new(t)
    }
}

/// A subscription request, as the server's [`Admission`] sees it.
#[derive(Debug, Clone)]
pub struct AdmitRequest<'a> {
    /// The stream asked for.
    pub uid: &'a str,
    /// The asking node (its certificate names it).
    pub peer: &'a str,
    /// The nodes this one serves the stream to now.
    pub children: &'a [String],
    /// The stream's state in this node's hub.
    pub state: StreamState,
}

/// What the server answers a subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Accept,
    NotHere,
    /// Ask another node (a child in the stream's tree).
    Redirect {
        node: String,
        addr: SocketAddr,
    },
    Refuse(String),
}

/// The server's policy for subscription requests. The cluster layer plugs
/// the tree planner in here (`banyan_topology::Tree::decide`).
pub trait Admission: Send + Sync + 'static {
    fn admit(&self, req: &AdmitRequest<'_>) -> Admit;
}

/// The default policy: serve any stream that is live (or waiting for its
/// publisher to come back) in the local hub, to anyone in the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStreams;

impl Admission for LocalStreams {
    fn admit(&self, req: &AdmitRequest<'_>) -> Admit {
        match req.state {
            StreamState::Live | StreamState::Reconnecting => Admit::Accept,
            StreamState::Idle => Admit::NotHere,
        }
    }
}

impl<F> Admission for F
where
    F: Fn(&AdmitRequest<'_>) -> Admit + Send + Sync + 'static,
{
    fn admit(&self, req: &AdmitRequest<'_>) -> Admit {
        self(req)
    }
}

/// Reset/stop code meaning "this group was cancelled to keep the live edge".
const CODE_CANCELLED: u32 = 1;

fn count_tx(n: usize) {
    metrics::counter!("banyan_link_bytes_total", "direction" => "tx").increment(n as u64);
}

fn count_rx(n: usize) {
    metrics::counter!("banyan_link_bytes_total", "direction" => "rx").increment(n as u64);
}

fn count_cancelled() {
    metrics::counter!("banyan_link_groups_cancelled_total").increment(1);
}
