//! `banyan doctor`: checks a node the way an operator would and says what
//! to fix. It takes the same flags, environment and config file as `banyan
//! serve` (so it knows the listeners, the data dir and the certificate) and
//! checks, each with a fix when it fails:
//!
//! - the data dir, credentials.json and the TLS key are private (modes);
//! - the certificate names the public host and is valid for two weeks;
//! - the clock is plausible and synchronised, and agrees with the node's;
//! - the HTTP API answers with the credentials (so the database is
//!   reachable), RTMPS completes a TLS handshake with the certificate on
//!   disk, SRT answers a handshake, plain RTMP and the metrics listener
//!   accept connections;
//! - the database (the data dir's SQLite file, or `database_url`) has every
//!   schema migration of this binary (`store::migrate`).
//!
//! Exit status 1 when any check failed (warnings alone exit 0).

mod checks;
mod database;
mod domains;

use std::net::SocketAddr;
use std::path::Path;

use clap::Args;

use crate::config::{ServeArgs, Settings};

/// Flags of `banyan doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print only warnings and failures.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Finding {
    level: Level,
    what: String,
    fix: Option<String>,
}

/// What the checks found, in order.
#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, what: impl Into<String>) {
        self.push(Level::Ok, what.into(), None);
    }
    fn warn(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warn, what.into(), Some(fix.into()));
    }
    fn fail(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Fail, what.into(), Some(fix.into()));
    }
    fn push(&mut self, level: Level, what: String, fix: Option<String>) {
        self.0.push(Finding { level, what, fix });
    }
    fn count(&self, level: Level) -> usize {
        self.0.iter().filter(|f| f.level == level).count()
    }

    /// The report as printed: one line per check, `fix:` lines under
    /// problems, a summary.
    fn render(&self, quiet: bool) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let tag = match f.level {
                Level::Ok if quiet => continue,
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            out.push_str(&format!("{tag}  {}\n", f.what));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("      fix: {fix}\n"));
            }
        }
        let (fails, warns) = (self.count(Level::Fail), self.count(Level::Warn));
        if !quiet || fails + warns > 0 {
            out.push_str(&format!(
                "{fails} problem{}, {warns} warning{}\n",
                if fails == 1 { "" } else { "s" },
                if warns == 1 { "" } else { "s" }
            ));
        }
        out
    }
}

/// Where a client on this machine reaches a listener bound to `a`.
fn reach(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        let ip: std::net::IpAddr = if a.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, a.port())
    } else {
        a
    }
}

/// Run the checks and print the report; true when nothing failed.
pub async fn run(args: DoctorArgs) -> anyhow::Result<bool> {
    let mut r = Report::default();
    let settings = match Settings::resolve(args.serve) {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                format!("the configuration does not load: {e:#}"),
                "correct the config file or flags (`banyan serve --help` lists them)",
            );
            print!("{}", r.render(args.quiet));
            return Ok(false);
        }
    };
    if !args.quiet {
        println!(
            "banyan doctor: data dir {}{}",
            settings.general.data_dir.display(),
            settings
                .config
                .as_ref()
                .map(|c| format!(", config {}", c.display()))
                .unwrap_or_default()
        );
    }
    let creds = checks::files(&mut r, &settings);
    let cert = checks::certificate(&mut r, &settings);
    checks::clock(&mut r);
    checks::http(&mut r, &settings, creds.as_ref()).await;
    checks::rtmps(&mut r, &settings, cert.as_ref()).await;
    checks::srt(&mut r, settings.net.srt).await;
    if let Some(a) = settings.net.plain_rtmp() {
        checks::tcp(&mut r, "plain RTMP", a).await;
    }
    checks::metrics(&mut r, settings.net.metrics).await;
    database::database(&mut r, &settings).await;
    print!("{}", r.render(args.quiet));
    Ok(r.count(Level::Fail) == 0)
}

/// `chmod` text for a fix.
fn chmod(mode: u32, path: &Path) -> String {
    format!("chmod {mode:o} {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_fixes_and_quiet() {
        let mut r = Report::default();
        r.ok("fine");
        r.warn("soon", "renew");
        r.fail("open", "chmod 600 x");
        let all = r.render(false);
        assert!(
            all.contains("ok    fine\n") && all.contains("FAIL  open\n      fix: chmod 600 x\n")
        );
        assert!(all.ends_with("1 problem, 1 warning\n"), "{all}");
        let quiet = r.render(true);
        assert!(!quiet.contains("fine") && quiet.contains("WARN  soon"));
        let mut clean = Report::default();
        clean.ok("fine");
        assert_eq!(clean.render(true), "");
    }

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(reach(a), "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        let b: SocketAddr = "[::]:1936".parse().unwrap();
        assert_eq!(reach(b), "[::1]:1936".parse::<SocketAddr>().unwrap());
        let c: SocketAddr = "10.1.2.3:1".parse().unwrap();
        assert_eq!(reach(c), c);
    }
}
