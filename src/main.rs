//! `banyan`: the node (`banyan serve`) and the clients of its HTTP API.
//!
//! The code lives in the library (src/lib.rs has the module map).
//!
//! Starting a node from a script or a test: give every listener port 0
//! (`--http 127.0.0.1:0 --rtmp 127.0.0.1:0 --rtmps 127.0.0.1:0 --srt
//! 127.0.0.1:0 --metrics 127.0.0.1:0`, or `--no-rtmp`) and a fresh `--data-dir`, then read the
//! first line of stdout. It is printed once every listener is bound and the
//! API answers:
//!
//! ```json
//! {"ready":true,"http":"127.0.0.1:PORT","rtmp":"127.0.0.1:PORT"|null,
//!  "rtmps":"127.0.0.1:PORT","srt":"127.0.0.1:PORT","api":"http://HOST:PORT",
//!  "dataDir":"...","credentials":".../credentials.json",
//!  "metrics":"127.0.0.1:PORT"}
//! ```
//!
//! Logs go to stderr (`RUST_LOG` filters them). SIGTERM or Ctrl-C stops
//! accepting, lets sessions end (at most 5 s) and exits 0.

use banyan::{client, cluster, config, doctor, serve};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "banyan", version, about = "Low-latency live video relay")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a node. Prints one JSON line on stdout when ready.
    Serve(Box<config::ServeArgs>),
    /// Live inputs.
    Inputs {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::InputsCmd,
    },
    /// Accounts (needs the admin token).
    Accounts {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::AccountsCmd,
    },
    /// The account's API tokens.
    Tokens {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::TokensCmd,
    },
    /// Simulcast outputs of live inputs.
    Outputs {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::OutputsCmd,
    },
    /// Operator tasks (need the admin token).
    Admin {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::AdminCmd,
    },
    /// Custom RTMPS ingest domains.
    Domains {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::DomainsCmd,
    },
    /// Write a new cluster certificate authority (ca.pem, ca.key) into DIR.
    ClusterCa {
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Check a running node as an operator would (takes serve's flags, env
    /// and config); exit status 1 on a problem.
    Doctor(Box<doctor::DoctorArgs>),
    /// Viewing analytics.
    Analytics {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        cmd: client::AnalyticsCmd,
    },
}

/// Logs on stderr, filtered by `RUST_LOG` (else `default`): plain text with
/// colours only when stderr is a terminal (a file or journald gets none, and
/// journald, which stamps each line itself, no timestamps), or one JSON
/// object a line.
fn init_logs(default: &str, format: config::LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Plain => {
            let fmt = fmt.with_ansi(std::io::stderr().is_terminal());
            if stderr_is_journal() {
                fmt.without_time().init()
            } else {
                fmt.init()
            }
        }
        config::LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

/// Whether stderr is journald's stream: `JOURNAL_STREAM` names its device
/// and inode (inherited by children whose stderr may be elsewhere, so both
/// are compared).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        v.split_once(':')
            .map(|(d, i)| (d.to_string(), i.to_string()))
    }) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

fn main() -> anyhow::Result<()> {
    // Before any thread of the runtime exists, so that none gets an arena
    // of its own.
    banyan::heap::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => {
            let settings = config::Settings::resolve(*args)?;
            init_logs("info", settings.observe.log_format);
            serve::serve(settings).await
        }
        Cmd::Inputs { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::inputs(conn, cmd).await
        }
        Cmd::Accounts { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::accounts(conn, cmd).await
        }
        Cmd::Tokens { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::tokens(conn, cmd).await
        }
        Cmd::Outputs { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::outputs(conn, cmd).await
        }
        Cmd::Admin { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::admin(conn, cmd).await
        }
        Cmd::Domains { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::domains(conn, cmd).await
        }
        Cmd::ClusterCa { out } => cluster::write_ca(&out),
        Cmd::Doctor(args) => {
            init_logs("error", config::LogFormat::Plain);
            if !doctor::run(*args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Analytics { conn, cmd } => {
            init_logs("warn", config::LogFormat::Plain);
            client::analytics(conn, cmd).await
        }
    }
}
