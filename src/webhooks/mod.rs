//! Live webhooks: `live_input.connected`, `.disconnected` and `.errored`
//! sent to each account's `notificationUrl`, signed, at least once.
//!
//! ```text
//! ingest (Published/Refused/Broken) ─┐                      ┌─► POST, signed
//! status watcher (stream went idle) ─┴─► bounded channel ─► writer ─► store queue ─► sender
//!        never waits; full: dropped+counted         (webhook_events)   claims, retries
//! ```
//!
//! - Connected is sent when a publisher is accepted on this node and the
//!   input was not already live here; disconnected when the stream ends,
//!   that is once the reconnect window has passed without the publisher
//!   coming back (a reconnect within the window continues the broadcast
//!   and sends nothing). Errored is sent for a refused publish of a known
//!   input (disabled, already publishing, a key that does not allow it)
//!   and for a stream broken by malformed input, at most once per input
//!   and code every [`ERRORED_EVERY`].
//! - Producers never wait: events go through a bounded channel to one
//!   writer that puts them in the store; when it is full they are dropped
//!   and counted. The sender claims queued rows (the oldest of each
//!   account, so an account's events arrive in order), resolves the
//!   target, checks every address ([`target`]) and connects only to those,
//!   follows no redirect, and retries a failure with exponential backoff
//!   until the event is `--webhook-retry-for` old, then drops it (counted).
//!   Events survive a restart in the store; in a cluster the node that saw
//!   an event queues it once and a claim keeps two nodes from both sending.

pub mod payload;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banyan_ingest::events::{Events, IngestEvent};
use banyan_relay::StreamState;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::store::{now_micros, Enqueued, QueuedEvent, Store};
use payload::{ErrorCode, EventKind};

/// Events waiting for the writer; more are dropped.
pub const CHANNEL: usize = 1024;
/// An input's errored events of one code are sent at most this often.
pub const ERRORED_EVERY: Duration = Duration::from_secs(10);
/// Inputs tracked for the errored limit and as live at most.
const MAX_TRACKED: usize = 100_000;
/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds a row (longer than a delivery).
const CLAIM: Duration = Duration::from_secs(30);
/// Rows claimed per round.
const BATCH: i64 = 32;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One event on its way to the store.
#[derive(Debug)]
struct Pending {
    uid: String,
    kind: EventKind,
    at: i64,
}

/// What the watcher, the writer and the sender use.
pub struct Context {
    pub store: Store,
    pub webhooks: Arc<Webhooks>,
    /// Which streams ended.
    pub hub: Arc<banyan_relay::Hub>,
    pub hooks: crate::config::Hooks,
    /// The store is shared with other nodes (`--database-url`).
    pub shared: bool,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The webhook machinery of a node.
pub struct Webhooks {
    tx: mpsc::Sender<Pending>,
    rx: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Wakes the sender when the writer queued something.
    queued: Notify,
    /// Inputs this node reported connected and not yet disconnected.
    live: Mutex<HashSet<String>>,
    /// When each (input, code) last had an errored event.
    errored: Mutex<HashMap<(String, ErrorCode), Instant>>,
    /// CA certificates trusted for https targets (set by [`run`]).
    roots: std::sync::OnceLock<Vec<reqwest::Certificate>>,
}

impl Webhooks {
    pub fn new() -> Arc<Webhooks> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        Arc::new(Webhooks {
            tx,
            rx: Mutex::new(Some(rx)),
            queued: Notify::new(),
            live: Mutex::new(HashSet::new()),
            errored: Mutex::new(HashMap::new()),
            roots: std::sync::OnceLock::new(),
        })
    }

    /// The sink ingest reports to.
    pub fn ingest_events(self: &Arc<Self>) -> Events {
        let me = self.clone();
        Events::new(move |e| me.observe(e, Instant::now()))
    }

    /// Turn an ingest event into a webhook event (or nothing).
    fn observe(&self, e: IngestEvent, now: Instant) {
        match e {
            IngestEvent::Published { uid } => {
                let mut live = self.live.lock();
                if live.contains(&uid) {
                    return; // a reconnect within the window
                }
                if live.len() >= MAX_TRACKED {
                    drop(live);
                    dropped("tracking_full");
                    return;
                }
                live.insert(uid.clone());
                drop(live);
                self.emit(uid, EventKind::Connected);
            }
            IngestEvent::Refused { uid, reason } | IngestEvent::Broken { uid, reason } => {
                let code = ErrorCode::from_reason(reason);
                if !self.errored_allowed(&uid, code, now) {
                    dropped("errored_rate");
                    return;
                }
                self.emit(uid, EventKind::Errored(code));
            }
        }
    }

