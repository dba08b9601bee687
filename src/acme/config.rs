//! The settings of custom domains and ACME: flags, their `BANYAN_*`
//! variables and the same keys in the config file.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Flags of custom domains and ACME.
#[derive(Debug, Clone, Default, Args)]
pub struct AcmeArgs {
    /// ACME directory URL certificates are ordered from [default: Let's
    /// Encrypt production; staging is
    /// https://acme-staging-v02.api.letsencrypt.org/directory]
    #[arg(long, env = "BANYAN_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
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
    /// reached on port 80) [default: tls-alpn-01]
    #[arg(long, env = "BANYAN_ACME_CHALLENGE", value_name = "TYPE")]
    pub acme_challenge: Option<String>,
    /// Port the node fetches an uploaded certificate's proof token from
    /// (http://NAME:PORT/.well-known/banyan-domain/TOKEN); 0 means this
    /// node's own HTTP listener port [default: 80]
    #[arg(long, env = "BANYAN_DOMAIN_VERIFY_PORT", value_name = "PORT")]
    pub domain_verify_port: Option<u16>,
    /// Domain additions (ACME orders and upload checks) per account per
    /// hour [default: 10]
    #[arg(long, env = "BANYAN_MAX_DOMAIN_ORDERS", value_name = "N")]
    pub max_domain_orders: Option<u32>,
    /// File whose contents key the encryption of domain private keys in the
    /// database (AES-256-GCM under SHA-256 of the file); every node of a
    /// cluster needs the same file [default: keys stored unencrypted]
    #[arg(long, env = "BANYAN_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// The same keys in the config file.
#[derive(Debug, Default, Clone)]
pub struct AcmeFile {
    pub acme_directory: Option<String>,
    pub acme_email: Option<String>,
    pub acme_ca: Option<PathBuf>,
    pub acme: bool,
    pub acme_challenge: Option<String>,
    pub domain_verify_port: Option<u16>,
    pub max_domain_orders: Option<u32>,
    pub secret_key_file: Option<PathBuf>,
}

/// Which challenge the node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    TlsAlpn01,
    Http01,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: Option<String>,
    pub ca: Option<PathBuf>,
    /// Order the public host's own certificate.
    pub own_host: bool,
    pub challenge: Challenge,
    /// 0: the node's own HTTP port.
    pub verify_port: u16,
    pub max_orders_per_hour: u32,
    pub secret_key_file: Option<PathBuf>,
}

impl AcmeSettings {
    pub fn resolve(
        args: AcmeArgs,
        file: AcmeFile,
        public_host: Option<&str>,
    ) -> anyhow::Result<AcmeSettings> {
        let own_host = args.acme || file.acme;
        if own_host && public_host.is_none() {
            bail!("acme needs public_host: the name whose certificate the node orders");
        }
        let challenge = match args
            .acme_challenge
            .or(file.acme_challenge)
            .as_deref()
            .unwrap_or("tls-alpn-01")
        {
            "tls-alpn-01" => Challenge::TlsAlpn01,
            "http-01" => Challenge::Http01,
            other => bail!("acme_challenge {other:?}: use tls-alpn-01 or http-01"),
        };
        let directory = args
            .acme_directory
            .or(file.acme_directory)
            .unwrap_or_else(|| LETS_ENCRYPT.to_string());
        if !directory.starts_with("https://") {
            bail!("acme_directory {directory:?} must be an https:// URL");
        }
        Ok(AcmeSettings {
            directory,
            email: args.acme_email.or(file.acme_email),
            ca: args.acme_ca.or(file.acme_ca),
            own_host,
            challenge,
            verify_port: args
                .domain_verify_port
                .or(file.domain_verify_port)
                .unwrap_or(80),
            max_orders_per_hour: args
                .max_domain_orders
                .or(file.max_domain_orders)
                .unwrap_or(10)
                .max(1),
            secret_key_file: args.secret_key_file.or(file.secret_key_file),
        })
    }
}
