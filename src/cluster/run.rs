//! The driver of the cluster core: the database rounds, the local scans,
//! the link requests and pulls, carried out for
//! [`banyan_topology::member::ClusterNode`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use banyan_relay::link::{
    Admission, Admit as WireAdmit, AdmitRequest, Downstream, LinkClient, LinkConfig, LinkError,
    LinkServer, PullEnd, PullHandle,
};
use banyan_relay::StreamState;
use banyan_topology::member::{
    Action, Admit, Answer, ClusterNode, Event, Local, LocalState, Member, Note, OriginOp, Snapshot,
    SyncPlan, Timing,
};
use banyan_topology::NodeId;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::{db, ClusterConfig, LINK_IDLE, TICK_LIMIT};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);

/// The core with the clock it is fed.
pub(super) struct Core {
    epoch: Instant,
    node: Mutex<ClusterNode>,
}

impl Core {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(super) fn lock(&self) -> parking_lot::MutexGuard<'_, ClusterNode> {
        self.node.lock()
    }
}

fn local_state(s: StreamState) -> LocalState {
    match s {
        StreamState::Idle => LocalState::Idle,
        StreamState::Live => LocalState::Live,
        StreamState::Reconnecting => LocalState::Reconnecting,
    }
}

impl Admission for Core {
    fn admit(&self, req: &AdmitRequest<'_>) -> WireAdmit {
        let children: Vec<NodeId> = req
            .children
            .iter()
            .map(|c| NodeId::new(c.as_str()))
            .collect();
        let now = self.now();
        let answer = self.node.lock().admit(
            now,
            req.uid,
            &NodeId::new(req.peer),
            &children,
            local_state(req.state),
        );
        match answer {
            Admit::Accept => WireAdmit::Accept,
            Admit::NotHere => WireAdmit::NotHere,
            Admit::Refuse(why) => WireAdmit::Refuse(why),
            Admit::Redirect { node, link } => WireAdmit::Redirect {
                node: node.to_string(),
                addr: link,
            },
        }
    }
}

/// A running cluster member.
pub struct Cluster {
    pub(super) cfg: ClusterConfig,
    pub(super) ctx: Context,
    link: Arc<LinkServer>,
    pub(super) link_addr: SocketAddr,
    pub(super) downstream: Downstream,
    pub(super) core: Arc<Core>,
    clients: Arc<Mutex<HashMap<String, LinkClient>>>,
    connecting: Arc<Mutex<HashSet<String>>>,
    /// The pulls held, to be dropped on the core's word.
    pulls: Mutex<HashMap<String, (u64, CancellationToken)>>,
    wake: Notify,
}

fn link_config() -> LinkConfig {
    LinkConfig {
        idle_timeout: LINK_IDLE,
        request_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    }
}

impl Cluster {
    /// Bind the link and start every cluster task (the tables come with
    /// the store's migrations).
    pub async fn start(ctx: Context, cfg: ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        let cluster = Cluster::bind(ctx, cfg)?;
        cluster.sync().await?;
        tracing::info!(node = %cluster.cfg.node, region = %cluster.cfg.region,
            link = %cluster.link_addr, fanout = cluster.cfg.fanout, "cluster member");
        let link = cluster.link.clone();
        let stop = cluster.ctx.shutdown.clone();
        tokio::spawn(async move { link.run(stop.cancelled_owned()).await });
        tokio::spawn(cluster.clone().membership());
        tokio::spawn(cluster.clone().demand());
        Ok(cluster)
    }

    /// The member with its link bound, before its first database round and
    /// with no task running (`start` runs them; tests drive it by hand).
    pub(super) fn bind(ctx: Context, cfg: ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        let tls = cfg.tls().context("the node's link certificate")?;
        let core = Arc::new(Core {
            epoch: Instant::now(),
            node: Mutex::new(ClusterNode::new(
                NodeId::new(cfg.node.as_str()),
                cfg.fanout,
                Timing::default(),
            )),
        });
        let (server, link_addr) =
            LinkServer::bind_with(cfg.link, &tls, ctx.hub.clone(), link_config())
                .with_context(|| format!("binding the cluster link {}", cfg.link))?;
        let server = server.with_admission(core.clone());
        let downstream = server.downstream();
        Ok(Arc::new(Cluster {
            cfg,
            ctx,
            link: Arc::new(server),
            link_addr,
            downstream,
            core,
            clients: Arc::default(),
            connecting: Arc::default(),
            pulls: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }))
    }

