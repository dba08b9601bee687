//! What a member believes about the cluster: the last snapshot of the shared
//! state, plus what it knows better than a late database (peers it holds a
//! link to, origin leases seen a moment ago, and right after an outage the
//! snapshot from before it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::planner::{RttEstimates, RttTable};
use crate::NodeId;

/// One member as the shared state shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub region: String,
    /// Its link address.
    pub link: SocketAddr,
    /// Its HTTP address (for the admin view only).
    pub http: String,
}

/// The origin lease of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub node: NodeId,
    /// False while the broadcaster is away (the reconnect window).
    pub live: bool,
}

/// One read of the shared state: live members, unexpired origin leases,
/// fresh tree edges and measured RTTs. Drivers build it (from PostgreSQL,
/// or from the simulator's store) and share it behind an [`Arc`].
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<NodeId, Member>,
    pub origins: BTreeMap<String, Origin>,
    /// Per stream, child to parent.
    pub edges: BTreeMap<String, BTreeMap<NodeId, NodeId>>,
    pub rtts: RttTable,
    /// RTT between regions, for pairs never measured (keyed with the
    /// smaller name first).
    pub region_rtts: BTreeMap<(String, String), Duration>,
    /// Per stream, parent to children (built on first use).
    children: OnceLock<BTreeMap<String, BTreeMap<NodeId, Vec<NodeId>>>>,
}

impl Snapshot {
    fn children_index(&self) -> &BTreeMap<String, BTreeMap<NodeId, Vec<NodeId>>> {
        self.children.get_or_init(|| {
            let mut idx: BTreeMap<String, BTreeMap<NodeId, Vec<NodeId>>> = BTreeMap::new();
            for (uid, edges) in &self.edges {
                let per = idx.entry(uid.clone()).or_default();
                for (c, p) in edges {
                    per.entry(p.clone()).or_default().push(c.clone());
                }
            }
            idx
        })
    }

    /// The RTT between two regions, when known.
    pub fn region_rtt(&self, a: &str, b: &str) -> Option<Duration> {
        self.region_rtts.get(&region_key(a, b)).copied()
    }

    /// Record the RTT between two regions (either order).
    pub fn set_region_rtt(&mut self, a: &str, b: &str, rtt: Duration) {
        self.region_rtts.insert(region_key(a, b), rtt);
    }
}

fn region_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The member's belief: the database's last word, with what it lost.
#[derive(Debug, Clone, Default)]
pub struct View {
    db: Arc<Snapshot>,
    /// Linked peers missing from the database.
    kept_nodes: BTreeMap<NodeId, Member>,
    /// Origin leases missing from the database, seen recently.
    kept_origins: BTreeMap<String, Origin>,
    /// Right after an outage: the snapshot from before it, for what the
    /// database does not show yet.
    fallback: Option<Arc<Snapshot>>,
}

impl View {
    /// The next view from a fresh snapshot. `linked`: peers this node
    /// holds an open link to (alive whatever their heartbeat's age);
    /// `recent`: streams whose origin lease was read within the grace;
    /// `settled`: this node's writes have succeeded for long enough that
    /// the database's staleness is believed.
    pub fn next(
        &self,
        db: Arc<Snapshot>,
        linked: &BTreeSet<NodeId>,
        recent: &dyn Fn(&str) -> bool,
        settled: bool,
    ) -> View {
        let mut kept_nodes = BTreeMap::new();
        for n in linked {
            if db.nodes.contains_key(n) {
                continue;
            }
            if let Some(m) = self.member(n) {
                kept_nodes.insert(n.clone(), m.clone());
            }
        }
        let fallback = if settled {
            None
        } else {
            Some(self.fallback.clone().unwrap_or_else(|| self.db.clone()))
        };
        let mut next = View {
            db,
            kept_nodes,
            kept_origins: BTreeMap::new(),
            fallback,
        };
        let mut kept_origins = BTreeMap::new();
        for (uid, o) in self.origins() {
            if next.db.origins.contains_key(uid) {
                continue;
            }
            if recent(uid) && next.member(&o.node).is_some() {
                kept_origins.insert(uid.clone(), o.clone());
            }
        }
        next.kept_origins = kept_origins;
        next
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.db
    }

