//! The cluster: membership, stream origins and per-stream trees over the
//! node links.
//!
//! * Membership: every node upserts its row in `cluster_nodes` every
//!   [`HEARTBEAT`]; a node silent for [`DEAD_AFTER`] is dead. On the same
//!   tick the node takes or renews the origin lease of each stream whose
//!   broadcaster pushes to it, publishes the RTTs of its links, and reloads
//!   a snapshot of the shared state (nodes, origins, tree edges, RTTs). The
//!   link server and the joiners read that snapshot, never the database.
//! * Joining: every [`DEMAND_POLL`] the node looks for streams that local
//!   viewers (or downstream nodes) wait for and that it does not have; for
//!   each it runs a join task: ask the origin, follow redirects, pull, and
//!   hold the pull. The pull publishes into the local hub, so RTMP, SRT and
//!   HLS egress serve it unchanged.
//! * Admission (what this node answers a joiner): accept while the node has
//!   fewer than `fanout` downstream nodes for the stream, else redirect to
//!   the child chosen by [`banyan_topology::Tree::decide`] (shallowest free
//!   slot in the child's subtree, then the lowest RTT to the joiner).
//! * Leaving: no local viewer and no downstream node for [`LEAVE_AFTER`]:
//!   the pull is dropped.
//! * Database outages: the links, pulls and trees live outside the database,
//!   so streams that flow keep flowing while it is down; the snapshot is
//!   frozen (no joins to new origins, no deaths declared), the outage is
//!   logged once, and when the database is back the node re-registers,
//!   renews its leases and edges, and waits [`SETTLE`] before it believes
//!   the staleness of anyone else's rows.
//! * Healing: a pull whose link is lost re-joins from the origin at once,
//!   avoiding the lost parent; the local hub's reconnect window keeps
//!   viewers attached and rebases timestamps. When the origin moves (the
//!   broadcaster reconnected elsewhere) or its broadcaster is away, pulls
//!   are dropped and re-made under the new origin.

mod config;
mod db;

pub use config::{ClusterConfig, ClusterOptions};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use banyan_relay::link::{
    Admission, Admit, AdmitRequest, ClusterCa, Downstream, LinkClient, LinkConfig, LinkError,
    LinkServer, PullEnd, PullHandle,
};
use banyan_relay::StreamState;
use banyan_topology::{Decision, NodeId, RttEstimates, RttTable, Tree};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::ClientIp;
use crate::node::Node;

/// Period of the heartbeat, lease renewal and snapshot reload.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node whose heartbeat is older than this is dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(1500);
/// An origin lease lasts this long unless renewed.
pub const LEASE: Duration = Duration::from_millis(1500);
/// Period of the check for streams wanted here and not had.
pub const DEMAND_POLL: Duration = Duration::from_millis(150);
/// A pull nobody here uses for this long is dropped.
pub const LEAVE_AFTER: Duration = Duration::from_secs(5);
/// Idle timeout of node links: a dead parent is noticed within it.
pub const LINK_IDLE: Duration = Duration::from_millis(400);
/// After the database comes back from an outage, every heartbeat and lease
/// in it is stale at once: for this long after this node's first write
/// succeeds again, peers, origins and edges missing from the database are
/// kept from the last snapshot (every live peer rewrites its rows within
/// it), and stale edges are not swept. A peer is judged dead by the age of
/// its heartbeat only while this node's own writes have been succeeding
/// for longer than that.
pub const SETTLE: Duration = Duration::from_millis(2500);
/// An origin lease missing from the database (expired because the origin's
/// renewals are late: a database outage, a loaded origin) is still believed
/// for this long after it was last seen, while its node is a member: pulls
/// under it are not torn down for a late write. A lease that moved to
/// another node or whose broadcaster is away shows at once.
pub const ORIGIN_GRACE: Duration = Duration::from_secs(4);
/// A membership tick that takes longer than this is abandoned (a database
/// that stopped answering on an open connection) and counts as failed.
const TICK_LIMIT: Duration = Duration::from_secs(4);

/// `banyan cluster-ca --out DIR`: write a new cluster CA (`ca.pem`,
/// `ca.key`, mode 0600).
pub fn write_ca(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca = ClusterCa::generate()?;
    let cert = out.join("ca.pem");
    let key = out.join("ca.key");
    if key.exists() {
        bail!("{} exists; not overwriting a cluster CA", key.display());
    }
    crate::tls::write_private(&cert, ca.cert_pem.as_bytes())?;
    crate::tls::write_private(&key, ca.key_pem.as_bytes())?;
    println!("{}\n{}", cert.display(), key.display());
    Ok(())
}

