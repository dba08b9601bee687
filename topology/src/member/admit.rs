//! What a member answers a node that asks it for a stream: accept while it
//! serves fewer than `fanout` nodes, else send the joiner down to the child
//! [`Tree::decide`] picks (the shallowest free slot in the child's subtree,
//! then the lowest RTT to the joiner).

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::{ClusterNode, LocalState, Phase};
use crate::planner::{Decision, RttEstimates, Tree};
use crate::NodeId;

/// The answer to a joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Accept,
    /// The stream is not here.
    NotHere,
    /// Ask this child instead.
    Redirect { node: NodeId, link: SocketAddr },
    Refuse(String),
}

impl ClusterNode {
    /// Answer `peer`, which asks for `uid`. `children`: the nodes this one
    /// serves `uid` to now; `state`: the stream in the local hub.
    pub fn admit(
        &mut self,
        now: Duration,
        uid: &str,
        peer: &NodeId,
        children: &[NodeId],
        state: LocalState,
    ) -> Admit {
        if state == LocalState::Idle {
            return Admit::NotHere;
        }
        if let Some(s) = self.streams.get(uid) {
            if matches!(&s.phase, Phase::Pulling { parent, .. } if parent == peer) {
                return Admit::Refuse("the asking node is this node's parent".into());
            }
        }
        // Accepted children whose pull is not served yet count against the
        // fan-out, so two nodes asking at once cannot both take the last
        // place.
        let hold = self.timing.admit_hold;
        let recent = self.admitted.entry(uid.to_string()).or_default();
        recent.retain(|(p, at)| {
            now.saturating_sub(*at) < hold && !children.contains(p) && p != peer
        });
        let kids: Vec<NodeId> = children
            .iter()
            .filter(|c| *c != peer)
            .chain(recent.iter().map(|(p, _)| p))
            .cloned()
            .collect();
        let answer = self.place(uid, peer, &kids);
        if answer == Admit::Accept {
            if let Some(r) = self.admitted.get_mut(uid) {
                r.push((peer.clone(), now));
            }
        }
        self.admitted.retain(|_, v| !v.is_empty());
        answer
    }

    /// Where a joiner goes, given the children this node serves or has
    /// just accepted (`kids`, the joiner not among them).
    fn place(&self, uid: &str, joiner: &NodeId, kids: &[NodeId]) -> Admit {
        if kids.len() < self.fanout {
            return Admit::Accept;
        }
        let me = &self.me;
        let view = &self.view;
        // This node's subtree: its children now, and below them the stored
        // edges (never the joiner's own subtree).
        let mut edges: Vec<(NodeId, NodeId)> = Vec::new();
        let mut inside: BTreeSet<NodeId> = BTreeSet::new();
        let mut queue: VecDeque<NodeId> = VecDeque::new();
        for k in kids {
            if view.member(k).is_some() && inside.insert(k.clone()) {
                edges.push((k.clone(), me.clone()));
                queue.push_back(k.clone());
            }
        }
        // Bounded: every member enters the queue once.
        while let Some(x) = queue.pop_front() {
            for c in view.children(uid, &x) {
                if c != *me && c != *joiner && inside.insert(c.clone()) {
                    edges.push((c.clone(), x.clone()));
                    queue.push_back(c);
                }
            }
        }
        let first_level: Vec<(NodeId, NodeId)> =
            edges.iter().filter(|(_, p)| p == me).cloned().collect();
        let tree = Tree::from_edges(me.clone(), self.fanout, edges)
            .or_else(|_| Tree::from_edges(me.clone(), usize::MAX, first_level));
        let choice = match tree {
            Ok(t) if t.children(me).count() >= self.fanout => match t.decide(me, joiner, view) {
                Decision::Redirect(c) => Some(c),
                Decision::Accept => None,
            },
            Ok(t) => {
                // Over the limit only in a race: pick the closest child.
                t.children(me)
                    .min_by_key(|c| (view.rtt(joiner, c).unwrap_or(Duration::MAX), (*c).clone()))
                    .cloned()
            }
            Err(_) => None,
        };
        match choice.and_then(|c| view.member(&c).map(|m| (c.clone(), m.link))) {
            Some((node, link)) => Admit::Redirect { node, link },
            // No usable child (all dead): take the joiner rather than fail it.
            None => Admit::Accept,
        }
    }
}