    pub fn member(&self, n: &NodeId) -> Option<&Member> {
        self.db
            .nodes
            .get(n)
            .or_else(|| self.kept_nodes.get(n))
            .or_else(|| self.fallback.as_ref().and_then(|f| f.nodes.get(n)))
    }

    /// Every member, in name order.
    pub fn members(&self) -> Vec<(&NodeId, &Member)> {
        let mut all: BTreeMap<&NodeId, &Member> = self.db.nodes.iter().collect();
        for (n, m) in &self.kept_nodes {
            all.entry(n).or_insert(m);
        }
        if let Some(f) = &self.fallback {
            for (n, m) in &f.nodes {
                all.entry(n).or_insert(m);
            }
        }
        all.into_iter().collect()
    }

    pub fn origin(&self, uid: &str) -> Option<&Origin> {
        self.db
            .origins
            .get(uid)
            .or_else(|| self.kept_origins.get(uid))
            .or_else(|| self.fallback.as_ref().and_then(|f| f.origins.get(uid)))
    }

    fn origins(&self) -> Vec<(&String, &Origin)> {
        let mut all: BTreeMap<&String, &Origin> = self.db.origins.iter().collect();
        for (u, o) in &self.kept_origins {
            all.entry(u).or_insert(o);
        }
        if let Some(f) = &self.fallback {
            for (u, o) in &f.origins {
                all.entry(u).or_insert(o);
            }
        }
        all.into_iter().collect()
    }

    /// The stored parent of `child` in the tree of `uid`, both members.
    pub fn parent(&self, uid: &str, child: &NodeId) -> Option<&NodeId> {
        let stored = self
            .db
            .edges
            .get(uid)
            .and_then(|e| e.get(child))
            .or_else(|| {
                self.fallback
                    .as_ref()
                    .and_then(|f| f.edges.get(uid))
                    .and_then(|e| e.get(child))
            })?;
        (self.member(child).is_some() && self.member(stored).is_some()).then_some(stored)
    }

    /// The stored children of `parent` in the tree of `uid` (members whose
    /// stored parent is `parent`).
    pub fn children(&self, uid: &str, parent: &NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        let snaps = std::iter::once(&self.db).chain(self.fallback.as_ref());
        for s in snaps {
            if let Some(kids) = s.children_index().get(uid).and_then(|m| m.get(parent)) {
                for k in kids {
                    if self.parent(uid, k) == Some(parent) && !out.contains(k) {
                        out.push(k.clone());
                    }
                }
            }
        }
        out
    }

    /// Every stored `(child, parent)` edge of `uid` between members.
    pub fn edges(&self, uid: &str) -> Vec<(NodeId, NodeId)> {
        let mut children: BTreeSet<&NodeId> = BTreeSet::new();
        for s in std::iter::once(&self.db).chain(self.fallback.as_ref()) {
            if let Some(e) = s.edges.get(uid) {
                children.extend(e.keys());
            }
        }
        children
            .into_iter()
            .filter_map(|c| self.parent(uid, c).map(|p| (c.clone(), p.clone())))
            .collect()
    }
}

