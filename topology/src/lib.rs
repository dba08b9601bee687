//! The distribution trees of a Banyan cluster, and the cluster member that
//! builds them.
//!
//! Every live stream has its own tree of nodes: the root is the stream's
//! origin (the node its broadcaster pushes to), every other member pulls the
//! stream from its parent over a node link. This crate is pure code with no
//! IO and no clock:
//!
//! * [`member::ClusterNode`]: one cluster member as a sans-IO state machine,
//!   `handle(now, event) -> actions` (membership view, origin leases,
//!   demand, joins, redirects, heals, leaving) and `admit` (what it answers
//!   a joiner). The production node drives it over QUIC links and
//!   PostgreSQL; the simulator drives it in virtual time.
//! * [`Tree`]: the placement rule. [`Tree::decide`] is the step a member
//!   takes when asked by a joiner (accept, or redirect to the child whose
//!   subtree has the shallowest free slot, then the nearest); admission
//!   applies it through [`Tree::free_depth`]. [`Tree::join`] is the walk a
//!   joiner makes under a perfect view, the reference the property tests
//!   and the simulator's test compare against; [`Tree::from_edges`] and
//!   [`Tree::check`] verify a tree.
//! * [`sim`]: a deterministic simulator (seeded RNG, virtual time) of a
//!   whole cluster running [`member::ClusterNode`].
//!
//! Invariants (checked by [`Tree::check`] and the property tests): the
//! parent links form a tree rooted at the origin (no loops, every member
//! reaches the origin), no node has more than `fanout` children, and greedy
//! placement fills the tree level by level so its height stays within
//! `ceil(log_fanout(n)) + 1`.

pub mod member;
mod planner;
pub mod sim;

pub use planner::{Decision, Placement, RttEstimates, RttTable, Tree};

use std::fmt;

/// The name of a node, unique in the cluster (it is also the DNS name in the
/// node's cluster certificate).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(name: impl Into<String>) -> NodeId {
        NodeId(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> NodeId {
        NodeId(s.to_string())
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> NodeId {
        NodeId(s)
    }
}

/// Errors of the planner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The origin cannot join its own tree.
    #[error("node {0} is the origin of the tree")]
    IsOrigin(NodeId),
    /// An edge list given to [`Tree::from_edges`] does not form a valid tree
    /// (a loop, a parent outside the tree, a duplicate child, or a node over
    /// the fan-out limit).
    #[error("invalid tree: {0}")]
    Invalid(String),
}