    /// For the HLS service: streams that are idle here but live on another
    /// node can be fetched on demand.
    pub fn fetchable(&self) -> banyan_egress::hls::Fetchable {
        let core = self.core.clone();
        Arc::new(move |uid: &str| core.lock().remote_origin(uid).is_some())
    }

    /// For simulcast outputs: whether this node is the stream's origin (a
    /// broadcaster publishes here and this node holds the origin lease), so
    /// that a stream's outputs run on one node only.
    pub fn origin_check(self: &Arc<Self>) -> crate::outputs::OriginCheck {
        let core = self.core.clone();
        Arc::new(move |uid: &str| core.lock().is_origin(uid))
    }

    /// Leave the cluster now (shutdown): origins, edges and the node's row
    /// go, so peers react at once instead of waiting for the lease.
    pub async fn leave(&self) {
        if let Err(e) = db::remove_node(self.ctx.store.pool(), &self.cfg.node).await {
            tracing::warn!("leaving the cluster: {e:#}");
        }
    }

    /// The local streams now.
    pub(super) fn scan(&self) -> Vec<Local> {
        let hub = &self.ctx.hub;
        self.ctx
            .inputs
            .input_uids()
            .into_iter()
            .map(|uid| Local {
                state: local_state(hub.state(&uid)),
                viewers: self.ctx.views.live(&uid) > 0,
                subscribers: hub.subscribers(&uid) > 0,
                downstream: self.downstream.peers(&uid).len(),
                uid,
            })
            .collect()
    }

    /// Feed the core one event and carry out what it says.
    fn feed(self: &Arc<Self>, event: Event) {
        let actions = self.core.lock().handle(self.core.now(), event);
        for a in actions {
            self.act(a);
        }
    }

