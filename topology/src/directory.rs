//! The membership model: what the tree logic reads about the cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crate::planner::{RttEstimates, RttTable};
use crate::NodeId;

/// One node of the cluster as the shared state knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The node's QUIC link address.
    pub link_addr: SocketAddr,
    /// Operator-chosen region label.
    pub region: String,
}

/// Where things are in the cluster: nodes, stream origins, RTTs.
///
/// Methods are synchronous reads of a snapshot: the shared-state layer
/// (PostgreSQL membership with heartbeats and origin leases) refreshes its
/// snapshot in the background and answers from memory, so the planner and
/// the link server never wait on a database.
pub trait Directory: Send + Sync {
    /// A live node by name.
    fn node(&self, id: &NodeId) -> Option<NodeInfo>;
    /// Every live node.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// The node holding the origin lease of stream `uid`, if any.
    fn origin(&self, uid: &str) -> Option<NodeId>;
    /// Measured round-trip time between two nodes.
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration>;
}

/// An in-memory [`Directory`] for tests and fixed setups.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    nodes: BTreeMap<NodeId, NodeInfo>,
    origins: HashMap<String, NodeId>,
    rtts: RttTable,
}

impl StaticDirectory {
    pub fn new() -> StaticDirectory {
        StaticDirectory::default()
    }

    pub fn add_node(&mut self, info: NodeInfo) {
        self.nodes.insert(info.id.clone(), info);
    }

    /// Drop a node and everything that refers to it.
    pub fn remove_node(&mut self, id: &NodeId) {
        self.nodes.remove(id);
        self.origins.retain(|_, o| o != id);
        self.rtts.remove_node(id);
    }

    pub fn set_origin(&mut self, uid: &str, node: NodeId) {
        self.origins.insert(uid.to_string(), node);
    }

    pub fn set_rtt(&mut self, a: &NodeId, b: &NodeId, rtt: Duration) {
        self.rtts.set(a, b, rtt);
    }
}

impl Directory for StaticDirectory {
    fn node(&self, id: &NodeId) -> Option<NodeInfo> {
        self.nodes.get(id).cloned()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.values().cloned().collect()
    }

    fn origin(&self, uid: &str) -> Option<NodeId> {
        self.origins.get(uid).cloned()
    }

    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration> {
        self.rtts.rtt(a, b)
    }
}

/// A directory serves as the planner's RTT source.
impl RttEstimates for dyn Directory + '_ {
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration> {
        Directory::rtt(self, a, b)
    }
}

impl RttEstimates for StaticDirectory {
    fn rtt(&self, a: &NodeId, b: &NodeId) -> Option<Duration> {
        self.rtts.rtt(a, b)
    }
}
