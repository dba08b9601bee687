//! The options of `banyan serve` by subsystem. Each struct is both the
//! flags (with their `BANYAN_*` env variables and defaults) and the keys of
//! the config file (snake case, at the top level; a key of another
//! subsystem is left to that one, and `Options::from_toml` refuses the keys
//! of none); see `merge.rs`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::merge::{clap_default, de_secs, parse_secs};

/// Where the node keeps its state and how it names itself.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Node")]
pub struct General {
    /// Directory of the embedded database, certificates and credentials
    #[arg(
        long,
        env = "BANYAN_DATA_DIR",
        value_name = "DIR",
        default_value = "./banyan-data"
    )]
    pub data_dir: PathBuf,
    /// Database URL (sqlite://... or postgres://...) [default: SQLite in the data dir]
    #[arg(long, env = "BANYAN_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Host name written into returned URLs [default: the bound address]
    #[arg(long, env = "BANYAN_PUBLIC_HOST", value_name = "NAME")]
    pub public_host: Option<String>,
    /// Seconds a stream waits for its publisher to come back
    #[arg(
        long,
        env = "BANYAN_RECONNECT_WINDOW",
        value_name = "SECONDS",
        value_parser = parse_secs,
        default_value = "10"
    )]
    #[serde(deserialize_with = "de_secs")]
    pub reconnect_window: Duration,
}

/// The listeners and who may speak for a client's address.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Listeners")]
pub struct Listeners {
    /// Plain RTMP listener
    #[arg(
        long,
        env = "BANYAN_RTMP",
        value_name = "ADDR",
        conflicts_with = "no_rtmp",
        default_value = "127.0.0.1:1935"
    )]
    pub rtmp: SocketAddr,
    /// Do not listen for plain RTMP.
    #[arg(long, env = "BANYAN_NO_RTMP")]
    pub no_rtmp: bool,
    /// Allow plain RTMP on a non-loopback address.
    #[arg(long, env = "BANYAN_ALLOW_PLAIN_RTMP_ON_PUBLIC")]
    pub allow_plain_rtmp_on_public: bool,
    /// RTMPS listener
    #[arg(
        long,
        env = "BANYAN_RTMPS",
        value_name = "ADDR",
        default_value = "127.0.0.1:1936"
    )]
    pub rtmps: SocketAddr,
    /// SRT listener (UDP)
    #[arg(
        long,
        env = "BANYAN_SRT",
        value_name = "ADDR",
        default_value = "127.0.0.1:8890"
    )]
    pub srt: SocketAddr,
    /// WebRTC (WHEP playback) listener: one UDP port for every session
    #[arg(
        long,
        env = "BANYAN_WEBRTC",
        value_name = "ADDR",
        default_value = "127.0.0.1:8443"
    )]
    pub webrtc: SocketAddr,
    /// The address WebRTC candidates announce (behind NAT, the public one)
    /// [default: the --webrtc address, 127.0.0.1 when it is unspecified]
    #[arg(long, env = "BANYAN_WEBRTC_PUBLIC_IP", value_name = "IP")]
    pub webrtc_public_ip: Option<IpAddr>,
    /// HTTP listener: API, HLS, watch page
    #[arg(
        long,
        env = "BANYAN_HTTP",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http: SocketAddr,
    /// HTTPS listener: the same API, HLS and watch page over TLS, with the
    /// RTMPS certificates [default: off]
    #[arg(long, env = "BANYAN_HTTPS", value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// Prometheus metrics listener (no token; keep it private). On the
    /// public HTTP port /metrics needs the admin token
    #[arg(
        long,
        env = "BANYAN_METRICS",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub metrics: SocketAddr,
    /// Proxies (CIDR blocks, comma-separated) whose word on the client's
    /// address is taken: `Forwarded`/`X-Forwarded-For` on HTTP, the PROXY
    /// protocol on RTMP(S) [default: none]
    #[arg(long, env = "BANYAN_TRUSTED_PROXIES", value_name = "CIDR,...")]
    pub trusted_proxies: Option<String>,
    /// Expect a PROXY protocol header (v1 or v2) on the RTMP and RTMPS
    /// listeners; only trusted proxies may connect there.
    #[arg(long, env = "BANYAN_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
}

impl Listeners {
    /// The plain RTMP listener, unless it is off.
    pub fn plain_rtmp(&self) -> Option<SocketAddr> {
        (!self.no_rtmp).then_some(self.rtmp)
    }
}

/// The node's own certificate.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "TLS")]
pub struct Tls {
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
}

impl Tls {
    /// The configured certificate and key (checked to come together).
    pub fn pair(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.tls_cert.clone()?, self.tls_key.clone()?))
    }
}