    fn act(self: &Arc<Self>, action: Action) {
        match action {
            // Only answers `SyncDue`, which `sync` feeds itself.
            Action::Sync(_) => {}
            Action::WakeSync => self.wake.notify_one(),
            Action::Ask {
                uid,
                attempt,
                node,
                link,
            } => {
                let c = self.clone();
                tokio::spawn(async move { c.ask(uid, attempt, node, link).await });
            }
            Action::DropPull { uid } => {
                if let Some((_, stop)) = self.pulls.lock().remove(&uid) {
                    stop.cancel();
                }
            }
            Action::Release { uid } => {
                if let Some((_, stop)) = self.pulls.lock().remove(&uid) {
                    stop.cancel();
                }
                let c = self.clone();
                tokio::spawn(async move {
                    // The pull's publisher is gone once the stream stops
                    // being live (a local broadcaster keeps it live).
                    for _ in 0..40 {
                        if c.ctx.hub.state(&uid) != StreamState::Live {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    c.feed(Event::Released { uid });
                });
            }
            Action::StoreEdge { uid, parent } => {
                // Stored in the background: the pull is held (and the next
                // round rewrites the edge) whether or not the database
                // answers now.
                let pool = self.ctx.store.pool().clone();
                let me = self.cfg.node.clone();
                tokio::spawn(async move {
                    if let Err(e) = db::set_edge(&pool, &uid, &me, parent.as_str()).await {
                        tracing::debug!("storing a tree edge: {e}");
                    }
                });
            }
            Action::RemoveEdge { uid } => {
                let pool = self.ctx.store.pool().clone();
                let me = self.cfg.node.clone();
                tokio::spawn(async move {
                    if let Err(e) = db::remove_edge(&pool, &uid, &me).await {
                        tracing::debug!("removing a tree edge: {e}");
                    }
                });
            }
            Action::TickAt(at) => {
                let c = self.clone();
                let when = self.core.epoch + at;
                tokio::spawn(async move {
                    tokio::time::sleep_until(when).await;
                    c.feed(Event::Tick);
                });
            }
            Action::Note(note) => log_note(note),
        }
    }

    /// Ask `node` for `uid`; on acceptance hold the pull until it ends or
    /// the core drops it.
    async fn ask(
        self: Arc<Self>,
        uid: String,
        attempt: u64,
        node: NodeId,
        link: Option<SocketAddr>,
    ) {
        let answer = match self.client(node.as_str(), link).await {
            Err(why) => Answer::Failed(why),
            Ok(client) => match client.pull(&uid, self.ctx.hub.clone()).await {
                Ok(handle) => {
                    let stop = CancellationToken::new();
                    let old = self
                        .pulls
                        .lock()
                        .insert(uid.clone(), (attempt, stop.clone()));
                    if let Some((_, old)) = old {
                        old.cancel();
                    }
                    metrics::counter!("banyan_cluster_joins_total").increment(1);
                    self.feed(Event::Answer {
                        uid: uid.clone(),
                        attempt,
                        answer: Answer::Accepted,
                    });
                    self.hold(uid, attempt, handle, stop).await;
                    return;
                }
                Err(LinkError::Redirect { node: next, addr }) => {
                    tracing::debug!(stream = %uid, from = %node, to = %next, "redirected");
                    Answer::Redirect {
                        node: NodeId::new(next),
                        link: addr.parse().ok(),
                    }
                }
                Err(LinkError::Hub(_)) => Answer::LocalPublisher,
                Err(LinkError::NotHere) => Answer::NotHere,
                Err(e) => {
                    if client.close_reason().is_some() {
                        self.clients.lock().remove(node.as_str());
                    }
                    Answer::Failed(format!("{node}: {e}"))
                }
            },
        };
        if matches!(answer, Answer::Failed(_)) {
            metrics::counter!("banyan_cluster_join_failures_total").increment(1);
        }
        self.feed(Event::Answer {
            uid,
            attempt,
            answer,
        });
    }

    async fn hold(
        self: &Arc<Self>,
        uid: String,
        attempt: u64,
        mut handle: PullHandle,
        stop: CancellationToken,
    ) {
        let end = tokio::select! {
            end = handle.ended() => end,
            _ = stop.cancelled() => return,
            _ = self.ctx.shutdown.cancelled() => return,
        };
        drop(handle);
        {
            let mut pulls = self.pulls.lock();
            if pulls.get(&uid).is_some_and(|(a, _)| *a == attempt) {
                pulls.remove(&uid);
            }
        }
        let lost = match end {
            PullEnd::LinkLost(why) => Some(why),
            other => {
                tracing::info!(stream = %uid, end = ?other, "the stream ended upstream");
                None
            }
        };
        self.feed(Event::PullEnded { uid, attempt, lost });
    }

    /// The link to node `name` (reused, or made now).
    async fn client(&self, name: &str, hint: Option<SocketAddr>) -> Result<LinkClient, String> {
        if let Some(c) = self.clients.lock().get(name) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = hint.ok_or_else(|| format!("node {name} is not a live member"))?;
        let c = tokio::time::timeout(CONNECT_TIMEOUT, self.link.connect(addr, name))
            .await
            .map_err(|_| format!("connecting to {name} timed out"))?
            .map_err(|e| format!("connecting to {name}: {e}"))?;
        self.clients.lock().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Every `demand_poll`: the local streams to the core.
    async fn demand(self: Arc<Self>) {
        let period = self.core.lock().timing().demand_poll;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let local = self.scan();
            self.feed(Event::Local(local));
        }
    }

    async fn membership(self: Arc<Self>) {
        let period = self.core.lock().timing().heartbeat;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.sync().await {
                self.ctx.store.note_failure("cluster heartbeat", &e);
            } else {
                self.ctx.store.note_ok();
            }
        }
        // Tell the others at once.
        self.leave().await;
    }

    /// One database round: the core's writes out, the snapshot in.
    async fn sync(self: &Arc<Self>) -> anyhow::Result<()> {
        let local = self.scan();
        self.feed(Event::Local(local));
        let now = self.core.now();
        let plan = self
            .core
            .lock()
            .handle(now, Event::SyncDue)
            .into_iter()
            .find_map(|a| match a {
                Action::Sync(p) => Some(p),
                _ => None,
            })
            .unwrap_or_default();
        let r = tokio::time::timeout(TICK_LIMIT, self.round(&plan))
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut.into()));
        match r {
            Ok((snapshot, taken)) => {
                let linked = self.linked();
                metrics::gauge!("banyan_cluster_nodes").set(snapshot.nodes.len() as f64);
                self.feed(Event::Synced {
                    snapshot: Arc::new(snapshot),
                    taken,
                    linked,
                });
                self.keep_connections();
                Ok(())
            }
            Err(e) => {
                self.feed(Event::SyncFailed);
                Err(e)
            }
        }
    }

    fn linked(&self) -> BTreeSet<NodeId> {
        self.clients
            .lock()
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(n, _)| NodeId::new(n.as_str()))
            .collect()
    }

    async fn round(&self, plan: &SyncPlan) -> anyhow::Result<(Snapshot, Vec<(String, bool)>)> {
        let pool = self.ctx.store.pool();
        let me = &self.cfg.node;
        let t = self.core.lock().timing().clone();
        db::heartbeat(
            pool,
            me,
            &self.cfg.region,
            self.cfg.advertise.unwrap_or(self.link_addr),
            self.ctx.http,
        )
        .await?;
        let mut taken = Vec::new();
        for (uid, op) in &plan.origins {
            match op {
                OriginOp::Take { live } => {
                    let got = db::take_origin(pool, uid, me, *live, t.lease).await?;
                    taken.push((uid.clone(), got));
                }
                OriginOp::Release => db::release_origin(pool, uid, me).await?,
            }
        }
        for (uid, parent) in &plan.edges {
            db::set_edge(pool, uid, me, parent.as_str()).await?;
        }
        let clients: Vec<(String, Duration)> = self
            .clients
            .lock()
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(n, c)| (n.clone(), c.rtt()))
            .collect();
        for (peer, rtt) in &clients {
            db::set_rtt(pool, me, peer, *rtt).await?;
        }
        let mut snap = Snapshot::default();
        for n in db::live_nodes(pool, t.dead_after).await? {
            snap.nodes.insert(
                NodeId::new(n.name),
                Member {
                    region: n.region,
                    link: n.link_addr,
                    http: n.http_addr,
                },
            );
        }
        for (uid, node, live) in db::origins(pool).await? {
            let node = NodeId::new(node);
            snap.origins
                .insert(uid, banyan_topology::member::Origin { node, live });
        }
        for (uid, child, parent) in db::edges(pool, t.dead_after * 2, plan.sweep).await? {
            snap.edges
                .entry(uid)
                .or_default()
                .insert(NodeId::new(child), NodeId::new(parent));
        }
        for (a, b, rtt) in db::rtts(pool, Duration::from_secs(10)).await? {
            let (a, b) = (NodeId::new(a), NodeId::new(b));
            snap.rtts.set(&a, &b, rtt);
            // The smallest RTT measured between two regions stands for
            // their pairs never measured.
            let ra = snap.nodes.get(&a).map(|m| m.region.clone());
            let rb = snap.nodes.get(&b).map(|m| m.region.clone());
            if let (Some(ra), Some(rb)) = (ra, rb) {
                if ra != rb {
                    let best = snap.region_rtt(&ra, &rb).map_or(rtt, |r| r.min(rtt));
                    snap.set_region_rtt(&ra, &rb, best);
                }
            }
        }
        Ok((snap, taken))
    }

    /// Keep one link to every live peer: RTTs for the planner, and joins
    /// and heals that need no handshake.
    fn keep_connections(&self) {
        let peers: Vec<(String, SocketAddr)> = {
            let core = self.core.lock();
            core.view()
                .members()
                .into_iter()
                .filter(|(n, _)| n.as_str() != self.cfg.node)
                .map(|(n, m)| (n.to_string(), m.link))
                .collect()
        };
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
}

