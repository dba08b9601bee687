//! The distribution trees of a Banyan cluster.
//!
//! Every live stream has its own tree of nodes: the root is the stream's
//! origin (the node its broadcaster pushes to), every other member pulls the
//! stream from its parent over a node link. This crate is pure code with no
//! IO, no clock and no randomness:
//!
//! * [`Tree`]: the planner. [`Tree::join`] places a node that wants the
//!   stream, [`Tree::leave`] and [`Tree::node_failed`] remove one and re-place
//!   its orphaned children. [`Tree::decide`] is the single step a member
//!   takes when asked by a joiner (accept, or redirect to one of its
//!   children), which is what the link server answers on the wire.
//! * [`Directory`]: what the planner's callers need to know about the
//!   cluster: which nodes exist (name, link address, region), which node is
//!   the origin of a stream, and measured round-trip times between nodes.
//!   The shared-state layer (PostgreSQL heartbeats and origin leases)
//!   implements it over a snapshot it refreshes; [`StaticDirectory`] is an
//!   in-memory implementation for tests and fixed setups.
//!
//! Invariants the planner keeps (checked by [`Tree::check`] and the property
//! tests): the parent links form a tree rooted at the origin (no loops, every
//! member reaches the origin), no node has more than `fanout` children, and
//! greedy placement fills the tree level by level so its height stays within
//! `ceil(log_fanout(n)) + 1`.

mod directory;
pub mod member;
mod planner;
pub mod sim;

pub use directory::{Directory, NodeInfo, StaticDirectory};
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
    /// The operation names the origin, which cannot join, leave or be
    /// re-placed: when the origin goes, the tree is rebuilt under a new one.
    #[error("node {0} is the origin of the tree")]
    IsOrigin(NodeId),
    /// The origin failed; the stream's tree is gone.
    #[error("the origin {0} failed")]
    OriginLost(NodeId),
    /// The node is not a member of the tree.
    #[error("node {0} is not in the tree")]
    NotMember(NodeId),
    /// An edge list given to [`Tree::from_edges`] does not form a valid tree
    /// (a loop, a parent outside the tree, a duplicate child, or a node over
    /// the fan-out limit).
    #[error("invalid tree: {0}")]
    Invalid(String),
}
