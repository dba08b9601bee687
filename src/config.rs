//! The settings of `banyan serve`: one set of options, each a flag, an env
//! variable `BANYAN_*` and a key of the same name (snake case) in the TOML
//! file given by `--config` (the cluster's in its `[cluster]` table, without
//! the `cluster_` prefix). A flag or env variable wins over the file; the
//! file wins over the defaults.
//!
//! Each option is declared once, in the struct of its subsystem
//! (`options.rs`, `acme.rs`, `cluster.rs` in config/), which derives both
//! its flags and its keys; `merge.rs` has the generic merge. The config
//! module imports no subsystem (only the constants of `quota`, a leaf):
//! the subsystems read their settings from it.
//! [`Settings::resolve`] then checks the merged options.

pub mod acme;
pub mod cluster;
pub(crate) mod merge;
mod options;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use banyan_ingest::net::TrustedProxies;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use serde::Deserialize;

pub use acme::{AcmeOptions, Challenge, LETS_ENCRYPT};
pub use cluster::{ClusterConfig, ClusterOptions};
use merge::{clamp_secs, field_names};
pub use options::{General, Hooks, Limits, Listeners, LogFormat, Observe, PerStream, Quotas, Tls};

/// Every option of a node, by subsystem.
#[derive(Debug, Clone, Default, Args)]
pub struct Options {
    #[command(flatten)]
    pub general: General,
    #[command(flatten)]
    pub net: Listeners,
    #[command(flatten)]
    pub tls: Tls,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub quotas: Quotas,
    #[command(flatten)]
    pub hooks: Hooks,
    #[command(flatten)]
    pub observe: Observe,
    #[command(flatten)]
    pub acme: AcmeOptions,
    #[command(flatten)]
    pub cluster: ClusterOptions,
}

impl Options {
    /// The keys of a config file's top level, per subsystem.
    fn top_level_keys() -> Vec<&'static str> {
        [
            field_names::<General>(),
            field_names::<Listeners>(),
            field_names::<Tls>(),
            field_names::<Limits>(),
            field_names::<Quotas>(),
            field_names::<Hooks>(),
            field_names::<Observe>(),
            field_names::<AcmeOptions>(),
        ]
        .concat()
    }

    /// Every key of the config file as `(table, key)`: `("", "http")`,
    /// `("cluster", "node")`...
    pub fn file_keys() -> Vec<(&'static str, &'static str)> {
        let top = Self::top_level_keys().into_iter().map(|k| ("", k));
        let cluster = field_names::<ClusterOptions>()
            .iter()
            .map(|k| ("cluster", *k));
        top.chain(cluster).collect()
    }

    /// A config file's options; the keys it does not name take their
    /// defaults. Unknown keys are refused.
    pub fn from_toml(text: &str) -> anyhow::Result<Options> {
        let table: toml::Table = toml::from_str(text)?;
        let known = Self::top_level_keys();
        for key in table.keys() {
            if key != "cluster" && !known.contains(&key.as_str()) {
                bail!(
                    "unknown key `{key}` (the keys are the flags of `banyan serve --help` \
                     in snake case)"
                );
            }
        }
        #[derive(Deserialize)]
        struct Section {
            cluster: Option<ClusterOptions>,
        }
        let section: Section = toml::from_str(text)?;
        let in_file = section.cluster.is_some();
        Ok(Options {
            general: toml::from_str(text)?,
            net: toml::from_str(text)?,
            tls: toml::from_str(text)?,
            limits: toml::from_str(text)?,
            quotas: toml::from_str(text)?,
            hooks: toml::from_str(text)?,
            observe: toml::from_str(text)?,
            acme: toml::from_str(text)?,
            cluster: ClusterOptions {
                in_file,
                ..section.cluster.unwrap_or_default()
            },
        })
    }
}

/// The command line of `banyan serve` (and `banyan doctor`): `--config`
/// and the values given by flag or env variable.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// The TOML config file.
    pub config: Option<PathBuf>,
    /// Matches of the options given by flag or env variable only.
    given: ArgMatches,
}