    /// Whether an errored event of `code` for `uid` may go now (and note it).
    fn errored_allowed(&self, uid: &str, code: ErrorCode, now: Instant) -> bool {
        let mut map = self.errored.lock();
        let key = (uid.to_string(), code);
        if let Some(last) = map.get(&key) {
            if now.saturating_duration_since(*last) < ERRORED_EVERY {
                return false;
            }
        }
        if map.len() >= MAX_TRACKED {
            map.retain(|_, t| now.saturating_duration_since(*t) < ERRORED_EVERY);
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        map.insert(key, now);
        true
    }

    /// Hand an event to the writer without waiting.
    fn emit(&self, uid: String, kind: EventKind) {
        metrics::counter!("banyan_webhook_events_total", "event" => kind.label()).increment(1);
        let p = Pending {
            uid,
            kind,
            at: now_micros(),
        };
        if self.tx.try_send(p).is_err() {
            dropped("channel_full");
        }
    }

    /// Whether a publisher of `uid` was accepted by this node's ingest and
    /// its stream has not ended since.
    pub fn published_here(&self, uid: &str) -> bool {
        self.live.lock().contains(uid)
    }

    /// Inputs reported connected whose stream is now idle: disconnected.
    fn sweep(&self, state: impl Fn(&str) -> StreamState) {
        let ended: Vec<String> = {
            let mut live = self.live.lock();
            let ended: Vec<String> = live
                .iter()
                .filter(|uid| state(uid) == StreamState::Idle)
                .cloned()
                .collect();
            for uid in &ended {
                live.remove(uid);
            }
            ended
        };
        for uid in ended {
            self.emit(uid, EventKind::Disconnected);
        }
    }
}

fn dropped(reason: &'static str) {
    metrics::counter!("banyan_webhook_events_dropped_total", "reason" => reason).increment(1);
}

fn delivered(result: &'static str) {
    metrics::counter!("banyan_webhook_deliveries_total", "result" => result).increment(1);
}

/// Where the system's CA bundle may be (the first that exists is used;
/// `SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The CA certificates trusted for https targets: the system's bundle and
/// `extra` (`--webhook-ca-file`, which must be readable).
pub fn load_roots(extra: Option<&std::path::Path>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    use anyhow::Context as _;
    let mut roots = Vec::new();
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let system = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file());
    match system.as_ref().map(|p| (p, std::fs::read(p))) {
        Some((p, Ok(pem))) => match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => roots.extend(certs),
            Err(e) => tracing::warn!(path = %p.display(), "unusable CA bundle: {e}"),
        },
        Some((p, Err(e))) => tracing::warn!(path = %p.display(), "unreadable CA bundle: {e}"),
        None => tracing::warn!("no system CA bundle found: https webhooks need --webhook-ca-file"),
    }
    if let Some(path) = extra {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate", path.display());
        roots.extend(certs);
    }
    Ok(roots)
}

/// Trust `roots` for https targets (once, before [`run`]).
pub fn set_roots(webhooks: &Webhooks, roots: Vec<reqwest::Certificate>) {
    let _ = webhooks.roots.set(roots);
}

/// Run the watcher, the writer and the sender until the node stops.
pub async fn run(node: Arc<Context>) {
    let Some(rx) = node.webhooks.rx.lock().take() else {
        return;
    };
    if !node.shared {
        // Alone on this store: any claim is this node's own, from a stop
        // in the middle of a delivery.
        if let Err(e) = node.store.release_webhook_claims().await {
            tracing::warn!("releasing webhook claims: {e}");
        }
    }
    tokio::join!(
        watch(node.clone()),
        write(node.clone(), rx),
        send(node.clone())
    );
}

/// Every 500 ms: streams that ended.
async fn watch(node: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        node.webhooks.sweep(|uid| node.hub.state(uid));
    }
}