/// The core's notes as log lines and metrics.
fn log_note(note: Note) {
    match note {
        Note::Joined {
            uid,
            parent,
            origin,
        } => tracing::info!(stream = %uid, %parent, %origin, "joined the stream's tree"),
        Note::Healed {
            uid,
            parent,
            origin,
            took,
        } => {
            metrics::histogram!("banyan_cluster_heal_seconds").record(took.as_secs_f64());
            tracing::info!(stream = %uid, %parent, %origin, ms = took.as_millis() as u64,
                "healed: pulling from a new parent");
        }
        Note::JoinFailed { uid, why } => {
            tracing::debug!(stream = %uid, %why, "join attempt failed; retrying")
        }
        Note::LinkLost { uid, parent, why } => {
            tracing::warn!(stream = %uid, %parent, %why, "link to the parent lost; re-joining")
        }
        Note::EndedUpstream { .. } => {}
        Note::OriginMoved { uid, origin } => tracing::info!(stream = %uid, %origin,
            "the origin moved or its broadcaster is away; re-joining"),
        Note::Leaving { uid } => tracing::info!(stream = %uid,
            "no viewers and no downstream nodes: leaving the tree"),
        Note::LocalPublisher { uid } => {
            tracing::info!(stream = %uid, "a broadcaster publishes here: no pull")
        }
        Note::OriginTaken { uid } => {
            tracing::info!(stream = %uid, "this node is the stream's origin")
        }
        Note::LeaseReleased { uid } => tracing::info!(stream = %uid, "origin lease released"),
    }
}
