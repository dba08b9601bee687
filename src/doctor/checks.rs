//! The checks of `banyan doctor`, each adding findings to the report.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

use super::{chmod, reach, Report};
use crate::config::Settings;

/// How long any one network check may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate expiring sooner than this is a warning.
const SOON_DAYS: u64 = 14;
/// No correct clock is earlier than this (2025-01-01T00:00:00Z).
const CLOCK_FLOOR: u64 = 1_735_689_600;
/// The most the node's clock and this one may differ without a warning.
const SKEW: Duration = Duration::from_secs(5);

/// What credentials.json holds that the checks use.
pub(super) struct Creds {
    account: String,
    token: String,
}

/// The certificate chain on disk and the name clients use for it.
pub(super) type Cert = (Vec<CertificateDer<'static>>, String);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn date(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| format!("{secs} s after 1970"))
}

/// Fail unless `path` (of `mode`) is closed to group and others.
fn private(r: &mut Report, what: &str, path: &Path, mode: u32, want: u32) {
    let m = mode & 0o777;
    if m & 0o077 != 0 {
        r.fail(
            format!(
                "{what} {} is open to other users (mode {m:o})",
                path.display()
            ),
            chmod(want, path),
        );
    } else {
        r.ok(format!("{what} {} is private (mode {m:o})", path.display()));
    }
}

/// The modes of the data dir, credentials.json and the TLS key; the
/// credentials themselves.
pub(super) fn files(r: &mut Report, s: &Settings) -> Option<Creds> {
    let dir = &s.general.data_dir;
    let start = "start the node once with this data dir (it makes it), or give the node's \
                 --data-dir / --config";
    match std::fs::metadata(dir) {
        Ok(m) => private(r, "data dir", dir, m.permissions().mode(), 0o700),
        Err(e) => {
            r.fail(format!("data dir {}: {e}", dir.display()), start);
            return None;
        }
    }
    let key = match s.tls.pair() {
        Some((_, k)) => k,
        None => dir.join("tls").join("key.pem"),
    };
    match std::fs::metadata(&key) {
        Ok(m) => private(r, "TLS key", &key, m.permissions().mode(), 0o600),
        Err(e) => r.fail(format!("TLS key {}: {e}", key.display()), start),
    }
    let path = crate::node::credentials_path(dir);
    let text = match std::fs::metadata(&path) {
        Ok(m) => {
            private(r, "credentials", &path, m.permissions().mode(), 0o600);
            match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    r.fail(
                        format!("cannot read {}: {e}", path.display()),
                        "run banyan doctor as the node's user or as root",
                    );
                    return None;
                }
            }
        }
        Err(e) => {
            r.fail(format!("credentials {}: {e}", path.display()), start);
            return None;
        }
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (v["accountId"].as_str(), v["apiToken"].as_str()) {
        (Some(a), Some(t)) => Some(Creds {
            account: a.to_string(),
            token: t.to_string(),
        }),
        _ => {
            r.fail(
                format!("{} is not the node's credentials file", path.display()),
                "restore it from a backup, or move it away: the node writes new \
                 credentials at its next start",
            );
            None
        }
    }
}

