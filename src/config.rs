//! The settings of `banyan serve`: one set of flags, each with an env
//! variable `BANYAN_*` and a key of the same name (snake case) in the TOML
//! file given by `--config`. A flag or env variable wins over the file; the
//! file wins over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Deserialize;

/// Flags of `banyan serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; flags and env variables win over it.
    #[arg(long, env = "BANYAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded database, certificates and credentials
    /// [default: ./banyan-data]
    #[arg(long, env = "BANYAN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Plain RTMP listener [default: 127.0.0.1:1935]
    #[arg(
        long,
        env = "BANYAN_RTMP",
        value_name = "ADDR",
        conflicts_with = "no_rtmp"
    )]
    pub rtmp: Option<SocketAddr>,
    /// Do not listen for plain RTMP.
    #[arg(long, env = "BANYAN_NO_RTMP")]
    pub no_rtmp: bool,
    /// RTMPS listener [default: 127.0.0.1:1936]
    #[arg(long, env = "BANYAN_RTMPS", value_name = "ADDR")]
    pub rtmps: Option<SocketAddr>,
    /// SRT listener (UDP) [default: 127.0.0.1:8890]
    #[arg(long, env = "BANYAN_SRT", value_name = "ADDR")]
    pub srt: Option<SocketAddr>,
    /// HTTP listener: API, HLS, watch page [default: 127.0.0.1:8080]
    #[arg(long, env = "BANYAN_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Host name written into returned URLs [default: the bound address]
    #[arg(long, env = "BANYAN_PUBLIC_HOST", value_name = "NAME")]
    pub public_host: Option<String>,
    /// Seconds a stream waits for its publisher to come back [default: 10]
    #[arg(long, env = "BANYAN_RECONNECT_WINDOW", value_name = "SECONDS")]
    pub reconnect_window: Option<u64>,
    /// Allow plain RTMP on a non-loopback address.
    #[arg(long, env = "BANYAN_ALLOW_PLAIN_RTMP_ON_PUBLIC")]
    pub allow_plain_rtmp_on_public: bool,
    /// PEM certificate chain for RTMPS [default: a self-signed one in the data dir]
    #[arg(
        long,
        env = "BANYAN_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(
        long,
        env = "BANYAN_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Database URL (sqlite://... or postgres://...) [default: SQLite in the data dir]
    #[arg(long, env = "BANYAN_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Ingest domains allowed per account [default: 5]
    #[arg(long, env = "BANYAN_MAX_INGEST_DOMAINS", value_name = "N")]
    pub max_ingest_domains: Option<usize>,
    /// Seconds an RTMP(S) client has from connecting to a completed
    /// handshake, however it paces its bytes [default: 10]
    #[arg(long, env = "BANYAN_HANDSHAKE_TIMEOUT", value_name = "SECONDS")]
    pub handshake_timeout: Option<u64>,
    /// Seconds an RTMP(S) client has from its handshake to publish or play,
    /// and a publisher between two media messages [default: 30]
    #[arg(long, env = "BANYAN_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// Connections served at once per listener (RTMP, RTMPS, HTTP, SRT);
    /// more are refused [default: 10000]
    #[arg(long, env = "BANYAN_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds an HTTP client has to send a request's headers [default: 10]
    #[arg(long, env = "BANYAN_HTTP_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub http_header_timeout: Option<u64>,
    /// Seconds between analytics writes: the most viewing time a crash
    /// loses [default: 10]
    #[arg(long, env = "BANYAN_ANALYTICS_FLUSH", value_name = "SECONDS")]
    pub analytics_flush: Option<u64>,
    /// Failed publish/play attempts an address gets per window before it
    /// is refused for the rest of the window [default: 20]
    #[arg(long, env = "BANYAN_AUTH_FAIL_MAX", value_name = "N")]
    pub auth_fail_max: Option<u32>,
    /// Seconds of the failed-attempt window [default: 60]
    #[arg(long, env = "BANYAN_AUTH_FAIL_WINDOW", value_name = "SECONDS")]
    pub auth_fail_window: Option<u64>,
    /// Counted HLS viewer sessions per client address; more players from
    /// one address are served but not counted [default: 16]
    #[arg(long, env = "BANYAN_HLS_SESSIONS_PER_ADDRESS", value_name = "N")]
    pub hls_sessions_per_address: Option<usize>,
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
    #[command(flatten)]
    pub acme: crate::acme::AcmeArgs,
    /// Prometheus metrics listener (no token; keep it private). On the
    /// public HTTP port /metrics needs the admin token [default: 127.0.0.1:9090]
    #[arg(long, env = "BANYAN_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Per-stream series (ingest bitrate, fps): off, hashed (label `stream`
    /// is a keyed hash of the uid) or uid (label `stream` is the uid)
    /// [default: off]
    #[arg(long, env = "BANYAN_METRICS_PER_STREAM", value_name = "MODE")]
    pub metrics_per_stream: Option<PerStream>,
    /// Live inputs an account may have [default: 1000]
    #[arg(long, env = "BANYAN_MAX_INPUTS_PER_ACCOUNT", value_name = "N")]
    pub max_inputs_per_account: Option<usize>,
    /// Largest `meta` of a live input, serialized [default: 16384]
    #[arg(long, env = "BANYAN_MAX_META_BYTES", value_name = "BYTES")]
    pub max_meta_bytes: Option<usize>,
    /// API requests per second per token (REST and GraphQL); 0 turns the
    /// limit off [default: 50]
    #[arg(long, env = "BANYAN_API_RATE", value_name = "N")]
    pub api_rate: Option<u32>,
    /// API requests a token may make at once above --api-rate [default: 100]
    #[arg(long, env = "BANYAN_API_BURST", value_name = "N")]
    pub api_burst: Option<u32>,
    /// Proxies (CIDR blocks, comma-separated) whose word on the client's
    /// address is taken: `Forwarded`/`X-Forwarded-For` on HTTP, the PROXY
    /// protocol on RTMP(S) [default: none]
    #[arg(long, env = "BANYAN_TRUSTED_PROXIES", value_name = "CIDR,...")]
    pub trusted_proxies: Option<String>,
    /// Expect a PROXY protocol header (v1 or v2) on the RTMP and RTMPS
    /// listeners; only trusted proxies may connect there.
    #[arg(long, env = "BANYAN_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
    /// Seconds an HTTP client has to send a whole request body [default: 30]
    #[arg(long, env = "BANYAN_HTTP_BODY_TIMEOUT", value_name = "SECONDS")]
    pub http_body_timeout: Option<u64>,
    /// Seconds an HTTP response may make no write progress (a client that
    /// does not read) before the connection is closed [default: 30]
    #[arg(long, env = "BANYAN_HTTP_WRITE_TIMEOUT", value_name = "SECONDS")]
    pub http_write_timeout: Option<u64>,
    /// Connections at once per client address on each TCP listener (HTTP,
    /// HTTPS, RTMP, RTMPS), and SRT handshakes in progress per address
    /// [default: 64]
    #[arg(long, env = "BANYAN_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// HTTPS listener: the same API, HLS and watch page over TLS, with the
    /// RTMPS certificates [default: off]
    #[arg(long, env = "BANYAN_HTTPS", value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// Allow webhook URLs that resolve to loopback, private, link-local,
    /// unique-local or unspecified addresses (refused by default, against
    /// server-side request forgery).
    #[arg(long, env = "BANYAN_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Seconds a webhook event is retried before it is dropped
    /// [default: 3600]
    #[arg(long, env = "BANYAN_WEBHOOK_RETRY_FOR", value_name = "SECONDS")]
    pub webhook_retry_for: Option<u64>,
    /// PEM file of CA certificates trusted for https webhook targets, in
    /// addition to the system's bundle
    #[arg(long, env = "BANYAN_WEBHOOK_CA_FILE", value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Extra trusted roots (PEM) for rtmps:// outputs, on top of the
    /// system's bundle (/etc/ssl/certs/ca-certificates.crt) [default: none]
    #[arg(long, env = "BANYAN_OUTPUTS_CA", value_name = "FILE")]
    pub outputs_ca: Option<PathBuf>,
    /// Let outputs push to loopback, private and reserved addresses (off:
    /// an account could otherwise reach the operator's internal network)
    #[arg(long, env = "BANYAN_OUTPUTS_ALLOW_PRIVATE")]
    pub outputs_allow_private: bool,
    /// Log lines on stderr: plain text (colours only on a terminal) or one
    /// JSON object a line, for log shippers [default: plain]
    #[arg(long, env = "BANYAN_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Plain,
    /// One JSON object a line.
    Json,
}

