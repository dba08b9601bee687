//! The shared database as the simulator models it: the cluster's tables,
//! read as [`Snapshot`]s with the production queries' semantics
//! (heartbeats younger than `dead_after`, unexpired leases, edges younger
//! than twice `dead_after`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::member::{Member, Origin, OriginOp, Snapshot, SyncPlan};
use crate::NodeId;

#[derive(Debug, Default)]
pub(crate) struct Store {
    heartbeat: BTreeMap<u32, Duration>,
    /// uid -> (node, live, lease until)
    origins: BTreeMap<String, (u32, bool, Duration)>,
    /// uid -> child -> (parent, updated)
    edges: BTreeMap<String, BTreeMap<u32, (u32, Duration)>>,
    cache: Option<(Duration, Arc<Snapshot>)>,
    /// Rows read by all nodes.
    pub rows_read: u64,
}

impl Store {
    /// Run a round's writes for `node`; per origin lease asked for,
    /// whether `node` holds it.
    pub fn write(
        &mut self,
        now: Duration,
        node: u32,
        plan: &SyncPlan,
        lease: Duration,
        fresh: Duration,
    ) -> Vec<(String, bool)> {
        self.heartbeat.insert(node, now);
        let mut taken = Vec::new();
        for (uid, op) in &plan.origins {
            match op {
                OriginOp::Take { live } => {
                    let row = self.origins.get(uid).copied();
                    let take = match row {
                        None => true,
                        Some((holder, was_live, until)) => {
                            holder == node || until < now || (!was_live && *live)
                        }
                    };
                    if take {
                        self.origins.insert(uid.clone(), (node, *live, now + lease));
                    }
                    let holder = self.origins.get(uid).map(|r| r.0);
                    taken.push((uid.clone(), holder == Some(node)));
                }
                OriginOp::Release => {
                    if self.origins.get(uid).is_some_and(|r| r.0 == node) {
                        self.origins.remove(uid);
                    }
                }
            }
        }
        for (uid, parent) in &plan.edges {
            self.set_edge(now, uid, node, parent);
        }
        if plan.sweep {
            let cutoff = now.saturating_sub(fresh);
            for e in self.edges.values_mut() {
                e.retain(|_, (_, at)| *at >= cutoff);
            }
        }
        taken
    }

    pub fn set_edge(&mut self, now: Duration, uid: &str, child: u32, parent: &NodeId) {
        if let Some(p) = super::index(parent) {
            self.edges
                .entry(uid.to_string())
                .or_default()
                .insert(child, (p, now));
        }
    }

    pub fn remove_edge(&mut self, uid: &str, child: u32) {
        if let Some(e) = self.edges.get_mut(uid) {
            e.remove(&child);
        }
    }

    /// A snapshot as of `now`, rebuilt at most every `every` (readers
    /// share it).
    pub fn read(
        &mut self,
        now: Duration,
        every: Duration,
        dead_after: Duration,
        regions: &[String],
        region_of: &dyn Fn(u32) -> usize,
        region_rtts: &BTreeMap<(String, String), Duration>,
    ) -> Arc<Snapshot> {
        if let Some((at, s)) = &self.cache {
            if now.saturating_sub(*at) < every {
                let s = s.clone();
                self.rows_read += rows(&s);
                return s;
            }
        }
        let mut s = Snapshot::default();
        let alive_after = now.saturating_sub(dead_after);
        let link = SocketAddr::from(([0, 0, 0, 0], 0));
        for (n, at) in &self.heartbeat {
            if *at > alive_after {
                s.nodes.insert(
                    super::name(*n),
                    Member {
                        region: regions[region_of(*n)].clone(),
                        link,
                        http: String::new(),
                    },
                );
            }
        }
        for (uid, (n, live, until)) in &self.origins {
            if *until > now {
                s.origins.insert(
                    uid.clone(),
                    Origin {
                        node: super::name(*n),
                        live: *live,
                    },
                );
            }
        }
        let cutoff = now.saturating_sub(dead_after * 2);
        for (uid, e) in &self.edges {
            let out = s.edges.entry(uid.clone()).or_default();
            for (c, (p, at)) in e {
                if *at >= cutoff {
                    out.insert(super::name(*c), super::name(*p));
                }
            }
        }
        s.region_rtts = region_rtts.clone();
        let s = Arc::new(s);
        self.rows_read += rows(&s);
        self.cache = Some((now, s.clone()));
        s
    }
}

fn rows(s: &Snapshot) -> u64 {
    (s.nodes.len() + s.origins.len() + s.edges.values().map(|e| e.len()).sum::<usize>()) as u64
}
