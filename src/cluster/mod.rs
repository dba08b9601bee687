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
mod run;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use banyan_relay::link::{ClusterCa, ClusterTls};
use clap::Args;
use serde::Deserialize;

pub use run::Cluster;

/// Idle timeout of node links: a dead parent is noticed within it.
pub const LINK_IDLE: Duration = Duration::from_millis(400);
/// A membership round that takes longer than this is abandoned (a database
/// that stopped answering on an open connection) and counts as failed.
const TICK_LIMIT: Duration = Duration::from_secs(4);

/// The `[cluster]` table of the config file. Every key has a flag and an
/// env variable (`--cluster-node`, `BANYAN_CLUSTER_NODE`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    /// The node's name, unique in the cluster (letters, digits, `-`, `.`).
    pub node: Option<String>,
    /// A free-form region label; nodes of one region count as close when no
    /// RTT was measured between them.
    pub region: Option<String>,
    /// The QUIC link address (UDP); port 0 picks a free port.
    pub link: Option<SocketAddr>,
    /// The link address peers are told to use, when it differs from `link`
    /// (NAT, a port forward, a proxy); default: the bound link address.
    pub advertise: Option<SocketAddr>,
    /// Per-stream limit of downstream nodes.
    pub fanout: Option<usize>,
    /// The cluster CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// The cluster CA key (PEM): the node issues its own link certificate
    /// from it at start.
    pub ca_key: Option<PathBuf>,
}

/// Flags of the cluster (they win over the `[cluster]` table).
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Run as cluster node NAME (needs a postgres:// database URL)
    #[arg(long, env = "BANYAN_CLUSTER_NODE", value_name = "NAME")]
    pub cluster_node: Option<String>,
    /// Region label of this node [default: default]
    #[arg(long, env = "BANYAN_CLUSTER_REGION", value_name = "NAME")]
    pub cluster_region: Option<String>,
    /// QUIC link address (UDP) [default: 127.0.0.1:7700]
    #[arg(long, env = "BANYAN_CLUSTER_LINK", value_name = "ADDR")]
    pub cluster_link: Option<SocketAddr>,
    /// Link address announced to peers [default: the bound link address]
    #[arg(long, env = "BANYAN_CLUSTER_ADVERTISE", value_name = "ADDR")]
    pub cluster_advertise: Option<SocketAddr>,
    /// Per-stream limit of downstream nodes [default: 4]
    #[arg(long, env = "BANYAN_CLUSTER_FANOUT", value_name = "N")]
    pub cluster_fanout: Option<usize>,
    /// Cluster CA certificate (PEM)
    #[arg(long, env = "BANYAN_CLUSTER_CA_CERT", value_name = "FILE")]
    pub cluster_ca_cert: Option<PathBuf>,
    /// Cluster CA key (PEM), to issue this node's link certificate
    #[arg(long, env = "BANYAN_CLUSTER_CA_KEY", value_name = "FILE")]
    pub cluster_ca_key: Option<PathBuf>,
}

/// The resolved cluster settings of a node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node: String,
    pub region: String,
    pub link: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub fanout: usize,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

impl ClusterConfig {
    /// Merge flags and the `[cluster]` table. `None` when neither names a
    /// node (single-node mode).
    pub fn resolve(
        table: Option<&toml::Table>,
        args: &ClusterArgs,
        database_url: Option<&str>,
    ) -> anyhow::Result<Option<ClusterConfig>> {
        let file: FileCluster = match table {
            Some(t) => toml::Value::Table(t.clone())
                .try_into()
                .context("the [cluster] section")?,
            None => FileCluster::default(),
        };
        let Some(node) = args.cluster_node.clone().or(file.node) else {
            if table.is_some() {
                bail!("the [cluster] section needs `node = \"NAME\"`");
            }
            return Ok(None);
        };
        if rustls::pki_types::ServerName::try_from(node.as_str()).is_err() || node.len() > 63 {
            bail!("cluster node name {node:?} must be a DNS-like name");
        }
        if !database_url
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        {
            bail!("a cluster node needs a shared postgres:// database_url");
        }
        let ca_cert = args
            .cluster_ca_cert
            .clone()
            .or(file.ca_cert)
            .context("a cluster node needs ca_cert (--cluster-ca-cert)")?;
        let ca_key = args
            .cluster_ca_key
            .clone()
            .or(file.ca_key)
            .context("a cluster node needs ca_key (--cluster-ca-key)")?;
        Ok(Some(ClusterConfig {
            node,
            region: args
                .cluster_region
                .clone()
                .or(file.region)
                .unwrap_or_else(|| "default".into()),
            link: args
                .cluster_link
                .or(file.link)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700))),
            advertise: args.cluster_advertise.or(file.advertise),
            fanout: args.cluster_fanout.or(file.fanout).unwrap_or(4).max(1),
            ca_cert,
            ca_key,
        }))
    }

    /// Issue this node's link certificate from the cluster CA.
    fn tls(&self) -> anyhow::Result<ClusterTls> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let ca = ClusterCa {
            cert_pem: read(&self.ca_cert)?,
            key_pem: read(&self.ca_key)?,
        };
        Ok(ca.issue_node_cert(&self.node)?)
    }
}

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
    db::create_schema(store.pool()).await?;
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