/// Which per-stream metric series a node exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PerStream {
    /// None at all.
    #[default]
    Off,
    /// Labelled `stream` with a short keyed hash of the uid.
    Hashed,
    /// Labelled `stream` with the uid.
    Uid,
}

/// The TOML file: the same keys as the flags, in snake case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub rtmp: Option<SocketAddr>,
    #[serde(default)]
    pub no_rtmp: bool,
    pub rtmps: Option<SocketAddr>,
    pub srt: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub public_host: Option<String>,
    pub reconnect_window: Option<u64>,
    #[serde(default)]
    pub allow_plain_rtmp_on_public: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub database_url: Option<String>,
    pub max_ingest_domains: Option<usize>,
    pub handshake_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub max_connections: Option<usize>,
    pub http_header_timeout: Option<u64>,
    pub analytics_flush: Option<u64>,
    pub auth_fail_max: Option<u32>,
    pub auth_fail_window: Option<u64>,
    pub hls_sessions_per_address: Option<usize>,
    /// The cluster section (see `cluster::FileCluster`).
    pub cluster: Option<toml::Table>,
    pub metrics: Option<SocketAddr>,
    pub metrics_per_stream: Option<PerStream>,
    pub max_inputs_per_account: Option<usize>,
    pub max_meta_bytes: Option<usize>,
    pub api_rate: Option<u32>,
    pub api_burst: Option<u32>,
    pub trusted_proxies: Option<String>,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub http_body_timeout: Option<u64>,
    pub http_write_timeout: Option<u64>,
    pub max_connections_per_address: Option<usize>,
    pub https: Option<SocketAddr>,
    #[serde(default)]
    pub webhook_allow_private: bool,
    pub webhook_retry_for: Option<u64>,
    pub webhook_ca_file: Option<PathBuf>,
    pub outputs_ca: Option<PathBuf>,
    #[serde(default)]
    pub outputs_allow_private: bool,
    pub acme_directory: Option<String>,
    pub acme_email: Option<String>,
    pub acme_ca: Option<PathBuf>,
    #[serde(default)]
    pub acme: bool,
    pub acme_challenge: Option<String>,
    pub domain_verify_port: Option<u16>,
    pub max_domain_orders: Option<u32>,
    pub secret_key_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

