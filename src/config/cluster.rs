//! The cluster's options: the `--cluster-*` flags, their `BANYAN_CLUSTER_*`
//! env variables and the `[cluster]` table of the config file (keys without
//! the `cluster_` prefix), one struct for all three (see
//! `config/merge.rs`), and the checked [`ClusterConfig`] of a member node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use banyan_relay::link::{ClusterCa, ClusterTls};
use clap::Args;
use serde::Deserialize;

use super::merge::clap_default;

/// The `[cluster]` table and the `--cluster-*` flags.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterOptions {
    /// Run as cluster node NAME (needs a postgres:// database URL)
    #[arg(
        id = "cluster_node",
        long = "cluster-node",
        env = "BANYAN_CLUSTER_NODE",
        value_name = "NAME"
    )]
    pub node: Option<String>,
    /// Region label of this node; nodes of one region count as close when
    /// no RTT was measured between them
    #[arg(
        id = "cluster_region",
        long = "cluster-region",
        env = "BANYAN_CLUSTER_REGION",
        value_name = "NAME",
        default_value = "default"
    )]
    pub region: String,
    /// QUIC link address (UDP); port 0 picks a free port
    #[arg(
        id = "cluster_link",
        long = "cluster-link",
        env = "BANYAN_CLUSTER_LINK",
        value_name = "ADDR",
        default_value = "127.0.0.1:7700"
    )]
    pub link: SocketAddr,
    /// Link address announced to peers, when it differs from the link
    /// address (NAT, a port forward) [default: the bound link address]
    #[arg(
        id = "cluster_advertise",
        long = "cluster-advertise",
        env = "BANYAN_CLUSTER_ADVERTISE",
        value_name = "ADDR"
    )]
    pub advertise: Option<SocketAddr>,
    /// Per-stream limit of downstream nodes
    #[arg(
        id = "cluster_fanout",
        long = "cluster-fanout",
        env = "BANYAN_CLUSTER_FANOUT",
        value_name = "N",
        default_value_t = 4
    )]
    pub fanout: usize,
    /// Cluster CA certificate (PEM)
    #[arg(
        id = "cluster_ca_cert",
        long = "cluster-ca-cert",
        env = "BANYAN_CLUSTER_CA_CERT",
        value_name = "FILE"
    )]
    pub ca_cert: Option<PathBuf>,
    /// Cluster CA key (PEM), to issue this node's link certificate
    #[arg(
        id = "cluster_ca_key",
        long = "cluster-ca-key",
        env = "BANYAN_CLUSTER_CA_KEY",
        value_name = "FILE"
    )]
    pub ca_key: Option<PathBuf>,
    /// Whether the config file has a `[cluster]` table.
    #[arg(skip)]
    #[serde(skip)]
    pub in_file: bool,
}

clap_default!(ClusterOptions);

/// The checked cluster settings of a member node.
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
    /// Check the merged options. `None` when no node is named (single-node
    /// mode).
    pub fn resolve(
        o: ClusterOptions,
        database_url: Option<&str>,
    ) -> anyhow::Result<Option<ClusterConfig>> {
        let Some(node) = o.node else {
            if o.in_file {
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
        Ok(Some(ClusterConfig {
            node,
            region: o.region,
            link: o.link,
            advertise: o.advertise,
            fanout: o.fanout.max(1),
            ca_cert: o
                .ca_cert
                .context("a cluster node needs ca_cert (--cluster-ca-cert)")?,
            ca_key: o
                .ca_key
                .context("a cluster node needs ca_key (--cluster-ca-key)")?,
        }))
    }

    /// Issue this node's link certificate from the cluster CA.
    pub fn tls(&self) -> anyhow::Result<ClusterTls> {
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