/// Use the cluster's one default account: the first node creates it, the
/// others add their own API and admin tokens to it (tokens are stored
/// hashed, so each node's credentials.json carries its own tokens for the
/// same account).
pub async fn shared_account(
    store: &crate::store::Store,
    candidate: &str,
) -> anyhow::Result<String> {
    let id = db::claim_meta(store.pool(), "default_account", candidate).await?;
    if id == candidate {
        return Ok(id);
    }
    // The winner creates the account right after its claim.
    for _ in 0..100 {
        if store.account_exists(&id).await? {
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the cluster's default account {id} never appeared in the store")
}

/// One peer node as the snapshot knows it.
#[derive(Debug, Clone)]
struct Peer {
    region: String,
    link: SocketAddr,
    http: String,
}

/// The shared state as last loaded.
#[derive(Default)]
struct Snapshot {
    nodes: HashMap<String, Peer>,
    /// uid -> (origin node, broadcaster live)
    origins: HashMap<String, (String, bool)>,
    /// uid -> (child, parent) edges
    edges: HashMap<String, Vec<(String, String)>>,
    rtts: RttTable,
}

impl Snapshot {
    /// Keep what the database lost but this node knows better: peers it
    /// holds an open link to (`linked`: alive whatever the age of their
    /// heartbeat, which lags after an outage or under load; a dead peer's
    /// link closes within [`LINK_IDLE`]) and origins missing from the
    /// database that were seen there within [`ORIGIN_GRACE`] (`seen`) and
    /// whose node is still a member.
    fn keep_live(
        &mut self,
        old: &Snapshot,
        linked: &HashSet<String>,
        seen: &HashMap<String, Instant>,
        now: Instant,
    ) {
        for name in linked {
            if let Some(peer) = old.nodes.get(name) {
                self.nodes
                    .entry(name.clone())
                    .or_insert_with(|| peer.clone());
            }
        }
        for (uid, origin) in &old.origins {
            let recent = seen
                .get(uid)
                .is_some_and(|t| now.saturating_duration_since(*t) < ORIGIN_GRACE);
            if recent && self.nodes.contains_key(&origin.0) {
                self.origins
                    .entry(uid.clone())
                    .or_insert_with(|| origin.clone());
            }
        }
    }

    /// Keep what `old` knew and the database does not show (yet): peers,
    /// origins and the edges of children with no edge of their own.
    fn keep_missing(&mut self, old: &Snapshot) {
        for (name, peer) in &old.nodes {
            self.nodes
                .entry(name.clone())
                .or_insert_with(|| peer.clone());
        }
        for (uid, origin) in &old.origins {
            self.origins
                .entry(uid.clone())
                .or_insert_with(|| origin.clone());
        }
        for (uid, old_edges) in &old.edges {
            let edges = self.edges.entry(uid.clone()).or_default();
            for (child, parent) in old_edges {
                if !edges.iter().any(|(c, _)| c == child) {
                    edges.push((child.clone(), parent.clone()));
                }
            }
        }
    }
}

/// RTTs for the planner: measured when known, else "same region" is close.
struct Rtts<'a>(&'a Snapshot);

impl RttEstimates for Rtts<'_> {
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration> {
        if let Some(r) = self.0.rtts.rtt(a, b) {
            return Some(r);
        }
        let ra = self.0.nodes.get(a.as_str()).map(|p| &p.region);
        let rb = self.0.nodes.get(b.as_str()).map(|p| &p.region);
        match (ra, rb) {
            (Some(x), Some(y)) if x == y => Some(Duration::from_millis(1)),
            _ => None,
        }
    }
}

/// A stream this node pulls (or is joining).
#[derive(Debug, Clone, Default)]
struct Pull {
    parent: Option<String>,
    origin: Option<String>,
}

/// What the link server, the HLS seam and the join tasks share.
struct Shared {
    me: String,
    fanout: usize,
    snap: RwLock<Snapshot>,
    pulls: Mutex<HashMap<String, Pull>>,
    /// Per stream, nodes accepted as children whose pull is not served yet
    /// (at most [`ADMIT_HOLD`] old): they count against the fan-out, so
    /// two nodes asking at once (orphans healing together) cannot both
    /// take the last place.
    admitted: Mutex<HashMap<String, Vec<(String, Instant)>>>,
}

/// How long an accepted child counts before its pull shows up as served.
const ADMIT_HOLD: Duration = Duration::from_secs(2);

impl Shared {
    /// The live origin of `uid` on another node.
    fn remote_origin(&self, uid: &str) -> Option<String> {
        let snap = self.snap.read();
        match snap.origins.get(uid) {
            Some((node, true)) if *node != self.me && snap.nodes.contains_key(node) => {
                Some(node.clone())
            }
            _ => None,
        }
    }
}