/// The resolved settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read, if any.
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `None` when plain RTMP is off.
    pub rtmp: Option<SocketAddr>,
    pub rtmps: SocketAddr,
    pub srt: SocketAddr,
    pub http: SocketAddr,
    pub public_host: Option<String>,
    pub reconnect_window: Duration,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub database_url: Option<String>,
    pub max_ingest_domains: usize,
    /// Limits against slow, silent or too many clients.
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub http_header_timeout: Duration,
    /// Period of the analytics flusher.
    pub analytics_flush: Duration,
    /// Failed publish/play attempts allowed per address and window.
    pub auth_fail_max: u32,
    pub auth_fail_window: Duration,
    /// Counted HLS viewer sessions per client address.
    pub hls_sessions_per_address: usize,
    /// The cluster settings (`[cluster]` and the `--cluster-*` flags), when
    /// this node is a cluster member.
    pub cluster_cfg: Option<crate::cluster::ClusterConfig>,
    /// The metrics listener.
    pub metrics: SocketAddr,
    /// Per-stream metric series.
    pub metrics_per_stream: PerStream,
    /// Quotas per account and per API token.
    pub max_inputs_per_account: usize,
    pub max_meta_bytes: usize,
    pub api_rate: u32,
    pub api_burst: u32,
    /// Proxies whose forwarding headers / PROXY headers are believed.
    pub trusted_proxies: std::sync::Arc<banyan_ingest::net::TrustedProxies>,
    /// PROXY protocol on RTMP and RTMPS.
    pub proxy_protocol: bool,
    /// Deadline for a whole HTTP request body.
    pub http_body_timeout: Duration,
    /// Longest an HTTP connection's writes may make no progress.
    pub http_write_timeout: Duration,
    /// Connections per client address on each listener.
    pub max_connections_per_address: usize,
    /// The HTTPS listener, when on.
    pub https: Option<SocketAddr>,
    /// Webhook targets may be private addresses.
    pub webhook_allow_private: bool,
    /// How long a webhook event is retried.
    pub webhook_retry_for: Duration,
    /// Extra CA certificates for https webhook targets.
    pub webhook_ca_file: Option<PathBuf>,
    /// Extra trusted roots for rtmps:// outputs.
    pub outputs_ca: Option<PathBuf>,
    /// Outputs may push to loopback, private and reserved addresses.
    pub outputs_allow_private: bool,
    /// Custom domains and ACME.
    pub acme: crate::acme::AcmeSettings,
    /// How log lines are written.
    pub log_format: LogFormat,
}

