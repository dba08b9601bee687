//! The cluster: membership, stream origins and per-stream trees over the
//! node links.
//!
//! The protocol is [`banyan_topology::member::ClusterNode`], a sans-IO state
//! machine (membership view, origin leases, demand, joins, redirects,
//! heals, leaving, admission) that the simulator runs too. This module is
//! its driver: it feeds it events and carries out its actions.
//!
//! * Membership (`run.rs`): every heartbeat the node scans its local
//!   streams, asks the core for the round's writes (its heartbeat in
//!   `cluster_nodes`, the origin leases of streams whose broadcaster
//!   pushes here, the edges of the streams it pulls, the RTTs of its
//!   links), runs them on the database within [`TICK_LIMIT`], reads a
//!   snapshot (nodes, origins, edges, RTTs) and hands it to the core. The
//!   link server and the joins read the core's view, never the database.
//! * Demand: every `demand_poll` the local streams (state, viewers, hub
//!   subscribers, downstream nodes) go to the core, which starts joins,
//!   leaves, and follows moved origins.
//! * Joining: the core asks a node for a stream; the driver asks over the
//!   link and reports the answer (accepted: the pull publishes into the
//!   local hub, so RTMP, SRT and HLS egress serve it unchanged; a
//!   redirect; a failure).
//! * Admission (what this node answers a joiner): the core accepts while
//!   the node has fewer than `fanout` downstream nodes for the stream, else
//!   redirects to the child [`banyan_topology::Tree::decide`] picks.
//! * Healing: a pull whose link is lost asks the lost parent's nearest live
//!   ancestor, then the origin; the local hub's reconnect window keeps
//!   viewers attached and rebases timestamps.
//! * Database outages: links, pulls and trees live outside the database,
//!   so streams that flow keep flowing; the core's view is frozen (no joins
//!   to new origins, no deaths declared) and, once the database is back,
//!   keeps what it lost until the node's writes have succeeded for
//!   `settle`.

mod admin;
mod db;
#[cfg(test)]
mod in_process;
mod run;

pub use crate::config::{ClusterConfig, ClusterOptions};
pub use run::Cluster;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use banyan_relay::link::ClusterCa;

/// What the cluster driver uses: the local streams (hub, viewers, which
/// inputs exist), the shared store, the token check of its admin
/// endpoints.
pub struct Context {
    pub store: crate::store::Store,
    pub hub: Arc<banyan_relay::Hub>,
    pub views: Arc<banyan_relay::views::Views>,
    pub inputs: Arc<crate::inputs::Inputs>,
    pub auth: Arc<crate::auth::Auth>,
    /// This node's HTTP listener, announced to the others.
    pub http: SocketAddr,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Idle timeout of node links: a dead parent is noticed within it.
pub const LINK_IDLE: Duration = Duration::from_millis(400);
/// A membership round that takes longer than this is abandoned (a database
/// that stopped answering on an open connection) and counts as failed.
const TICK_LIMIT: Duration = Duration::from_secs(4);

/// `banyan cluster-ca --out DIR`: write a new cluster CA (`ca.pem`,
/// `ca.key`, mode 0600).
pub fn write_ca(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca = ClusterCa::generate()?;
    let cert = out.join("ca.pem");
    let key = out.join("ca.key");
    if key.exists() {
        bail!("{} exists; not overwriting a cluster CA", key.display());
    }
    crate::tls::write_private(&cert, ca.cert_pem.as_bytes())?;
    crate::tls::write_private(&key, ca.key_pem.as_bytes())?;
    println!("{}\n{}", cert.display(), key.display());
    Ok(())
}

/// Use the cluster's one default account: the first node creates it, the
/// others add their own API and admin tokens to it (tokens are stored
/// hashed, so each node's credentials.json carries its own tokens for the
/// same account).
pub async fn shared_account(
    store: &crate::store::Store,
    candidate: &str,
) -> anyhow::Result<String> {
    let id = db::claim_meta(store.pool(), "default_account", candidate).await?;
    if id == candidate {
        return Ok(id);
    }
    // The winner creates the account right after its claim.
    for _ in 0..100 {
        if store.account_exists(&id).await? {
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the cluster's default account {id} never appeared in the store")
}