impl Admission for Shared {
    fn admit(&self, req: &AdmitRequest<'_>) -> Admit {
        if req.state == StreamState::Idle {
            return Admit::NotHere;
        }
        if self
            .pulls
            .lock()
            .get(req.uid)
            .is_some_and(|p| p.parent.as_deref() == Some(req.peer))
        {
            return Admit::Refuse("the asking node is this node's parent".into());
        }
        let mut admitted = self.admitted.lock();
        let recent = admitted.entry(req.uid.to_string()).or_default();
        recent.retain(|(p, at)| {
            at.elapsed() < ADMIT_HOLD && !req.children.contains(p) && p != req.peer
        });
        let kids: Vec<String> = req
            .children
            .iter()
            .filter(|c| *c != req.peer)
            .chain(recent.iter().map(|(p, _)| p))
            .cloned()
            .collect();
        let answer = self.place(req, &kids);
        if answer == Admit::Accept {
            recent.push((req.peer.to_string(), Instant::now()));
        }
        admitted.retain(|_, v| !v.is_empty());
        answer
    }
}

impl Shared {
    /// Where a joiner goes, given the children this node serves or has
    /// just accepted (`kids`, the joiner not among them).
    fn place(&self, req: &AdmitRequest<'_>, kids: &[String]) -> Admit {
        if kids.len() < self.fanout {
            return Admit::Accept;
        }
        let snap = self.snap.read();
        let me = NodeId::new(self.me.clone());
        let joiner = NodeId::new(req.peer);
        // This node's subtree: its downstream nodes now, and below them the
        // stored edges.
        let mut edges: Vec<(NodeId, NodeId)> = kids
            .iter()
            .filter(|k| snap.nodes.contains_key(k.as_str()))
            .map(|k| (NodeId::new(k.as_str()), me.clone()))
            .collect();
        let stored = snap.edges.get(req.uid).cloned().unwrap_or_default();
        let mut inside: HashSet<String> = edges.iter().map(|(c, _)| c.to_string()).collect();
        // Bounded: each round adds at least one node or stops.
        for _ in 0..stored.len() {
            let mut added = false;
            for (c, p) in &stored {
                if inside.contains(p) && !inside.contains(c) && *c != self.me && c != req.peer {
                    inside.insert(c.clone());
                    edges.push((NodeId::new(c.as_str()), NodeId::new(p.as_str())));
                    added = true;
                }
            }
            if !added {
                break;
            }
        }
        let first_level: Vec<(NodeId, NodeId)> =
            edges.iter().filter(|(_, p)| *p == me).cloned().collect();
        let tree = Tree::from_edges(me.clone(), self.fanout, edges)
            .or_else(|_| Tree::from_edges(me.clone(), usize::MAX, first_level));
        let choice = match tree {
            Ok(t) if t.children(&me).count() >= self.fanout => {
                match t.decide(&me, &joiner, &Rtts(&snap)) {
                    Decision::Redirect(c) => Some(c),
                    Decision::Accept => None,
                }
            }
            Ok(t) => {
                // Over the limit only in a race: pick the closest child.
                let rtts = Rtts(&snap);
                t.children(&me)
                    .min_by_key(|c| (rtts.rtt(&joiner, c).unwrap_or(Duration::MAX), (*c).clone()))
                    .cloned()
            }
            Err(_) => None,
        };
        match choice.and_then(|c| snap.nodes.get(c.as_str()).map(|p| (c, p.link))) {
            Some((node, addr)) => Admit::Redirect {
                node: node.to_string(),
                addr,
            },
            // No usable child (all dead): take the joiner rather than fail it.
            None => Admit::Accept,
        }
    }
}

/// A running cluster member.
pub struct Cluster {
    cfg: ClusterConfig,
    node: Arc<Node>,
    link: Arc<LinkServer>,
    link_addr: SocketAddr,
    downstream: Downstream,
    shared: Arc<Shared>,
    clients: Arc<Mutex<HashMap<String, LinkClient>>>,
    connecting: Arc<Mutex<HashSet<String>>>,
    leases: Mutex<HashSet<String>>,
    wake: Notify,
    /// Since when this node's membership writes have been succeeding
    /// without a failure (None: the last tick failed, or none ran yet).
    db_ok_since: Mutex<Option<Instant>>,
    /// When each origin lease was last read from the database.
    origins_seen: Mutex<HashMap<String, Instant>>,
}

fn link_config() -> LinkConfig {
    LinkConfig {
        idle_timeout: LINK_IDLE,
        request_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    }
}