/// Put events into the store queue, one at a time.
async fn write(node: Arc<Context>, mut rx: mpsc::Receiver<Pending>) {
    loop {
        let p = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
        };
        let body = payload::body(&p.uid, p.kind, p.at);
        // A store outage is retried for a while; the channel absorbs
        // events meanwhile and drops (counts) what does not fit.
        let mut tries = 0;
        loop {
            match node.store.enqueue_webhook_event(&p.uid, &body, p.at).await {
                Ok(Enqueued::Queued) => {
                    node.store.note_ok();
                    node.webhooks.queued.notify_one();
                    break;
                }
                Ok(Enqueued::NoWebhook) => break,
                Ok(Enqueued::Full) => {
                    dropped("account_queue_full");
                    break;
                }
                Err(e) => {
                    tries += 1;
                    node.store
                        .note_failure("queueing a webhook event", &e.into());
                    if tries >= 30 {
                        dropped("store_error");
                        break;
                    }
                    tokio::select! {
                        _ = node.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

/// Claim due events and deliver them, a batch at a time.
async fn send(node: Arc<Context>) {
    loop {
        let now = now_micros();
        let batch = node
            .store
            .claim_webhook_events(now, now + CLAIM.as_micros() as i64, BATCH)
            .await;
        let busy = match batch {
            Ok(batch) => {
                let n = batch.len();
                futures_util::future::join_all(batch.into_iter().map(|e| deliver(&node, e))).await;
                n > 0
            }
            Err(e) => {
                node.store
                    .note_failure("claiming webhook events", &e.into());
                false
            }
        };
        if let Ok(depth) = node.store.webhook_queue_depth().await {
            metrics::gauge!("banyan_webhook_queue_depth").set(depth as f64);
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = node.webhooks.queued.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The wait before attempt `attempts + 1`.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(0, 16) as u32;
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Deliver one claimed event; then forget it or schedule its retry.
async fn deliver(node: &Context, e: QueuedEvent) {
    let (Some(url), Some(secret)) = (&e.url, &e.secret) else {
        // The webhook was deleted after the event was queued.
        delivered("no_webhook");
        let _ = node.store.remove_webhook_event(&e.id).await;
        return;
    };
    let outcome = post(node, url, secret, &e.body).await;
    let store = &node.store;
    let r = match outcome {
        Ok(()) => {
            delivered("delivered");
            store.remove_webhook_event(&e.id).await
        }
        Err((result, why)) => {
            delivered(result);
            let now = now_micros();
            let attempts = e.attempts + 1;
            let next = now + backoff(e.attempts).as_micros() as i64;
            let age = Duration::from_micros(now.saturating_sub(e.created).max(0) as u64);
            if age >= node.hooks.webhook_retry_for {
                tracing::warn!(account = %e.account_id, attempts, "webhook event dropped after retrying: {why}");
                delivered("expired");
                store.remove_webhook_event(&e.id).await
            } else {
                tracing::info!(account = %e.account_id, attempts, "webhook delivery failed, will retry: {why}");
                store.retry_webhook_event(&e.id, attempts, next).await
            }
        }
    };
    if let Err(e) = r {
        node.store
            .note_failure("updating the webhook queue", &e.into());
    }
}

/// POST `body` to `url`, signed. `Err((result label, reason))`.
async fn post(
    node: &Context,
    url: &str,
    secret: &str,
    body: &str,
) -> Result<(), (&'static str, String)> {
    let t = target::parse(url).map_err(|e| ("refused", e))?;
    let addrs = target::resolve(&t, node.hooks.webhook_allow_private)
        .await
        .map_err(|e| ("refused", e))?;
    // Connect only to the addresses just checked.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(DELIVERY_TIMEOUT)
        .resolve_to_addrs(&t.host, &addrs);
    for root in node.webhooks.roots.get().into_iter().flatten() {
        builder = builder.add_root_certificate(root.clone());
    }
    let client = builder.build().map_err(|e| ("failed", e.to_string()))?;
    let time = now_micros().div_euclid(1_000_000);
    let resp = client
        .post(t.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", concat!("Banyan/", env!("CARGO_PKG_VERSION")))
        .header("webhook-signature", payload::signature(secret, time, body))
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| ("failed", without_url(e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(("failed", format!("answered {status}")))
    }
}

/// A request error's text without the URL (it may carry a secret path).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<Pending>) -> Vec<(String, EventKind)> {
        let mut v = Vec::new();
        while let Ok(p) = rx.try_recv() {
            v.push((p.uid, p.kind));
        }
        v
    }

    #[test]
    fn connected_once_per_broadcast_then_disconnected_when_idle() {
        let w = Webhooks::new();
        let mut rx = w.rx.lock().take().unwrap();
        let t = Instant::now();
        w.observe(IngestEvent::Published { uid: "a".into() }, t);
        // A reconnect within the window is the same broadcast.
        w.observe(IngestEvent::Published { uid: "a".into() }, t);
        w.sweep(|_| StreamState::Reconnecting);
        assert_eq!(drain(&mut rx), vec![("a".into(), EventKind::Connected)]);
        w.sweep(|_| StreamState::Idle);
        w.sweep(|_| StreamState::Idle);
        assert_eq!(drain(&mut rx), vec![("a".into(), EventKind::Disconnected)]);
        w.observe(IngestEvent::Published { uid: "a".into() }, t);
        assert_eq!(drain(&mut rx), vec![("a".into(), EventKind::Connected)]);
    }

    #[test]
    fn errored_is_rate_limited_per_input_and_code() {
        let w = Webhooks::new();
        let mut rx = w.rx.lock().take().unwrap();
        let t = Instant::now();
        let refused = |uid: &str, reason| IngestEvent::Refused {
            uid: uid.into(),
            reason,
        };
        w.observe(refused("a", "disabled"), t);
        w.observe(refused("a", "disabled"), t + Duration::from_secs(1));
        w.observe(refused("a", "busy"), t + Duration::from_secs(1));
        w.observe(refused("b", "disabled"), t + Duration::from_secs(1));
        w.observe(refused("a", "disabled"), t + ERRORED_EVERY);
        let got = drain(&mut rx);
        let disabled = EventKind::Errored(ErrorCode::InputDisabled);
        assert_eq!(
            got,
            vec![
                ("a".into(), disabled),
                ("a".into(), EventKind::Errored(ErrorCode::AlreadyPublishing)),
                ("b".into(), disabled),
                ("a".into(), disabled),
            ]
        );
    }

    #[test]
    fn a_full_channel_drops_instead_of_waiting() {
        let w = Webhooks::new();
        let _rx = w.rx.lock().take().unwrap();
        let t = Instant::now();
        for i in 0..CHANNEL + 10 {
            w.observe(
                IngestEvent::Published {
                    uid: format!("u{i}"),
                },
                t,
            );
        }
        assert_eq!(w.tx.capacity(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
