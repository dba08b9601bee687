//! The tree planner.
//!
//! Placement rule (greedy, one step per asked node, see [`Tree::decide`]):
//! a node with fewer than `fanout` children accepts the joiner. A full node
//! redirects it to one of its children: among the children whose subtree has
//! a free slot at the shallowest depth, the one closest to the joiner by
//! measured RTT (unknown RTTs count as farthest; ties go to the smaller
//! name). Preferring the shallowest free slot fills the tree level by level,
//! which keeps the height logarithmic in the number of nodes; RTT decides
//! between the equally shallow choices, which is where it matters (the
//! children of a full node).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::{NodeId, PlanError};

/// Measured round-trip times between nodes.
pub trait RttEstimates {
    /// The round-trip time between `a` and `b`, if known.
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration>;
}

/// A symmetric table of RTT estimates.
#[derive(Debug, Clone, Default)]
pub struct RttTable {
    map: HashMap<(NodeId, NodeId), Duration>,
}

impl RttTable {
    pub fn new() -> RttTable {
        RttTable::default()
    }

    fn key(a: &NodeId, b: &NodeId) -> (NodeId, NodeId) {
        if a <= b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        }
    }

    /// Record the RTT between `a` and `b` (either direction).
    pub fn set(&mut self, a: &NodeId, b: &NodeId, rtt: Duration) {
        self.map.insert(Self::key(a, b), rtt);
    }

    /// Forget everything known about `node`.
    pub fn remove_node(&mut self, node: &NodeId) {
        self.map.retain(|(a, b), _| a != node && b != node);
    }
}

impl RttEstimates for RttTable {
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration> {
        if a == b {
            return Some(Duration::ZERO);
        }
        self.map.get(&Self::key(a, b)).copied()
    }
}

/// What a member answers a joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The member takes the joiner as a child.
    Accept,
    /// The member is full: ask this child instead.
    Redirect(NodeId),
}

/// Where a joiner ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The joiner's parent.
    pub parent: NodeId,
    /// The nodes asked in turn, the origin first and `parent` last.
    pub path: Vec<NodeId>,
}

/// The distribution tree of one stream.
#[derive(Debug, Clone)]
pub struct Tree {
    origin: NodeId,
    fanout: usize,
    /// Every member but the origin, to its parent.
    parent: BTreeMap<NodeId, NodeId>,
    /// Every member (origin included) to its children.
    children: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Tree {
    /// A tree holding only `origin`. `fanout` is the per-node limit of child
    /// nodes; values below 1 count as 1.
    pub fn new(origin: NodeId, fanout: usize) -> Tree {
        let mut children = BTreeMap::new();
        children.insert(origin.clone(), BTreeSet::new());
        Tree {
            origin,
            fanout: fanout.max(1),
            parent: BTreeMap::new(),
            children,
        }
    }

    /// Rebuild a tree from stored `(child, parent)` edges, checking every
    /// invariant.
    pub fn from_edges(
        origin: NodeId,
        fanout: usize,
        edges: impl IntoIterator<Item = (NodeId, NodeId)>,
    ) -> Result<Tree, PlanError> {
        let mut tree = Tree::new(origin, fanout);
        for (child, parent) in edges {
            if child == tree.origin || tree.parent.contains_key(&child) {
                return Err(PlanError::Invalid(format!("{child} appears twice")));
            }
            tree.children.entry(child.clone()).or_default();
            tree.children
                .entry(parent.clone())
                .or_default()
                .insert(child.clone());
            tree.parent.insert(child, parent);
        }
        tree.check().map_err(PlanError::Invalid)?;
        Ok(tree)
    }

    /// The `(child, parent)` edges, for storing the tree.
    pub fn edges(&self) -> impl Iterator<Item = (&NodeId, &NodeId)> {
        self.parent.iter()
    }

    pub fn origin(&self) -> &NodeId {
        &self.origin
    }

    pub fn fanout(&self) -> usize {
        self.fanout
    }

    /// Number of members, the origin included.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Never true: the origin is always a member.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, node: &NodeId) -> bool {
        self.children.contains_key(node)
    }