impl Cluster {
    /// Bind the link and start every cluster task (the tables are the
    /// store's, see `store::migrate`).
    pub async fn start(node: Arc<Node>, cfg: ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        let tls = cfg.tls().context("the node's link certificate")?;
        let shared = Arc::new(Shared {
            me: cfg.node.clone(),
            fanout: cfg.fanout,
            snap: RwLock::new(Snapshot::default()),
            pulls: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
        });
        let (server, link_addr) =
            LinkServer::bind_with(cfg.link, &tls, node.hub.clone(), link_config())
                .with_context(|| format!("binding the cluster link {}", cfg.link))?;
        let server = server.with_admission(shared.clone());
        let downstream = server.downstream();
        let cluster = Arc::new(Cluster {
            cfg,
            node: node.clone(),
            link: Arc::new(server),
            link_addr,
            downstream,
            shared,
            clients: Arc::default(),
            connecting: Arc::default(),
            leases: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            db_ok_since: Mutex::new(None),
            origins_seen: Mutex::new(HashMap::new()),
        });
        cluster.membership_tick().await?;
        tracing::info!(node = %cluster.cfg.node, region = %cluster.cfg.region, link = %link_addr,
            fanout = cluster.cfg.fanout, "cluster member");
        let link = cluster.link.clone();
        let stop = node.shutdown.clone();
        tokio::spawn(async move { link.run(stop.cancelled_owned()).await });
        tokio::spawn(cluster.clone().membership());
        tokio::spawn(cluster.clone().demand());
        Ok(cluster)
    }

    /// For the HLS service: streams that are idle here but live on another
    /// node can be fetched on demand.
    pub fn fetchable(&self) -> banyan_egress::hls::Fetchable {
        let shared = self.shared.clone();
        Arc::new(move |uid: &str| shared.remote_origin(uid).is_some())
    }

    /// For simulcast outputs: whether this node is the stream's origin (a
    /// broadcaster publishes here and this node holds the origin lease), so
    /// that a stream's outputs run on one node only.
    pub fn origin_check(self: &Arc<Self>) -> crate::outputs::OriginCheck {
        let c = self.clone();
        Arc::new(move |uid: &str| !c.pulling(uid) && c.leases.lock().contains(uid))
    }

    fn pulling(&self, uid: &str) -> bool {
        self.shared.pulls.lock().contains_key(uid)
    }