/// RTTs for the planner: measured when known, else 1 ms within a region,
/// else the regions' RTT when known.
impl RttEstimates for View {
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration> {
        if let Some(r) = self.db.rtts.rtt(a, b) {
            return Some(r);
        }
        let ra = &self.member(a)?.region;
        let rb = &self.member(b)?.region;
        if ra == rb {
            return Some(Duration::from_millis(1));
        }
        self.db.region_rtts.get(&region_key(ra, rb)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(port: u16) -> Member {
        Member {
            region: "r".into(),
            link: SocketAddr::from(([127, 0, 0, 1], port)),
            http: String::new(),
        }
    }

    fn n(s: &str) -> NodeId {
        NodeId::from(s)
    }

    fn origin(node: &str) -> Origin {
        Origin {
            node: n(node),
            live: true,
        }
    }

    /// A peer with an open link stays a member whatever its heartbeat's
    /// age; an origin lease that went missing a moment ago stays while its
    /// node does; an old one, or one of a node gone, does not.
    #[test]
    fn links_and_recent_leases_outlive_late_writes() {
        let mut old = Snapshot::default();
        for (x, p) in [("a", 1), ("b", 2), ("c", 3)] {
            old.nodes.insert(n(x), m(p));
        }
        old.origins.insert("u".into(), origin("a"));
        old.origins.insert("v".into(), origin("c"));
        old.origins.insert("w".into(), origin("a"));
        let view = View::default().next(Arc::new(old), &BTreeSet::new(), &|_| true, true);
        let linked: BTreeSet<NodeId> = [n("a")].into();
        let recent = |u: &str| u != "w";

        let mut fresh = Snapshot::default();
        fresh.nodes.insert(n("b"), m(2));
        let v = view.next(Arc::new(fresh), &linked, &recent, true);
        let names: Vec<&NodeId> = v.members().into_iter().map(|(x, _)| x).collect();
        assert_eq!(names, [&n("a"), &n("b")], "c has no link and no heartbeat");
        assert_eq!(v.origin("u"), Some(&origin("a")));
        assert!(v.origin("v").is_none(), "its node is gone");
        assert!(v.origin("w").is_none(), "missing for too long");

        // What the database shows wins.
        let mut fresh = Snapshot::default();
        fresh.origins.insert(
            "u".into(),
            Origin {
                node: n("b"),
                live: false,
            },
        );
        let v = view.next(Arc::new(fresh), &linked, &recent, true);
        assert_eq!(
            v.origin("u").map(|o| (&o.node, o.live)),
            Some((&n("b"), false))
        );
    }

    /// Right after a database outage the first read shows only this node:
    /// the peers, the origin and the edges of the last snapshot are kept;
    /// what the database does show wins.
    #[test]
    fn an_unsettled_snapshot_keeps_what_the_database_lost() {
        let mut old = Snapshot::default();
        for (x, p) in [("a", 1), ("b", 2), ("c", 3)] {
            old.nodes.insert(n(x), m(p));
        }
        old.origins.insert("u".into(), origin("a"));
        old.origins.insert("v".into(), origin("c"));
        old.edges
            .insert("u".into(), [(n("b"), n("a")), (n("c"), n("a"))].into());
        let view = View::default().next(Arc::new(old), &BTreeSet::new(), &|_| true, true);

        let mut fresh = Snapshot::default();
        fresh.nodes.insert(n("b"), m(2));
        fresh.nodes.insert(n("c"), m(30));
        fresh.origins.insert("v".into(), origin("b"));
        fresh.edges.insert("u".into(), [(n("c"), n("b"))].into());
        let v = view.next(Arc::new(fresh), &BTreeSet::new(), &|_| false, false);

        let names: Vec<&NodeId> = v.members().into_iter().map(|(x, _)| x).collect();
        assert_eq!(names, [&n("a"), &n("b"), &n("c")]);
        assert_eq!(
            v.member(&n("c")).unwrap().link.port(),
            30,
            "the fresh row wins"
        );
        assert_eq!(v.origin("u"), Some(&origin("a")));
        assert_eq!(v.origin("v"), Some(&origin("b")));
        assert_eq!(v.edges("u"), [(n("b"), n("a")), (n("c"), n("b"))]);
        assert_eq!(v.children("u", &n("a")), [n("b")]);

        // Settled: the old snapshot no longer counts.
        let v = v.next(v.snapshot().clone(), &BTreeSet::new(), &|_| false, true);
        assert!(v.member(&n("a")).is_none());
        assert_eq!(v.edges("u"), [(n("c"), n("b"))]);
    }
}