    /// The members, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.children.keys()
    }

    pub fn parent(&self, node: &NodeId) -> Option<&NodeId> {
        self.parent.get(node)
    }

    /// The children of `node` (none for a non-member).
    pub fn children(&self, node: &NodeId) -> impl Iterator<Item = &NodeId> {
        self.children.get(node).into_iter().flatten()
    }

    /// Hops from the origin to `node` (0 for the origin).
    pub fn depth(&self, node: &NodeId) -> Option<usize> {
        if !self.contains(node) {
            return None;
        }
        let mut depth = 0;
        let mut at = node;
        while let Some(p) = self.parent.get(at) {
            depth += 1;
            at = p;
            if depth > self.len() {
                return None;
            }
        }
        (at == &self.origin).then_some(depth)
    }

    /// The largest depth of any member.
    pub fn height(&self) -> usize {
        let mut height = 0;
        let mut level = vec![&self.origin];
        while !level.is_empty() {
            let next: Vec<&NodeId> = level.iter().flat_map(|n| self.children(n)).collect();
            if next.is_empty() {
                break;
            }
            height += 1;
            level = next;
        }
        height
    }

    /// Depth, relative to `node`, of the shallowest member of `node`'s
    /// subtree that can take one more child.
    fn free_depth(&self, node: &NodeId) -> usize {
        let mut depth = 0;
        let mut level = vec![node];
        // Bounded: every level holds distinct members.
        while !level.is_empty() {
            if level.iter().any(|n| self.children(n).count() < self.fanout) {
                return depth;
            }
            level = level.iter().flat_map(|n| self.children(n)).collect();
            depth += 1;
        }
        // Unreachable for a consistent tree: leaves always have room.
        depth
    }

    /// What member `at` answers `joiner` (see the module docs).
    pub fn decide(&self, at: &NodeId, joiner: &NodeId, rtts: &dyn RttEstimates) -> Decision {
        let kids: Vec<&NodeId> = self.children(at).filter(|c| *c != joiner).collect();
        if kids.len() < self.fanout {
            return Decision::Accept;
        }
        let scored: Vec<(usize, Duration, &NodeId)> = kids
            .into_iter()
            .map(|c| {
                let rtt = rtts.rtt(joiner, c).unwrap_or(Duration::MAX);
                (self.free_depth(c), rtt, c)
            })
            .collect();
        // `kids` is non-empty because fanout >= 1.
        let best = scored.iter().min().map(|(_, _, c)| (*c).clone());
        match best {
            Some(c) => Decision::Redirect(c),
            None => Decision::Accept,
        }
    }

    /// Place `joiner`: ask the origin, follow redirects, attach. A member
    /// already in the tree keeps its place.
    pub fn join(
        &mut self,
        joiner: &NodeId,
        rtts: &dyn RttEstimates,
    ) -> Result<Placement, PlanError> {
        if joiner == &self.origin {
            return Err(PlanError::IsOrigin(joiner.clone()));
        }
        if let Some(p) = self.parent.get(joiner) {
            let mut path = vec![p.clone()];
            while let Some(pp) = self.parent.get(path.last().unwrap_or(&self.origin)) {
                path.push(pp.clone());
            }
            path.reverse();
            return Ok(Placement {
                parent: p.clone(),
                path,
            });
        }
        let parent = self.place(joiner, rtts)?;
        self.children.entry(joiner.clone()).or_default();
        self.attach(joiner, &parent.parent);
        Ok(parent)
    }

    /// Walk from the origin to the node that accepts `joiner`.
    fn place(&self, joiner: &NodeId, rtts: &dyn RttEstimates) -> Result<Placement, PlanError> {
        let mut at = self.origin.clone();
        let mut path = vec![at.clone()];
        // Each redirect goes one level down, so the walk ends within len() steps.
        for _ in 0..=self.len() {
            match self.decide(&at, joiner, rtts) {
                Decision::Accept => {
                    return Ok(Placement { parent: at, path });
                }
                Decision::Redirect(next) => {
                    at = next;
                    path.push(at.clone());
                }
            }
        }
        Err(PlanError::Invalid("redirect walk did not end".into()))
    }

    fn attach(&mut self, node: &NodeId, parent: &NodeId) {
        self.children
            .entry(parent.clone())
            .or_default()
            .insert(node.clone());
        self.parent.insert(node.clone(), parent.clone());
    }

    /// Check every invariant: parent and child maps agree, every member
    /// reaches the origin without a loop, fan-out limits hold.
    pub fn check(&self) -> Result<(), String> {
        if self.parent.contains_key(&self.origin) {
            return Err(format!("the origin {} has a parent", self.origin));
        }
        for (node, kids) in &self.children {
            if kids.len() > self.fanout {
                return Err(format!(
                    "{node} has {} children, over the limit {}",
                    kids.len(),
                    self.fanout
                ));
            }
            for k in kids {
                if self.parent.get(k) != Some(node) {
                    return Err(format!("{k} is a child of {node} but its parent differs"));
                }
            }
        }
        for (child, parent) in &self.parent {
            if !self.children.get(parent).is_some_and(|k| k.contains(child)) {
                return Err(format!("{child} names {parent} as parent, unknown there"));
            }
        }
        for node in self.children.keys() {
            if self.depth(node).is_none() {
                return Err(format!("{node} does not reach the origin"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::from(s)
    }

    #[test]
    fn origin_takes_joiners_until_full_then_redirects_by_rtt() {
        let mut t = Tree::new(n("o"), 2);
        let mut rtts = RttTable::new();
        rtts.set(&n("c"), &n("a"), Duration::from_millis(80));
        rtts.set(&n("c"), &n("b"), Duration::from_millis(5));
        assert_eq!(t.join(&n("a"), &rtts).unwrap().parent, n("o"));
        assert_eq!(t.join(&n("b"), &rtts).unwrap().parent, n("o"));
        let p = t.join(&n("c"), &rtts).unwrap();
        assert_eq!(p.parent, n("b"));
        assert_eq!(p.path, vec![n("o"), n("b")]);
        // Joining again keeps the place.
        assert_eq!(t.join(&n("c"), &rtts).unwrap(), p);
        assert_eq!(
            t.decide(&n("o"), &n("d"), &rtts),
            Decision::Redirect(n("a"))
        );
        t.check().unwrap();
    }

    #[test]
    fn edges_round_trip_and_bad_edges_are_refused() {
        let mut t = Tree::new(n("o"), 2);
        for x in ["a", "b", "c", "d", "e"] {
            t.join(&n(x), &RttTable::new()).unwrap();
        }
        let edges: Vec<(NodeId, NodeId)> = t.edges().map(|(c, p)| (c.clone(), p.clone())).collect();
        let u = Tree::from_edges(n("o"), 2, edges).unwrap();
        assert_eq!(u.edges().count(), 5);
        let looped = vec![(n("a"), n("b")), (n("b"), n("a"))];
        assert!(Tree::from_edges(n("o"), 2, looped).is_err());
        let wide = vec![(n("a"), n("o")), (n("b"), n("o")), (n("c"), n("o"))];
        assert!(Tree::from_edges(n("o"), 2, wide).is_err());
    }
}
