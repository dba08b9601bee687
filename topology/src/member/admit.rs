//! What a member answers a node that asks it for a stream: accept while it
//! serves fewer than `fanout` nodes, else send the joiner down to the child
//! [`Tree::decide`] picks (the shallowest free slot in the child's subtree,
//! then the lowest RTT to the joiner).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{ClusterNode, LocalState, Phase, View};
use crate::planner::RttEstimates;
#[cfg(doc)]
use crate::planner::Tree;
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
    /// [`Tree::decide`] (the child whose subtree has the shallowest free
    /// slot, then the lowest RTT to the joiner, then the smaller name), on
    /// each child's subtree as the stored edges show it. Joiners sent below
    /// a child a moment ago, not in the stored edges yet, count as placed
    /// there (so a burst of joiners is spread, not sent down one child).
    /// Every child counts for the fan-out; only members can be sent to.
    fn place(&mut self, uid: &str, joiner: &NodeId, kids: &[NodeId]) -> Admit {
        if kids.len() < self.fanout {
            return Admit::Accept;
        }
        let mut best: Option<(usize, Duration, NodeId, SocketAddr)> = None;
        for k in kids {
            let Some(link) = self.view.member(k).map(|m| m.link) else {
                continue;
            };
            let pending = self
                .redirected
                .get(uid)
                .into_iter()
                .flatten()
                .filter(|(to, sent, _)| {
                    to == k && sent != joiner && self.view.parent(uid, sent).is_none()
                })
                .count();
            let memo = self.profiles.entry(uid.to_string()).or_default();
            let levels = profile(&self.view, uid, &self.me, k, self.fanout, memo, 0);
            let depth = free_depth(&levels, self.fanout, pending);
            let rtt = self.view.rtt(joiner, k).unwrap_or(Duration::MAX);
            let score = (depth, rtt, k.clone(), link);
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
}

/// How many members the stored subtree of `node` has at each depth (`[1,
/// children, grandchildren, ...]`), at most `fanout` children per member,
/// never `me`. Memoized per view: the whole tree costs one walk.
fn profile(
    view: &View,
    uid: &str,
    me: &NodeId,
    node: &NodeId,
    fanout: usize,
    memo: &mut BTreeMap<NodeId, Vec<u32>>,
    depth: usize,
) -> Vec<u32> {
    if let Some(p) = memo.get(node) {
        return p.clone();
    }
    let mut out = vec![1u32];
    // A stored loop ends here.
    if depth < MAX_DEPTH {
        for c in view
            .children(uid, node)
            .into_iter()
            .filter(|c| c != me)
            .take(fanout)
        {
            let sub = profile(view, uid, me, &c, fanout, memo, depth + 1);
            if out.len() < sub.len() + 1 {
                out.resize(sub.len() + 1, 0);
            }
            for (d, n) in sub.iter().enumerate() {
                out[d + 1] += n;
            }
        }
    }
    memo.insert(node.clone(), out.clone());
    out
}

/// Deepest stored subtree walked.
const MAX_DEPTH: usize = 64;

/// Depth of the shallowest member that can take one more child, in a
/// subtree with `levels` members per depth, once `pending` more joiners
/// are placed greedily (each in the shallowest free slot).
fn free_depth(levels: &[u32], fanout: usize, mut pending: usize) -> usize {
    let mut counts: Vec<usize> = levels.iter().map(|n| *n as usize).collect();
    // Bounded: every level that cannot hold the pending joiners holds
    // `fanout` times more at the next, so this ends within log(pending)
    // levels past the subtree.
    for d in 0.. {
        let here = counts.get(d).copied().unwrap_or(0);
        let next = counts.get(d + 1).copied().unwrap_or(0);
        let slots = (here * fanout).saturating_sub(next);
        if pending < slots || here == 0 {
            return d;
        }
        pending -= slots;
        if counts.len() < d + 2 {
            counts.resize(d + 2, 0);
        }
        counts[d + 1] += slots;
    }
    unreachable!("the loop above returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_depth_fills_levels_in_order() {
        // A full root with two of four grandchildren: a free slot at 1.
        assert_eq!(free_depth(&[1, 2, 2], 2, 0), 1);
        assert_eq!(free_depth(&[1, 2, 2], 2, 1), 1);
        // Two more fill level 1; the next goes to level 2.
        assert_eq!(free_depth(&[1, 2, 2], 2, 2), 2);
        assert_eq!(free_depth(&[1], 3, 0), 0);
        assert_eq!(free_depth(&[1], 3, 3), 1);
        assert_eq!(free_depth(&[1], 3, 3 + 9), 2);
    }
}