    async fn membership(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.node.shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            let r = tokio::time::timeout(TICK_LIMIT, self.membership_tick())
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut.into()));
            match r {
                Ok(()) => self.node.store.note_ok(),
                Err(e) => {
                    *self.db_ok_since.lock() = None;
                    self.node.store.note_failure("cluster heartbeat", &e);
                }
            }
        }
        // Tell the others at once.
        if let Err(e) = db::remove_node(self.node.store.pool(), &self.cfg.node).await {
            tracing::warn!("leaving the cluster: {e:#}");
        }
    }

    /// Heartbeat, origin leases, edges and RTTs out; the snapshot in.
    async fn membership_tick(&self) -> anyhow::Result<()> {
        let pool = self.node.store.pool();
        db::heartbeat(
            pool,
            &self.cfg.node,
            &self.cfg.region,
            self.cfg.advertise.unwrap_or(self.link_addr),
            self.node.addrs.http,
        )
        .await?;
        // Right after an outage, others' rows may be stale only because
        // they could not write either.
        let settled = self
            .db_ok_since
            .lock()
            .get_or_insert_with(Instant::now)
            .elapsed()
            >= SETTLE;
        // Origins: streams whose broadcaster pushes to this node.
        for uid in self.node.input_uids() {
            if self.pulling(&uid) {
                continue;
            }
            let state = self.node.hub.state(&uid);
            let held = self.leases.lock().contains(&uid);
            let want = match state {
                StreamState::Live => Some(true),
                StreamState::Reconnecting if held => Some(false),
                _ => None,
            };
            match want {
                Some(live) => {
                    let got = db::take_origin(pool, &uid, &self.cfg.node, live, LEASE).await?;
                    let mut leases = self.leases.lock();
                    if got {
                        if leases.insert(uid.clone()) {
                            tracing::info!(stream = %uid, "this node is the stream's origin");
                        }
                    } else {
                        leases.remove(&uid);
                    }
                }
                None if held => {
                    db::release_origin(pool, &uid, &self.cfg.node).await?;
                    self.leases.lock().remove(&uid);
                    tracing::info!(stream = %uid, "origin lease released");
                }
                None => {}
            }
        }
        let edges: Vec<(String, String)> = self
            .shared
            .pulls
            .lock()
            .iter()
            .filter_map(|(u, p)| p.parent.clone().map(|p| (u.clone(), p)))
            .collect();
        for (uid, parent) in edges {
            db::set_edge(pool, &uid, &self.cfg.node, &parent).await?;
        }
        let clients: Vec<(String, Duration)> = self
            .clients
            .lock()
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(n, c)| (n.clone(), c.rtt()))
            .collect();
        for (peer, rtt) in &clients {
            db::set_rtt(pool, &self.cfg.node, peer, *rtt).await?;
        }
        // The snapshot.
        let nodes = db::live_nodes(pool, DEAD_AFTER).await?;
        let origins = db::origins(pool).await?;
        let edges = db::edges(pool, DEAD_AFTER * 2, settled).await?;
        let rtts = db::rtts(pool, Duration::from_secs(10)).await?;
        let mut snap = Snapshot::default();
        for n in nodes {
            snap.nodes.insert(
                n.name,
                Peer {
                    region: n.region,
                    link: n.link_addr,
                    http: n.http_addr,
                },
            );
        }
        let now = Instant::now();
        let mut seen = self.origins_seen.lock();
        for (uid, node, live) in origins {
            seen.insert(uid.clone(), now);
            snap.origins.insert(uid, (node, live));
        }
        seen.retain(|_, t| now.saturating_duration_since(*t) < ORIGIN_GRACE);
        let linked: HashSet<String> = self
            .clients
            .lock()
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(n, _)| n.clone())
            .collect();
        snap.keep_live(&self.shared.snap.read(), &linked, &seen, now);
        drop(seen);
        for (uid, child, parent) in edges {
            if snap.nodes.contains_key(&child) && snap.nodes.contains_key(&parent) {
                snap.edges.entry(uid).or_default().push((child, parent));
            }
        }
        for (a, b, rtt) in rtts {
            snap.rtts.set(&NodeId::new(a), &NodeId::new(b), rtt);
        }
        if !settled {
            snap.keep_missing(&self.shared.snap.read());
        }
        let peers: Vec<(String, SocketAddr)> = snap
            .nodes
            .iter()
            .filter(|(n, _)| **n != self.cfg.node)
            .map(|(n, p)| (n.clone(), p.link))
            .collect();
        metrics::gauge!("banyan_cluster_nodes").set(snap.nodes.len() as f64);
        *self.shared.snap.write() = snap;
        self.keep_connections(peers);
        Ok(())
    }

    /// Keep one link to every live peer: RTTs for the planner, and joins
    /// and heals that need no handshake.
    fn keep_connections(&self, peers: Vec<(String, SocketAddr)>) {
        let live: HashSet<&String> = peers.iter().map(|(n, _)| n).collect();
        self.clients
            .lock()
            .retain(|n, c| live.contains(n) && c.close_reason().is_none());
        for (name, addr) in peers {
            if self.clients.lock().contains_key(&name)
                || !self.connecting.lock().insert(name.clone())
            {
                continue;
            }
            let link = self.link.clone();
            let clients = self.clients.clone();
            let connecting = self.connecting.clone();
            tokio::spawn(async move {
                let r = tokio::time::timeout(CONNECT_TIMEOUT, link.connect(addr, &name)).await;
                match r {
                    Ok(Ok(c)) => {
                        clients.lock().insert(name.clone(), c);
                    }
                    Ok(Err(e)) => tracing::debug!(peer = %name, error = %e, "link connect failed"),
                    Err(_) => tracing::debug!(peer = %name, "link connect timed out"),
                }
                connecting.lock().remove(&name);
            });
        }
    }

    /// The link to node `name` (reused, or made now).
    async fn client(&self, name: &str, hint: Option<SocketAddr>) -> Result<LinkClient, String> {
        if let Some(c) = self.clients.lock().get(name) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = self
            .shared
            .snap
            .read()
            .nodes
            .get(name)
            .map(|p| p.link)
            .or(hint)
            .ok_or_else(|| format!("node {name} is not a live member"))?;
        let c = tokio::time::timeout(CONNECT_TIMEOUT, self.link.connect(addr, name))
            .await
            .map_err(|_| format!("connecting to {name} timed out"))?
            .map_err(|e| format!("connecting to {name}: {e}"))?;
        self.clients.lock().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Start a join for every stream wanted here and live elsewhere; wake
    /// the membership loop when a local broadcaster needs the origin lease.
    async fn demand(self: Arc<Self>) {
        let mut tick = tokio::time::interval(DEMAND_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.node.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let hub = &self.node.hub;
            for uid in self.node.input_uids() {
                if self.pulling(&uid) {
                    continue;
                }
                let state = hub.state(&uid);
                if state == StreamState::Live {
                    if !self.leases.lock().contains(&uid) {
                        self.wake.notify_one();
                    }
                    continue;
                }
                // Viewers waiting (through a heal or an origin move), or any
                // subscriber of a stream that is not here at all.
                let wanted = self.node.views.live(&uid) > 0
                    || (state == StreamState::Idle && hub.subscribers(&uid) > 0);
                if !wanted || self.shared.remote_origin(&uid).is_none() {
                    continue;
                }
                self.shared
                    .pulls
                    .lock()
                    .insert(uid.clone(), Pull::default());
                tokio::spawn(self.clone().join(uid));
            }
        }
    }

    /// Local viewers (of any protocol) or downstream nodes use `uid`, or
    /// did within [`LEAVE_AFTER`]. Other hub subscribers (a waiting HLS
    /// muxer, the ingest meters) do not keep a pull alive by themselves.
    fn wanted(&self, uid: &str, idle_since: &mut Option<Instant>) -> bool {
        let viewers = self.node.views.live(uid) > 0;
        let downstream = !self.downstream.peers(uid).is_empty();
        // Before the pull starts, a waiting subscriber is the demand.
        let waiting = self.node.hub.state(uid) != StreamState::Live
            && self.node.hub.subscribers(uid) > 0
            && idle_since.is_none();
        if viewers || downstream || waiting {
            *idle_since = None;
            return true;
        }
        idle_since.get_or_insert_with(Instant::now).elapsed() < LEAVE_AFTER
    }

    /// Hold stream `uid` here while it is wanted: join, heal, follow the
    /// origin, leave.
    async fn join(self: Arc<Self>, uid: String) {
        let span = tracing::info_span!("cluster_join", stream = %uid);
        let _ = tracing::Instrument::instrument(self.clone().join_loop(uid.clone()), span).await;
        // The pull's publisher is gone once the stream stops being live.
        for _ in 0..40 {
            if self.node.hub.state(&uid) != StreamState::Live {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.pulls.lock().remove(&uid);
        if let Err(e) = db::remove_edge(self.node.store.pool(), &uid, &self.cfg.node).await {
            tracing::debug!("removing a tree edge: {e}");
        }
    }

    async fn join_loop(self: Arc<Self>, uid: String) {
        let mut avoid: HashMap<String, Instant> = HashMap::new();
        let mut idle_since = None;
        let mut lost_at: Option<Instant> = None;
        // Bounded by demand: the loop ends LEAVE_AFTER after the last user.
        loop {
            if self.node.shutdown.is_cancelled() || !self.wanted(&uid, &mut idle_since) {
                return;
            }
            let Some(origin) = self.shared.remote_origin(&uid) else {
                tokio::time::sleep(DEMAND_POLL).await;
                // No pull is held here (a dropped one is gone by now): live
                // means a broadcaster publishes to this node, which becomes
                // the origin.
                if self.node.hub.state(&uid) == StreamState::Live {
                    tracing::info!("a broadcaster publishes here: no pull");
                    return;
                }
                continue;
            };
            avoid.retain(|_, t| t.elapsed() < Duration::from_secs(2));
            let (mut handle, parent) = match self.attempt(&uid, &origin, &avoid).await {
                Ok(x) => x,
                Err(JoinFail::LocalPublisher) => {
                    tracing::info!("a broadcaster publishes here: no pull");
                    return;
                }
                Err(JoinFail::Retry(why)) => {
                    tracing::debug!(%why, "join attempt failed; retrying");
                    metrics::counter!("banyan_cluster_join_failures_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            metrics::counter!("banyan_cluster_joins_total").increment(1);
            match lost_at.take() {
                Some(t) => {
                    let took = t.elapsed();
                    metrics::histogram!("banyan_cluster_heal_seconds").record(took.as_secs_f64());
                    tracing::info!(%parent, %origin, ms = took.as_millis() as u64, "healed: pulling from a new parent");
                }
                None => tracing::info!(%parent, %origin, "joined the stream's tree"),
            }
            self.shared.pulls.lock().insert(
                uid.clone(),
                Pull {
                    parent: Some(parent.clone()),
                    origin: Some(origin.clone()),
                },
            );
            // Stored in the background: the pull is held (and the next
            // membership tick rewrites the edge) whether or not the
            // database answers now.
            let pool = self.node.store.pool().clone();
            let (u, me, p) = (uid.clone(), self.cfg.node.clone(), parent.clone());
            tokio::spawn(async move {
                if let Err(e) = db::set_edge(&pool, &u, &me, &p).await {
                    tracing::debug!("storing a tree edge: {e}");
                }
            });
            let held = self.hold(&uid, &origin, &mut handle, &mut idle_since).await;
            drop(handle);
            if let Some(p) = self.shared.pulls.lock().get_mut(&uid) {
                p.parent = None;
            }
            match held {
                Held::Ended(PullEnd::LinkLost(why)) => {
                    tracing::warn!(%parent, %why, "link to the parent lost; re-joining");
                    avoid.insert(parent, Instant::now());
                    lost_at = Some(Instant::now());
                }
                Held::Ended(end) => {
                    tracing::info!(?end, "the stream ended upstream");
                    tokio::time::sleep(DEMAND_POLL).await;
                }
                Held::OriginChanged => {
                    tracing::info!(%origin, "the origin moved or its broadcaster is away; re-joining");
                }
                Held::Done => return,
            }
        }
    }

    /// Ask the origin, follow redirects, pull.
    async fn attempt(
        &self,
        uid: &str,
        origin: &str,
        avoid: &HashMap<String, Instant>,
    ) -> Result<(PullHandle, String), JoinFail> {
        let mut at = origin.to_string();
        let mut hint = None;
        for _ in 0..MAX_REDIRECTS {
            if avoid.contains_key(&at) {
                return Err(JoinFail::Retry(format!("sent to {at}, lost moments ago")));
            }
            let client = self.client(&at, hint).await.map_err(JoinFail::Retry)?;
            match client.pull(uid, self.node.hub.clone()).await {
                Ok(h) => return Ok((h, at)),
                Err(LinkError::Redirect { node, addr }) => {
                    tracing::debug!(from = %at, to = %node, "redirected");
                    hint = addr.parse().ok();
                    at = node;
                }
                Err(LinkError::Hub(_)) => return Err(JoinFail::LocalPublisher),
                Err(e) => {
                    if client.close_reason().is_some() {
                        self.clients.lock().remove(&at);
                    }
                    return Err(JoinFail::Retry(format!("{at}: {e}")));
                }
            }
        }
        Err(JoinFail::Retry("too many redirects".into()))
    }

    /// Keep a pull until it ends, the origin changes, or nobody wants it.
    async fn hold(
        &self,
        uid: &str,
        origin: &str,
        handle: &mut PullHandle,
        idle_since: &mut Option<Instant>,
    ) -> Held {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                end = handle.ended() => return Held::Ended(end),
                _ = tick.tick() => {
                    if self.node.shutdown.is_cancelled() {
                        return Held::Done;
                    }
                    if !self.wanted(uid, idle_since) {
                        tracing::info!("no viewers and no downstream nodes: leaving the tree");
                        return Held::Done;
                    }
                    if self.shared.remote_origin(uid).as_deref() != Some(origin) {
                        return Held::OriginChanged;
                    }
                }
            }
        }
    }

    /// Leave the cluster now (shutdown): origins, edges and the node's row
    /// go, so peers react at once instead of waiting for the lease.
    pub async fn leave(&self) {
        if let Err(e) = db::remove_node(self.node.store.pool(), &self.cfg.node).await {
            tracing::warn!("leaving the cluster: {e:#}");
        }
    }

    /// `GET /cluster/nodes` and `GET /cluster/streams/{uid}` (admin token).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/cluster/nodes", get(nodes_json))
            .route("/cluster/streams/{uid}", get(stream_json))
            .with_state(self.clone())
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
const MAX_REDIRECTS: usize = 16;

enum JoinFail {
    /// A broadcaster publishes the stream on this node.
    LocalPublisher,
    Retry(String),
}

enum Held {
    Ended(PullEnd),
    OriginChanged,
    Done,
}

/// The admin token, checked as the API checks tokens (one limiter).
async fn admin(
    c: &Cluster,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<(), Response> {
    let token = crate::auth::bearer(headers);
    let node = &c.node;
    match node
        .auth_limiter
        .check(&node.store, token, ip, "cluster")
        .await
    {
        Ok(i) if i.admin => Ok(()),
        Ok(_) => Err((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "admin token required"})),
        )
            .into_response()),
        Err(e) => Err((e.status(), Json(json!({"error": e.message()}))).into_response()),
    }
}

async fn nodes_json(
    State(c): State<Arc<Cluster>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&c, &headers, ip).await {
        return r;
    }
    let snap = c.shared.snap.read();
    let mut nodes: Vec<Value> = snap
        .nodes
        .iter()
        .map(|(name, p)| {
            json!({"name": name, "region": p.region, "link": p.link.to_string(),
                   "http": p.http, "self": *name == c.cfg.node})
        })
        .collect();
    nodes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(
        json!({"node": c.cfg.node, "fanout": c.cfg.fanout, "link": c.link_addr.to_string(),
                "nodes": nodes}),
    )
    .into_response()
}

async fn stream_json(
    State(c): State<Arc<Cluster>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    UrlPath(uid): UrlPath<String>,
) -> Response {
    if let Err(r) = admin(&c, &headers, ip).await {
        return r;
    }
    let snap = c.shared.snap.read();
    let origin = snap.origins.get(&uid).cloned();
    let edges = snap.edges.get(&uid).cloned().unwrap_or_default();
    let pull = c.shared.pulls.lock().get(&uid).cloned();
    // Depth of each member, walking parent links up to the origin.
    let parent_of: HashMap<&str, &str> = edges
        .iter()
        .map(|(ch, p)| (ch.as_str(), p.as_str()))
        .collect();
    let depth = |n: &str| -> Option<usize> {
        let mut at = n;
        for d in 0..=parent_of.len() {
            if Some(at) == origin.as_ref().map(|o| o.0.as_str()) {
                return Some(d);
            }
            at = parent_of.get(at)?;
        }
        None
    };
    let mut members: Vec<Value> = edges
        .iter()
        .map(|(ch, p)| json!({"child": ch, "parent": p, "depth": depth(ch)}))
        .collect();
    members.sort_by(|a, b| a["child"].as_str().cmp(&b["child"].as_str()));
    let height = edges
        .iter()
        .filter_map(|(ch, _)| depth(ch))
        .max()
        .unwrap_or(0);
    Json(json!({
        "uid": uid,
        "node": c.cfg.node,
        "origin": origin.as_ref().map(|o| &o.0),
        "originLive": origin.as_ref().map(|o| o.1),
        "state": format!("{:?}", c.node.hub.state(&uid)).to_lowercase(),
        "pulledUnder": pull.as_ref().and_then(|p| p.origin.clone()),
        "parent": pull.and_then(|p| p.parent),
        "children": c.downstream.peers(&uid),
        "edges": members,
        "height": height,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> Peer {
        Peer {
            region: "r".into(),
            link: SocketAddr::from(([127, 0, 0, 1], port)),
            http: String::new(),
        }
    }

    #[test]
    fn nodes_asking_at_once_cannot_both_take_the_last_place() {
        let mut snap = Snapshot::default();
        for (i, n) in ["a", "b", "c", "d"].into_iter().enumerate() {
            snap.nodes.insert(n.into(), peer(9000 + i as u16));
        }
        let shared = Shared {
            me: "a".into(),
            fanout: 2,
            snap: RwLock::new(snap),
            pulls: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
        };
        // a serves b; c and d ask before either of them is served.
        let served = vec!["b".to_string()];
        let ask = |peer| AdmitRequest {
            uid: "s",
            peer,
            children: &served,
            state: StreamState::Live,
        };
        assert_eq!(shared.admit(&ask("c")), Admit::Accept);
        match shared.admit(&ask("d")) {
            Admit::Redirect { node, .. } => assert!(node == "b" || node == "c", "{node}"),
            other => panic!("d must go below a child, got {other:?}"),
        }
        // Asking again (a retry) does not count twice.
        assert_eq!(shared.admit(&ask("c")), Admit::Accept);
    }

    /// A peer with an open link stays a member whatever its heartbeat's
    /// age; an origin lease that went missing a moment ago stays while its
    /// node does; an old one, or one of a node gone, does not.
    #[test]
    fn links_and_recent_leases_outlive_late_writes() {
        let mut old = Snapshot::default();
        for (n, p) in [("a", 1), ("b", 2), ("c", 3)] {
            old.nodes.insert(n.into(), peer(p));
        }
        old.origins.insert("u".into(), ("a".into(), true));
        old.origins.insert("v".into(), ("c".into(), true));
        old.origins.insert("w".into(), ("a".into(), true));
        let now = Instant::now();
        let mut seen = HashMap::new();
        seen.insert("u".to_string(), now - Duration::from_millis(1500));
        seen.insert("v".to_string(), now - Duration::from_millis(1500));
        seen.insert("w".to_string(), now - ORIGIN_GRACE);
        let linked: HashSet<String> = ["a".to_string()].into();

        let mut fresh = Snapshot::default();
        fresh.nodes.insert("b".into(), peer(2));
        fresh.keep_live(&old, &linked, &seen, now);
        let mut names: Vec<&String> = fresh.nodes.keys().collect();
        names.sort();
        assert_eq!(names, ["a", "b"], "c has no link and no heartbeat");
        assert_eq!(fresh.origins.get("u"), Some(&("a".to_string(), true)));
        assert!(!fresh.origins.contains_key("v"), "its node is gone");
        assert!(!fresh.origins.contains_key("w"), "missing for too long");

        // What the database shows wins.
        let mut fresh = Snapshot::default();
        fresh.origins.insert("u".into(), ("b".into(), false));
        fresh.keep_live(&old, &linked, &seen, now);
        assert_eq!(fresh.origins["u"], ("b".to_string(), false));
    }

    /// Right after a database outage the first read shows only this node:
    /// the peers, the origin and the edges of the last snapshot are kept;
    /// what the database does show wins.
    #[test]
    fn an_unsettled_snapshot_keeps_what_the_database_lost() {
        let mut old = Snapshot::default();
        for (n, p) in [("a", 1), ("b", 2), ("c", 3)] {
            old.nodes.insert(n.into(), peer(p));
        }
        old.origins.insert("u".into(), ("a".into(), true));
        old.origins.insert("v".into(), ("c".into(), true));
        old.edges.insert(
            "u".into(),
            vec![("b".into(), "a".into()), ("c".into(), "a".into())],
        );

        let mut fresh = Snapshot::default();
        fresh.nodes.insert("b".into(), peer(2));
        fresh.nodes.insert("c".into(), peer(30));
        fresh.origins.insert("v".into(), ("b".into(), true));
        fresh
            .edges
            .insert("u".into(), vec![("c".into(), "b".into())]);
        fresh.keep_missing(&old);

        let mut names: Vec<&String> = fresh.nodes.keys().collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(fresh.nodes["c"].link.port(), 30, "the fresh row wins");
        assert_eq!(fresh.origins["u"], ("a".to_string(), true));
        assert_eq!(fresh.origins["v"], ("b".to_string(), true));
        let mut edges = fresh.edges["u"].clone();
        edges.sort();
        assert_eq!(
            edges,
            [
                ("b".to_string(), "a".to_string()),
                ("c".to_string(), "b".to_string())
            ]
        );
    }
}
