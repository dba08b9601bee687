//! What a member answers a node that asks it for a stream: accept while it
//! serves fewer than `fanout` nodes, else send the joiner down to the child
//! [`Tree::decide`] picks (the shallowest free slot in the child's subtree,
//! then the lowest RTT to the joiner).

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::{ClusterNode, LocalState, Phase};
use crate::planner::{RttEstimates, Tree};
use crate::NodeId;

/// The answer to a joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Accept,
    /// The stream is not here.
    NotHere,
    /// Ask this child instead.
    Redirect {
        node: NodeId,
        link: SocketAddr,
    },
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
        recent
            .retain(|(p, at)| now.saturating_sub(*at) < hold && !children.contains(p) && p != peer);
        let kids: Vec<NodeId> = children
            .iter()
            .filter(|c| *c != peer)
            .chain(recent.iter().map(|(p, _)| p))
            .cloned()
            .collect();
        let sent = self.redirected.entry(uid.to_string()).or_default();
        sent.retain(|(_, p, at)| now.saturating_sub(*at) < hold && p != peer);
        let answer = self.place(uid, peer, &kids);
        match &answer {
            Admit::Accept => {
                if let Some(r) = self.admitted.get_mut(uid) {
                    r.push((peer.clone(), now));
                }
            }
            Admit::Redirect { node, .. } => {
                if let Some(r) = self.redirected.get_mut(uid) {
                    r.push((node.clone(), peer.clone(), now));
                }
            }
            _ => {}
        }
        self.admitted.retain(|_, v| !v.is_empty());
        self.redirected.retain(|_, v| !v.is_empty());
        answer
    }

    /// Where a joiner goes, given the children this node serves or has
    /// just accepted (`kids`, the joiner not among them): the rule of
    /// [`Tree::decide`], on each child's subtree as the stored edges show
    /// it (the shallowest free slot, then the lowest RTT to the joiner).
    /// Every child counts for the fan-out; only members can be sent to.
    fn place(&self, uid: &str, joiner: &NodeId, kids: &[NodeId]) -> Admit {
        if kids.len() < self.fanout {
            return Admit::Accept;
        }
        let view = &self.view;
        let mut best: Option<(usize, Duration, NodeId, SocketAddr)> = None;
        for k in kids {
            let Some(m) = view.member(k) else {
                continue;
            };
            let mut tree = self.subtree(uid, k, joiner);
            // Joiners sent below `k` a moment ago, not in the stored edges
            // yet, go where they will be placed (so a burst of joiners is
            // spread, not sent down the same child).
            for (to, sent, _) in self.redirected.get(uid).into_iter().flatten() {
                if to == k && sent != joiner && !tree.contains(sent) {
                    let _ = tree.join(sent, view);
                }
            }
            let depth = tree.free_depth(k);
            let rtt = view.rtt(joiner, k).unwrap_or(Duration::MAX);
            let score = (depth, rtt, k.clone(), m.link);
            if best
                .as_ref()
                .is_none_or(|b| (score.0, score.1, &score.2) < (b.0, b.1, &b.2))
            {
                best = Some(score);
            }
        }
        match best {
            Some((_, _, node, link)) => Admit::Redirect { node, link },
            // Full, and no child is in the view yet (a view older than the
            // children): the joiner asks again in a moment, by when the
            // view knows them or a dead child's link has closed.
            None => Admit::Refuse("full, and no child is known yet".into()),
        }
    }

    /// The subtree of `root` from the stored edges, never this node nor the
    /// joiner (so never the joiner's own subtree), within the fan-out.
    fn subtree(&self, uid: &str, root: &NodeId, joiner: &NodeId) -> Tree {
        let mut edges: Vec<(NodeId, NodeId)> = Vec::new();
        let mut inside: BTreeSet<NodeId> = [root.clone()].into();
        let mut queue: VecDeque<NodeId> = [root.clone()].into();
        // Bounded: every member enters the queue once.
        while let Some(x) = queue.pop_front() {
            let mut taken = 0;
            for c in self.view.children(uid, &x) {
                if taken < self.fanout && c != self.me && c != *joiner && inside.insert(c.clone()) {
                    taken += 1;
                    edges.push((c.clone(), x.clone()));
                    queue.push_back(c);
                }
            }
        }
        Tree::from_edges(root.clone(), self.fanout, edges)
            .unwrap_or_else(|_| Tree::new(root.clone(), self.fanout))
    }
}