impl ServeArgs {
    /// Parse `argv` (without a program name) as `banyan serve` would,
    /// env variables included.
    pub fn parse_from<I, T>(argv: I) -> Result<ServeArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cmd = Self::augment_args(Command::new("serve").no_binary_name(true));
        Self::from_arg_matches(&cmd.try_get_matches_from(argv)?)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(ServeArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            given: merge::given(m),
        })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        Options::augment_args(
            cmd.arg(
                Arg::new("config")
                    .long("config")
                    .env("BANYAN_CONFIG")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML config file; flags and env variables win over it"),
            ),
        )
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The resolved settings of a node: the merged options, checked, and what
/// is made of them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read, if any.
    pub config: Option<PathBuf>,
    pub general: General,
    pub net: Listeners,
    pub tls: Tls,
    pub limits: Limits,
    pub quotas: Quotas,
    pub hooks: Hooks,
    pub observe: Observe,
    pub acme: AcmeOptions,
    /// The cluster settings, when this node is a cluster member.
    pub cluster_cfg: Option<ClusterConfig>,
    /// `net.trusted_proxies`, parsed.
    pub trusted_proxies: Arc<TrustedProxies>,
}

impl Settings {
    /// Merge flags, the config file and defaults, and check the result.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let mut o = match &args.config {
            Some(path) => load_file(path)?,
            None => Options::default(),
        };
        // A listener given by flag or env turns the file's `no_rtmp` off.
        let rtmp_given = args.given.contains_id("rtmp") && !args.given.contains_id("no_rtmp");
        o.update_from_arg_matches(&args.given)?;
        if rtmp_given {
            o.net.no_rtmp = false;
        }
        Self::check(args.config, o)
    }

    fn check(config: Option<PathBuf>, o: Options) -> anyhow::Result<Settings> {
        let Options {
            general,
            net,
            tls,
            mut limits,
            mut quotas,
            mut hooks,
            mut observe,
            acme,
            cluster,
        } = o;
        if let Some(a) = net.plain_rtmp() {
            if !a.ip().is_loopback() && !net.allow_plain_rtmp_on_public {
                bail!(
                    "refusing plain RTMP on non-loopback address {a}: stream keys would travel \
                     in clear text; use RTMPS, --no-rtmp, or --allow-plain-rtmp-on-public"
                );
            }
        }
        if tls.tls_cert.is_some() != tls.tls_key.is_some() {
            bail!("tls_cert and tls_key must be given together");
        }
        let trusted_proxies =
            TrustedProxies::parse_list(net.trusted_proxies.as_deref().unwrap_or(""))
                .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
        if net.proxy_protocol && trusted_proxies.is_empty() {
            bail!("proxy_protocol needs trusted_proxies: only they may send PROXY headers");
        }
        let cluster_cfg = ClusterConfig::resolve(cluster, general.database_url.as_deref())?;
        let acme = acme.check(general.public_host.as_deref())?;

        // Every count at least 1, every timeout within 1 s and a day.
        let l = &mut limits;
        l.max_connections = l.max_connections.max(1);
        l.max_connections_per_address = l.max_connections_per_address.max(1);
        l.auth_fail_max = l.auth_fail_max.max(1);
        l.hls_sessions_per_address = l.hls_sessions_per_address.max(1);
        for t in [
            &mut l.handshake_timeout,
            &mut l.idle_timeout,
            &mut l.http_header_timeout,
            &mut l.http_body_timeout,
            &mut l.http_write_timeout,
            &mut l.auth_fail_window,
        ] {
            *t = clamp_secs(*t, 1, 86_400);
        }
        quotas.max_meta_bytes = quotas.max_meta_bytes.min(crate::quota::MAX_BODY);
        quotas.api_burst = quotas.api_burst.max(1);
        hooks.webhook_retry_for = clamp_secs(hooks.webhook_retry_for, 1, 7 * 86_400);
        observe.analytics_flush = clamp_secs(observe.analytics_flush, 1, 3600);
        Ok(Settings {
            config,
            general,
            net,
            tls,
            limits,
            quotas,
            hooks,
            observe,
            acme,
            cluster_cfg,
            trusted_proxies: Arc::new(trusted_proxies),
        })
    }
}

fn load_file(path: &Path) -> anyhow::Result<Options> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    Options::from_toml(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod docs;
#[cfg(test)]
mod tests;