fn addr(s: &str) -> SocketAddr {
    // Invariant: the literals below are valid socket addresses.
    s.parse().expect("default address")
}

impl Settings {
    /// Merge flags, the config file and defaults, and check the result.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let no_rtmp = args.no_rtmp || (file.no_rtmp && args.rtmp.is_none());
        let rtmp = if no_rtmp {
            None
        } else {
            Some(args.rtmp.or(file.rtmp).unwrap_or(addr("127.0.0.1:1935")))
        };
        let allow_public = args.allow_plain_rtmp_on_public || file.allow_plain_rtmp_on_public;
        if let Some(a) = rtmp {
            if !a.ip().is_loopback() && !allow_public {
                bail!(
                    "refusing plain RTMP on non-loopback address {a}: stream keys would travel \
                     in clear text; use RTMPS, --no-rtmp, or --allow-plain-rtmp-on-public"
                );
            }
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key must be given together"),
        };
        let database_url = args.database_url.or(file.database_url);
        let trusted_proxies = banyan_ingest::net::TrustedProxies::parse_list(
            args.trusted_proxies
                .as_deref()
                .or(file.trusted_proxies.as_deref())
                .unwrap_or(""),
        )
        .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
        let proxy_protocol = args.proxy_protocol || file.proxy_protocol;
        if proxy_protocol && trusted_proxies.is_empty() {
            bail!("proxy_protocol needs trusted_proxies: only they may send PROXY headers");
        }
        let cluster_cfg = crate::cluster::ClusterConfig::resolve(
            file.cluster.as_ref(),
            &args.cluster,
            database_url.as_deref(),
        )?;
        let public_host = args.public_host.clone().or(file.public_host.clone());
        let acme = crate::acme::AcmeSettings::resolve(
            args.acme.clone(),
            crate::acme::AcmeFile {
                acme_directory: file.acme_directory.clone(),
                acme_email: file.acme_email.clone(),
                acme_ca: file.acme_ca.clone(),
                acme: file.acme,
                acme_challenge: file.acme_challenge.clone(),
                domain_verify_port: file.domain_verify_port,
                max_domain_orders: file.max_domain_orders,
                secret_key_file: file.secret_key_file.clone(),
            },
            public_host.as_deref(),
        )?;
        Ok(Settings {
            acme,
            config: args.config,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./banyan-data")),
            rtmp,
            rtmps: args.rtmps.or(file.rtmps).unwrap_or(addr("127.0.0.1:1936")),
            srt: args.srt.or(file.srt).unwrap_or(addr("127.0.0.1:8890")),
            http: args.http.or(file.http).unwrap_or(addr("127.0.0.1:8080")),
            public_host,
            reconnect_window: Duration::from_secs(
                args.reconnect_window
                    .or(file.reconnect_window)
                    .unwrap_or(10),
            ),
            tls,
            database_url,
            max_ingest_domains: args
                .max_ingest_domains
                .or(file.max_ingest_domains)
                .unwrap_or(5),
            handshake_timeout: secs(args.handshake_timeout.or(file.handshake_timeout), 10),
            idle_timeout: secs(args.idle_timeout.or(file.idle_timeout), 30),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000)
                .max(1),
            http_header_timeout: secs(args.http_header_timeout.or(file.http_header_timeout), 10),
            analytics_flush: Duration::from_secs(
                args.analytics_flush
                    .or(file.analytics_flush)
                    .unwrap_or(10)
                    .clamp(1, 3600),
            ),
            auth_fail_max: args
                .auth_fail_max
                .or(file.auth_fail_max)
                .unwrap_or(20)
                .max(1),
            auth_fail_window: Duration::from_secs(
                args.auth_fail_window
                    .or(file.auth_fail_window)
                    .unwrap_or(60)
                    .clamp(1, 86_400),
            ),
            hls_sessions_per_address: args
                .hls_sessions_per_address
                .or(file.hls_sessions_per_address)
                .unwrap_or(16)
                .max(1),
            cluster_cfg,
            metrics: args
                .metrics
                .or(file.metrics)
                .unwrap_or(addr("127.0.0.1:9090")),
            metrics_per_stream: args
                .metrics_per_stream
                .or(file.metrics_per_stream)
                .unwrap_or_default(),
            max_inputs_per_account: args
                .max_inputs_per_account
                .or(file.max_inputs_per_account)
                .unwrap_or(crate::quota::DEFAULT_MAX_INPUTS),
            max_meta_bytes: args
                .max_meta_bytes
                .or(file.max_meta_bytes)
                .unwrap_or(crate::quota::DEFAULT_MAX_META_BYTES)
                .min(crate::api::MAX_BODY),
            api_rate: args
                .api_rate
                .or(file.api_rate)
                .unwrap_or(crate::quota::DEFAULT_API_RATE),
            api_burst: args
                .api_burst
                .or(file.api_burst)
                .unwrap_or(crate::quota::DEFAULT_API_BURST)
                .max(1),
            trusted_proxies: std::sync::Arc::new(trusted_proxies),
            proxy_protocol,
            http_body_timeout: secs(args.http_body_timeout.or(file.http_body_timeout), 30),
            http_write_timeout: secs(args.http_write_timeout.or(file.http_write_timeout), 30),
            max_connections_per_address: args
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(64)
                .max(1),
            https: args.https.or(file.https),
            webhook_allow_private: args.webhook_allow_private || file.webhook_allow_private,
            webhook_retry_for: Duration::from_secs(
                args.webhook_retry_for
                    .or(file.webhook_retry_for)
                    .unwrap_or(3600)
                    .clamp(1, 7 * 86_400),
            ),
            webhook_ca_file: args.webhook_ca_file.or(file.webhook_ca_file),
            outputs_ca: args.outputs_ca.or(file.outputs_ca),
            outputs_allow_private: args.outputs_allow_private || file.outputs_allow_private,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// A timeout in seconds: the default when unset, at least one second.
fn secs(v: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(v.unwrap_or(default).clamp(1, 86_400))
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests;
