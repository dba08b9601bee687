//! Push clients: a live stream re-published to another server (simulcast).
//!
//! Each output is one ordinary, bounded hub subscriber: when its destination
//! is slow the cursor falls behind and the hub skips it to a newer keyframe,
//! so an output never slows the publisher, the viewers or another output.
//!
//! * [`Target`]: an output's destination, parsed from its URL and stream
//!   key (sans-IO): RTMP, RTMPS or an SRT caller.
//! * [`Backoff`]: the reconnect delays, exponential with jitter and bounded
//!   (sans-IO: the caller supplies the random sample).
//! * [`run`]: the lifecycle of one output while its input is live: connect,
//!   push, and on failure wait and reconnect, until cancelled or the stream
//!   ends. Its [`PushStatus`] is what the API shows.
//!
//! This crate knows nothing of the API or the cluster: the node decides
//! which outputs run and hands each its target.

use std::sync::Arc;
use std::time::Duration;

use banyan_relay::Hub;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub mod addr;
pub mod rtmp;
pub mod srt;
#[cfg(test)]
mod stall_tests;

/// Where an output pushes to.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    Rtmp {
        tls: bool,
        host: String,
        port: u16,
        /// The application path (everything after the authority).
        app: String,
        stream_key: String,
    },
    Srt {
        host: String,
        port: u16,
        stream_id: Option<String>,
        passphrase: Option<String>,
        latency_ms: Option<u32>,
    },
}

impl std::fmt::Debug for Target {
    // Scheme, host and port only: never the stream key or the passphrase,
    // nor the application path (some services take a key there).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Rtmp { host, port, .. } | Target::Srt { host, port, .. } => {
                write!(f, "{}://{host}:{port}", self.protocol())
            }
        }
    }
}

impl Target {
    /// The destination's host (a name or an address).
    pub fn host(&self) -> &str {
        match self {
            Target::Rtmp { host, .. } | Target::Srt { host, .. } => host,
        }
    }

    /// The protocol label of metrics.
    pub fn protocol(&self) -> &'static str {
        match self {
            Target::Rtmp { tls: false, .. } => "rtmp",
            Target::Rtmp { tls: true, .. } => "rtmps",
            Target::Srt { .. } => "srt",
        }
    }

    /// Parse an output's `url` and `streamKey`. For SRT the stream id comes
    /// from the URL's `streamid`, else from the stream key.
    pub fn parse(url: &str, stream_key: &str) -> Result<Target, String> {
        if url.len() > 2048 || url.chars().any(|c| c.is_control() || c == ' ') {
            return Err("at most 2048 characters, no spaces or control characters".into());
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must start with rtmp://, rtmps:// or srt://")?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let default_port = match scheme.as_str() {
            "rtmp" => 1935,
            "rtmps" => 443,
            "srt" => 0,
            _ => return Err("must start with rtmp://, rtmps:// or srt://".into()),
        };
        let (host, port) = split_host_port(authority, default_port)?;
        if scheme == "srt" {
            if port == 0 {
                return Err("an srt:// URL needs a port".into());
            }
            let query = tail.split_once('?').map(|(_, q)| q).unwrap_or("");
            let mut stream_id = None;
            let mut passphrase = None;
            let mut latency_ms = None;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v)?;
                match k {
                    "streamid" => stream_id = Some(v),
                    "passphrase" => {
                        if !(10..=79).contains(&v.len()) {
                            return Err("passphrase: 10 to 79 characters".into());
                        }
                        passphrase = Some(v)
                    }
                    "latency" => {
                        latency_ms = Some(
                            v.parse::<u32>()
                                .ok()
                                .filter(|l| *l <= 60_000)
                                .ok_or("latency: milliseconds, at most 60000")?,
                        )
                    }
                    "mode" if v == "caller" => {}
                    _ => return Err(format!("unsupported SRT parameter {k:?}")),
                }
            }
            if stream_id.is_none() && !stream_key.is_empty() {
                stream_id = Some(stream_key.to_string());
            }
            if stream_id.as_ref().is_some_and(|s| s.len() > 512) {
                return Err("streamid: at most 512 bytes".into());
            }
            return Ok(Target::Srt {
                host,
                port,
                stream_id,
                passphrase,
                latency_ms,
            });
        }
        if tail.contains('?') {
            return Err("query strings are not supported in rtmp(s):// URLs".into());
        }
        let app = tail
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        if app.is_empty() {
            return Err("needs an application path, e.g. rtmp://host/live".into());
        }
        Ok(Target::Rtmp {
            tls: scheme == "rtmps",
            host,
            port,
            app,
            stream_key: stream_key.to_string(),
        })
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty()
        || host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b))
    {
        return Err("invalid host".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("invalid port")?,
    };
    Ok((host, port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("bad percent escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".into())
}

/// Reconnect delays: `min * 2^attempt` capped at `max`, of which a random
/// half is jitter ("equal jitter"), so outputs that failed together do not
/// retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay; `sample` is uniform in [0, 1).
    pub fn next(&mut self, sample: f64) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        half + half.mul_f64(sample.clamp(0.0, 1.0))
    }

    /// After a session that worked for a while.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A sample in [0, 1) from the process's hash randomness and the clock.
fn jitter_sample() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Where an output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    /// Not running (input not live here, output disabled, or stopped).
    Idle,
    Connecting,
    Connected,
    /// Waiting to try again after a failure.
    Reconnecting,
}

