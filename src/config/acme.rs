//! The options of custom domains and ACME: flags, their `BANYAN_*`
//! variables and the same keys in the config file (one struct for all
//! three; see `config/merge.rs`).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use serde::Deserialize;

use super::merge::clap_default;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Custom domains and ACME.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Custom domains and ACME")]
pub struct AcmeOptions {
    /// ACME directory URL certificates are ordered from (Let's Encrypt
    /// production; staging is
    /// https://acme-staging-v02.api.letsencrypt.org/directory)
    #[arg(
        long,
        env = "BANYAN_ACME_DIRECTORY",
        value_name = "URL",
        default_value = LETS_ENCRYPT
    )]
    pub acme_directory: String,
    /// Contact e-mail of the node's ACME account [default: none]
    #[arg(long, env = "BANYAN_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// PEM file of CA certificates trusted for the ACME server's own HTTPS
    /// (a private ACME server), on top of the system's bundle
    #[arg(long, env = "BANYAN_ACME_CA", value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,
    /// Order and renew the certificate of --public-host by ACME and serve
    /// it as the node's own RTMPS/HTTPS certificate
    #[arg(long, env = "BANYAN_ACME")]
    pub acme: bool,
    /// The ACME challenge answered: tls-alpn-01 (on the RTMPS listener,
    /// which the CA reaches on port 443) or http-01 (on the HTTP listener,
    /// reached on port 80)
    #[arg(
        long,
        env = "BANYAN_ACME_CHALLENGE",
        value_name = "TYPE",
        value_enum,
        default_value_t = Challenge::TlsAlpn01
    )]
    pub acme_challenge: Challenge,
    /// Port the node fetches an uploaded certificate's proof token from
    /// (http://NAME:PORT/.well-known/banyan-domain/TOKEN); 0 means this
    /// node's own HTTP listener port
    #[arg(
        long,
        env = "BANYAN_DOMAIN_VERIFY_PORT",
        value_name = "PORT",
        default_value_t = 80
    )]
    pub domain_verify_port: u16,
    /// Domain additions (ACME orders and upload checks) per account per
    /// hour
    #[arg(
        long,
        env = "BANYAN_MAX_DOMAIN_ORDERS",
        value_name = "N",
        default_value_t = 10
    )]
    pub max_domain_orders: u32,
    /// File whose contents key the encryption of domain private keys in the
    /// database (AES-256-GCM under SHA-256 of the file); every node of a
    /// cluster needs the same file [default: keys stored unencrypted]
    #[arg(long, env = "BANYAN_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
}

clap_default!(AcmeOptions);

/// Which challenge the node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum Challenge {
    /// On the RTMPS listener (the CA connects to port 443).
    #[value(name = "tls-alpn-01")]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// On the HTTP listener (the CA connects to port 80).
    #[value(name = "http-01")]
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeOptions {
    /// Check the merged options; keep the counts at least 1.
    pub fn check(mut self, public_host: Option<&str>) -> anyhow::Result<AcmeOptions> {
        if self.acme && public_host.is_none() {
            bail!("acme needs public_host: the name whose certificate the node orders");
        }
        if !self.acme_directory.starts_with("https://") {
            bail!(
                "acme_directory {:?} must be an https:// URL",
                self.acme_directory
            );
        }
        self.max_domain_orders = self.max_domain_orders.max(1);
        Ok(self)
    }
}