/// Whether `chain` verifies (up to its last certificate) at `secs`.
fn valid_at(chain: &[CertificateDer<'static>], secs: u64) -> Result<(), webpki::Error> {
    let leaf = webpki::EndEntityCert::try_from(&chain[0])?;
    let last = chain.last().expect("a non-empty chain");
    let anchor = webpki::anchor_from_trusted_cert(last)?;
    let intermediates = if chain.len() > 2 {
        &chain[1..chain.len() - 1]
    } else {
        &[]
    };
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    leaf.verify_for_usage(
        algs.all,
        &[anchor],
        intermediates,
        UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
}

/// Whole days from `now` that `chain` stays valid (it is valid at `now`),
/// found by bisection; `None` beyond a century.
fn days_valid(chain: &[CertificateDer<'static>], now: u64) -> Option<u64> {
    const DAY: u64 = 86_400;
    let (mut lo, mut hi) = (0u64, 36_500u64);
    if valid_at(chain, now + hi * DAY).is_ok() {
        return None;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if valid_at(chain, now + mid * DAY).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// The certificate on disk: readable, naming the public host, valid now
/// and for the next two weeks.
pub(super) fn certificate(r: &mut Report, s: &Settings) -> Option<Cert> {
    let own = s.tls.pair().is_none();
    let path = match s.tls.pair() {
        Some((c, _)) => c,
        None => s.general.data_dir.join("tls").join("cert.pem"),
    };
    let renew = if own {
        format!(
            "move {} away and restart the node: it makes a new self-signed certificate \
             (naming public_host), or give tls_cert and tls_key",
            path.parent().unwrap_or(&path).display()
        )
    } else {
        "install a renewed certificate at tls_cert/tls_key and restart the node".to_string()
    };
    let pem = match std::fs::read(&path) {
        Ok(p) => p,
        Err(e) => {
            r.fail(format!("certificate {}: {e}", path.display()), renew);
            return None;
        }
    };
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    if chain.is_empty() || webpki::EndEntityCert::try_from(&chain[0]).is_err() {
        r.fail(
            format!("{} holds no readable certificate", path.display()),
            renew,
        );
        return None;
    }
    let name = s
        .general
        .public_host
        .clone()
        .unwrap_or_else(|| "localhost".to_string());
    let named = ServerName::try_from(name.clone()).ok().is_some_and(|sn| {
        webpki::EndEntityCert::try_from(&chain[0])
            .is_ok_and(|leaf| leaf.verify_is_valid_for_subject_name(&sn).is_ok())
    });
    if named {
        r.ok(format!("certificate {} names {name}", path.display()));
    } else {
        r.fail(
            format!("certificate {} does not name {name}", path.display()),
            renew.clone(),
        );
    }
    let now = unix_now();
    match valid_at(&chain, now) {
        Ok(()) => match days_valid(&chain, now) {
            None => r.ok("certificate valid for more than a century"),
            Some(d) if d < SOON_DAYS => r.warn(
                format!(
                    "certificate expires in {d} days ({})",
                    date(now + d * 86_400)
                ),
                renew,
            ),
            Some(d) => r.ok(format!(
                "certificate valid for {d} more days (to {})",
                date(now + d * 86_400)
            )),
        },
        Err(webpki::Error::CertExpired { .. }) => {
            r.fail("the certificate has expired", renew);
        }
        Err(webpki::Error::CertNotValidYet { .. }) => r.fail(
            "the certificate is not valid yet",
            "check the clock, or install a certificate valid today",
        ),
        Err(e) => r.fail(format!("the certificate chain does not verify: {e}"), renew),
    }
    Some((chain, name))
}

/// The clock: after a date no correct clock precedes, and synchronised
/// where timedatectl can say.
pub(super) fn clock(r: &mut Report) {
    let now = unix_now();
    if now < CLOCK_FLOOR {
        r.fail(
            format!("the clock says {}", date(now)),
            "set the clock: timedatectl set-ntp true (or chrony)",
        );
        return;
    }
    let synced = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match synced.as_deref() {
        Some("yes") => r.ok(format!("clock {} and synchronised (NTP)", date(now))),
        Some("no") => r.warn(
            "the clock is not synchronised (NTP)",
            "timedatectl set-ntp true, or run chrony: tokens, certificates and analytics \
             days depend on it",
        ),
        _ => r.ok(format!(
            "clock plausible ({}); NTP state unknown here",
            date(now)
        )),
    }
}

/// The API with credentials.json's token (which also reaches the database),
/// and the node's clock from its `Date` header.
pub(super) async fn http(r: &mut Report, s: &Settings, creds: Option<&Creds>) {
    let addr = reach(s.net.http);
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            r.fail(format!("no HTTP client: {e}"), "report this as a bug");
            return;
        }
    };
    let req = match creds {
        Some(c) => client
            .get(format!(
                "http://{addr}/client/v4/accounts/{}/stream/live_inputs",
                c.account
            ))
            .bearer_auth(&c.token),
        None => client.get(format!("http://{addr}/openapi.json")),
    };
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => {
            r.fail(
                format!("HTTP {addr}: no answer ({e})"),
                "is the node running with these settings? (systemctl status banyan; \
                 journalctl -u banyan)",
            );
            return;
        }
    };
    let node_time = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok());
    if let Some(t) = node_time {
        let skew = match SystemTime::now().duration_since(t) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > SKEW {
            r.warn(
                format!(
                    "the node's clock differs from this one by {} s",
                    skew.as_secs()
                ),
                "synchronise both clocks (NTP)",
            );
        }
    }
    let status = resp.status().as_u16();
    match (status, creds.is_some()) {
        (200, true) => r.ok(format!(
            "HTTP API {addr} answers credentials.json's token: the database is reachable"
        )),
        (200, false) => r.ok(format!("HTTP {addr} answers")),
        (401 | 403, _) => r.fail(
            format!("HTTP API {addr} refuses credentials.json's token ({status})"),
            "the node at this address uses another data dir or database: check \
             --data-dir and database_url",
        ),
        (503, _) => r.fail(
            format!("HTTP API {addr}: the node cannot reach its database (503)"),
            "check database_url and the database server (PostgreSQL: pg_isready)",
        ),
        _ => r.fail(
            format!("HTTP API {addr} answered {status}"),
            "see the node's log (journalctl -u banyan)",
        ),
    }
}

/// A TLS handshake on the RTMPS listener, trusting only the certificate on
/// disk, for the name clients use.
pub(super) async fn rtmps(r: &mut Report, s: &Settings, cert: Option<&Cert>) {
    let addr = reach(s.net.rtmps);
    let Some(tcp) = connect(r, "RTMPS", addr).await else {
        return;
    };
    let Some((chain, name)) = cert else {
        r.ok(format!("RTMPS {addr} accepts connections"));
        return;
    };
    let mut roots = rustls::RootCertStore::empty();
    let last = chain.last().expect("a non-empty chain").clone();
    let built = roots.add(last).ok().and_then(|()| {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()
    });
    let (Some(builder), Ok(sn)) = (built, ServerName::try_from(name.clone())) else {
        r.ok(format!("RTMPS {addr} accepts connections"));
        return;
    };
    let cfg = builder.with_root_certificates(roots).with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    match tokio::time::timeout(TIMEOUT, tls.connect(sn, tcp)).await {
        Ok(Ok(_)) => r.ok(format!(
            "RTMPS {addr}: TLS handshake with the certificate on disk, for {name}"
        )),
        Ok(Err(e)) => r.fail(
            format!("RTMPS {addr}: TLS handshake failed ({e})"),
            "restart the node after replacing its certificate, and make sure the \
             certificate names the host clients use",
        ),
        Err(_) => r.fail(
            format!(
                "RTMPS {addr}: no TLS handshake within {} s",
                TIMEOUT.as_secs()
            ),
            "is another program on this port?",
        ),
    }
}

async fn connect(r: &mut Report, what: &str, addr: SocketAddr) -> Option<tokio::net::TcpStream> {
    let fix = "is the node running with these settings? (systemctl status banyan); a \
               firewall between?";
    match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            r.fail(format!("{what} {addr}: cannot connect ({e})"), fix);
            None
        }
        Err(_) => {
            r.fail(format!("{what} {addr}: no connection within 5 s"), fix);
            None
        }
    }
}