impl PushState {
    pub fn name(self) -> &'static str {
        match self {
            PushState::Idle => "idle",
            PushState::Connecting => "connecting",
            PushState::Connected => "connected",
            PushState::Reconnecting => "reconnecting",
        }
    }
}

#[derive(Debug)]
struct StatusInner {
    state: PushState,
    last_error: Option<String>,
}

/// The shared, observable status of one output. Keeps the gauge
/// `banyan_outputs{state}` in step with its transitions.
#[derive(Debug)]
pub struct PushStatus {
    inner: Mutex<StatusInner>,
}

impl Default for PushStatus {
    fn default() -> Self {
        PushStatus {
            inner: Mutex::new(StatusInner {
                state: PushState::Idle,
                last_error: None,
            }),
        }
    }
}

impl PushStatus {
    pub fn state(&self) -> PushState {
        self.inner.lock().state
    }

    pub fn last_error(&self) -> Option<String> {
        self.inner.lock().last_error.clone()
    }

    fn set(&self, state: PushState) {
        let mut i = self.inner.lock();
        if i.state == state {
            return;
        }
        if i.state != PushState::Idle {
            metrics::gauge!("banyan_outputs", "state" => i.state.name()).decrement(1.0);
        }
        if state != PushState::Idle {
            metrics::gauge!("banyan_outputs", "state" => state.name()).increment(1.0);
        }
        i.state = state;
    }

    fn error(&self, e: String) {
        self.inner.lock().last_error = Some(e);
    }
}

/// Tunables of push clients.
#[derive(Clone)]
pub struct PushConfig {
    /// Trust roots for RTMPS destinations.
    pub roots: Arc<rustls::RootCertStore>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Connecting (TCP, TLS, RTMP handshake and publish; SRT handshake).
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long fails the session.
    pub write_timeout: Duration,
    /// Loopback, private and reserved destinations allowed (see [`addr`]).
    pub allow_private: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            roots: Arc::new(rustls::RootCertStore::empty()),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            allow_private: false,
        }
    }
}

/// How a push session ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The stream ended (publisher gone, kicked).
    StreamEnded,
}

/// A session that ran at least this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// Push `uid` to `target` until `cancel` fires or the stream ends,
/// reconnecting with [`Backoff`] after failures.
pub async fn run(
    hub: Arc<Hub>,
    uid: String,
    target: Target,
    cfg: PushConfig,
    status: Arc<PushStatus>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(cfg.min_backoff, cfg.max_backoff);
    let proto = target.protocol();
    loop {
        status.set(PushState::Connecting);
        let started = tokio::time::Instant::now();
        let session = async {
            match &target {
                Target::Rtmp { .. } => rtmp::session(&hub, &uid, &target, &cfg, &status).await,
                Target::Srt { .. } => srt::session(&hub, &uid, &target, &cfg, &status).await,
            }
        };
        let r = tokio::select! {
            _ = cancel.cancelled() => break,
            r = session => r,
        };
        match r {
            Ok(SessionEnd::StreamEnded) => {
                tracing::info!(stream = %uid, output = ?target, "output: stream ended");
                break;
            }
            Err(e) => {
                tracing::info!(stream = %uid, output = ?target, "output failed: {e}");
                metrics::counter!("banyan_output_reconnects_total", "protocol" => proto)
                    .increment(1);
                status.error(e);
            }
        }
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        status.set(PushState::Reconnecting);
        let wait = backoff.next(jitter_sample());
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    status.set(PushState::Idle);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets() {
        let t = Target::parse("rtmp://a.rtmp.youtube.com/live2", "k").unwrap();
        assert_eq!(
            t,
            Target::Rtmp {
                tls: false,
                host: "a.rtmp.youtube.com".into(),
                port: 1935,
                app: "live2".into(),
                stream_key: "k".into()
            }
        );
        let t = Target::parse("rtmps://127.0.0.1:4443/live/", "k").unwrap();
        assert!(matches!(
            t,
            Target::Rtmp {
                tls: true,
                port: 4443,
                ..
            }
        ));
        let t = Target::parse("srt://[::1]:9000?streamid=a%3Db&passphrase=0123456789", "").unwrap();
        assert_eq!(
            t,
            Target::Srt {
                host: "::1".into(),
                port: 9000,
                stream_id: Some("a=b".into()),
                passphrase: Some("0123456789".into()),
                latency_ms: None
            }
        );
        for bad in [
            "http://x/live",
            "rtmp://x",
            "rtmp://u:p@x/live",
            "srt://x",
            "srt://x:1?passphrase=short",
            "srt://x:1?foo=1",
            "rtmp://x:99999/live",
            "rtmp:// x/live",
            "rtmp://x/live?a=b",
        ] {
            assert!(Target::parse(bad, "k").is_err(), "{bad}");
        }
        // The key never shows in Debug.
        let t = Target::parse("rtmp://h/live/in-path", "secret-key").unwrap();
        assert_eq!(format!("{t:?}"), "rtmp://h:1935");
    }

    #[test]
    fn backoff_grows_is_jittered_and_bounded() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let d: Vec<Duration> = (0..8).map(|_| b.next(0.999)).collect();
        assert!(d[0] < Duration::from_secs(1) && d[0] >= Duration::from_millis(500));
        assert!(d[1] > d[0] && d[2] > d[1]);
        assert!(d.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(d[7] >= Duration::from_secs(15));
        let lo = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).next(0.0);
        assert_eq!(lo, Duration::from_millis(500));
        b.reset();
        assert!(b.next(0.5) < Duration::from_secs(1));
        let s = jitter_sample();
        assert!((0.0..1.0).contains(&s));
    }
}