/// Limits against slow, silent or too many clients.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Seconds an RTMP(S) client has from connecting to a completed
    /// handshake, however it paces its bytes
    #[arg(long, env = "BANYAN_HANDSHAKE_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "10")]
    #[serde(deserialize_with = "de_secs")]
    pub handshake_timeout: Duration,
    /// Seconds an RTMP(S) client has from its handshake to publish or play,
    /// and a publisher between two media messages
    #[arg(long, env = "BANYAN_IDLE_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "30")]
    #[serde(deserialize_with = "de_secs")]
    pub idle_timeout: Duration,
    /// Connections served at once per listener (RTMP, RTMPS, HTTP, SRT);
    /// more are refused
    #[arg(
        long,
        env = "BANYAN_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Connections at once per client address on each TCP listener (HTTP,
    /// HTTPS, RTMP, RTMPS), and SRT handshakes in progress per address
    #[arg(
        long,
        env = "BANYAN_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N",
        default_value_t = 64
    )]
    pub max_connections_per_address: usize,
    /// WebRTC sessions (WHEP viewers and WHIP publishers) at once, in all;
    /// per client address, --max-connections-per-address
    #[arg(
        long,
        env = "BANYAN_MAX_WEBRTC_SESSIONS",
        value_name = "N",
        default_value_t = 1_000
    )]
    pub max_webrtc_sessions: usize,
    /// Seconds an HTTP client has to send a request's headers
    #[arg(long, env = "BANYAN_HTTP_HEADER_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "10")]
    #[serde(deserialize_with = "de_secs")]
    pub http_header_timeout: Duration,
    /// Seconds an HTTP client has to send a whole request body
    #[arg(long, env = "BANYAN_HTTP_BODY_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "30")]
    #[serde(deserialize_with = "de_secs")]
    pub http_body_timeout: Duration,
    /// Seconds an HTTP response may make no write progress (a client that
    /// does not read) before the connection is closed
    #[arg(long, env = "BANYAN_HTTP_WRITE_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "30")]
    #[serde(deserialize_with = "de_secs")]
    pub http_write_timeout: Duration,
    /// Failed publish/play attempts an address gets per window before it
    /// is refused for the rest of the window
    #[arg(
        long,
        env = "BANYAN_AUTH_FAIL_MAX",
        value_name = "N",
        default_value_t = 20
    )]
    pub auth_fail_max: u32,
    /// Seconds of the failed-attempt window
    #[arg(long, env = "BANYAN_AUTH_FAIL_WINDOW", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "60")]
    #[serde(deserialize_with = "de_secs")]
    pub auth_fail_window: Duration,
    /// Counted HLS viewer sessions per client address; more players from
    /// one address are served but not counted
    #[arg(
        long,
        env = "BANYAN_HLS_SESSIONS_PER_ADDRESS",
        value_name = "N",
        default_value_t = 16
    )]
    pub hls_sessions_per_address: usize,
}

/// Quotas per account and per API token.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Quotas")]
pub struct Quotas {
    /// Live inputs an account may have
    #[arg(long, env = "BANYAN_MAX_INPUTS_PER_ACCOUNT", value_name = "N",
          default_value_t = crate::quota::DEFAULT_MAX_INPUTS)]
    pub max_inputs_per_account: usize,
    /// Largest `meta` of a live input, serialized
    #[arg(long, env = "BANYAN_MAX_META_BYTES", value_name = "BYTES",
          default_value_t = crate::quota::DEFAULT_MAX_META_BYTES)]
    pub max_meta_bytes: usize,
    /// API requests per second per token (REST and GraphQL); 0 turns the
    /// limit off
    #[arg(long, env = "BANYAN_API_RATE", value_name = "N",
          default_value_t = crate::quota::DEFAULT_API_RATE)]
    pub api_rate: u32,
    /// API requests a token may make at once above --api-rate
    #[arg(long, env = "BANYAN_API_BURST", value_name = "N",
          default_value_t = crate::quota::DEFAULT_API_BURST)]
    pub api_burst: u32,
    /// Ingest domains allowed per account
    #[arg(
        long,
        env = "BANYAN_MAX_INGEST_DOMAINS",
        value_name = "N",
        default_value_t = 5
    )]
    pub max_ingest_domains: usize,
}

/// Webhook deliveries and simulcast outputs: connections the node makes.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Webhooks and outputs")]
pub struct Hooks {
    /// Allow webhook URLs that resolve to loopback, private, link-local,
    /// unique-local or unspecified addresses (refused by default, against
    /// server-side request forgery).
    #[arg(long, env = "BANYAN_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Seconds a webhook event is retried before it is dropped
    #[arg(long, env = "BANYAN_WEBHOOK_RETRY_FOR", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "3600")]
    #[serde(deserialize_with = "de_secs")]
    pub webhook_retry_for: Duration,
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
}

/// Analytics writes, per-stream metrics and log lines.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default)]
#[command(next_help_heading = "Analytics, metrics and logs")]
pub struct Observe {
    /// Seconds between analytics writes: the most viewing time a crash
    /// loses
    #[arg(long, env = "BANYAN_ANALYTICS_FLUSH", value_name = "SECONDS",
          value_parser = parse_secs, default_value = "10")]
    #[serde(deserialize_with = "de_secs")]
    pub analytics_flush: Duration,
    /// Per-stream series (ingest bitrate, fps): off, hashed (label `stream`
    /// is a keyed hash of the uid) or uid (label `stream` is the uid)
    #[arg(long, env = "BANYAN_METRICS_PER_STREAM", value_name = "MODE",
          value_enum, default_value_t = PerStream::Off)]
    pub metrics_per_stream: PerStream,
    /// Log lines on stderr: plain text (colours only on a terminal) or one
    /// JSON object a line, for log shippers
    #[arg(long, env = "BANYAN_LOG_FORMAT", value_name = "FORMAT",
          value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

clap_default!(General, Listeners, Tls, Limits, Quotas, Hooks, Observe);

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