/// A TCP listener accepts a connection.
pub(super) async fn tcp(r: &mut Report, what: &str, addr: SocketAddr) {
    let addr = reach(addr);
    if connect(r, what, addr).await.is_some() {
        r.ok(format!("{what} {addr} accepts connections"));
    }
}

/// An SRT handshake with a stream id no input has: a listening node
/// refuses it with its own reason code (not counted as a failed attempt).
pub(super) async fn srt(r: &mut Report, addr: SocketAddr) {
    let addr = reach(addr);
    let probe = tokio::task::spawn_blocking(move || -> Result<(), (i32, String)> {
        use banyan_srt::{sys, Socket};
        banyan_srt::startup();
        let s = Socket::new().map_err(|e| (0, e.to_string()))?;
        s.set_str(sys::SRTO_STREAMID, "doctor-probe")
            .and_then(|()| s.set_i32(sys::SRTO_CONNTIMEO, 3000))
            .map_err(|e| (0, e.to_string()))?;
        s.connect(addr).map_err(|e| {
            let reason = s.reject_reason();
            (
                reason,
                format!("{e}: {}", banyan_srt::reject_reason_str(reason)),
            )
        })
    })
    .await;
    match probe {
        Ok(Ok(())) => r.ok(format!("SRT {addr} answers a handshake")),
        Ok(Err((code, _))) if code >= 1000 => {
            r.ok(format!("SRT {addr} answers a handshake"));
        }
        Ok(Err((_, why))) => r.fail(
            format!("SRT {addr}: no listener answers ({why})"),
            format!(
                "is the node running with these settings? SRT is UDP: open udp/{} in \
                 firewalls",
                addr.port()
            ),
        ),
        Err(e) => r.fail(format!("SRT check failed: {e}"), "report this as a bug"),
    }
}

/// The metrics listener answers `/metrics`.
pub(super) async fn metrics(r: &mut Report, addr: SocketAddr) {
    let addr = reach(addr);
    let answer = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(c) => c.get(format!("http://{addr}/metrics")).send().await,
        Err(e) => {
            r.fail(format!("no HTTP client: {e}"), "report this as a bug");
            return;
        }
    };
    match answer {
        Ok(a) if a.status().is_success() => r.ok(format!("metrics {addr} answers /metrics")),
        Ok(a) => r.fail(
            format!("metrics {addr} answered {}", a.status()),
            "is another program on this port?",
        ),
        Err(e) => r.fail(
            format!("metrics {addr}: no answer ({e})"),
            "is the node running with these settings?",
        ),
    }
}
