//! The node's simulcast outputs: which push clients run, and their status.
//!
//! A reconcile loop (every 500 ms, and at once after an API change) keeps
//! one push client (`banyan_egress::push::run`) per enabled output whose
//! input is live here: started when the input goes live, stopped when it
//! ends, when the output or the input is disabled or deleted. In a cluster
//! only the node holding the stream's origin lease (its broadcaster
//! publishes there, not a pull from another node) runs them, so each output
//! runs once.
//!
//! The list of enabled outputs is read from the store after every change
//! and every 2 s (other nodes' changes); in a database outage the last list
//! stays in force. Status lives in memory on the node that runs the push.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use banyan_egress::push::{self, PushConfig, PushState, PushStatus, Target};
use banyan_relay::StreamState;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::inputs::Inputs;
use crate::store::{OutputRow, Store};

/// Where the platform keeps its trusted roots (Debian, Ubuntu, Alpine).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Period of the reconcile loop.
const TICK: Duration = Duration::from_millis(500);
/// Reload the list from the store every this many ticks.
const RELOAD_TICKS: u32 = 4;

/// Decides whether this node runs the outputs of a stream (cluster).
pub type OriginCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

struct Running {
    /// The destination it was started with (url and key).
    fingerprint: (String, String),
    status: Arc<PushStatus>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What the reconcile loop reads: the enabled outputs, which inputs exist
/// and their streams.
pub struct Context {
    pub store: Store,
    pub inputs: Arc<Inputs>,
    pub hub: Arc<banyan_relay::Hub>,
    pub shutdown: CancellationToken,
}

/// The outputs this node runs.
pub struct Outputs {
    cfg: PushConfig,
    running: Mutex<HashMap<String, Running>>,
    /// Last error of outputs that are not running now.
    last_errors: Mutex<HashMap<String, String>>,
    /// Enabled outputs, as last read from the store.
    rows: Mutex<Vec<OutputRow>>,
    wake: Notify,
    /// In a cluster: set once the cluster is up; until then nothing runs.
    cluster: bool,
    origin: OnceLock<OriginCheck>,
}

/// Trusted roots for rtmps:// outputs: the system bundle, if any, and the
/// operator's extra file.
pub fn roots(extra: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    let mut load = |path: &Path, required: bool| -> anyhow::Result<()> {
        let pem = match std::fs::read(path) {
            Ok(p) => p,
            Err(_) if !required => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        let (added, _) = store.add_parsable_certificates(certs);
        if required && added == 0 {
            anyhow::bail!("{} holds no usable certificate", path.display());
        }
        Ok(())
    };
    load(Path::new(SYSTEM_ROOTS), false)?;
    if let Some(p) = extra {
        load(p, true)?;
    }
    Ok(store)
}

impl Outputs {
    pub fn new(cfg: PushConfig, cluster: bool) -> Arc<Outputs> {
        Arc::new(Outputs {
            cfg,
            running: Mutex::new(HashMap::new()),
            last_errors: Mutex::new(HashMap::new()),
            rows: Mutex::new(Vec::new()),
            wake: Notify::new(),
            cluster,
            origin: OnceLock::new(),
        })
    }

    /// Outputs changed in the store: reconcile now.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// In a cluster: which streams this node is the origin of.
    pub fn set_origin_check(&self, f: OriginCheck) {
        let _ = self.origin.set(f);
    }

    /// The API's `status` (null when not running) and `lastError`.
    pub fn status(&self, uid: &str) -> (Option<&'static str>, Option<String>) {
        if let Some(r) = self.running.lock().get(uid) {
            let state = match r.status.state() {
                PushState::Idle => None,
                s => Some(s.name()),
            };
            return (state, r.status.last_error());
        }
        (None, self.last_errors.lock().get(uid).cloned())
    }

    /// Run until the node shuts down.
    pub async fn run(self: Arc<Self>, node: Context) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            let reload = tokio::select! {
                _ = node.shutdown.cancelled() => break,
                _ = self.wake.notified() => true,
                _ = tick.tick() => { n = n.wrapping_add(1); n.is_multiple_of(RELOAD_TICKS) }
            };
            if reload || n == 1 {
                match node.store.enabled_outputs().await {
                    Ok(rows) => *self.rows.lock() = rows,
                    Err(e) => tracing::debug!("outputs: keeping the last list: {e}"),
                }
            }
            self.reconcile(&node);
        }
        for (_, r) in self.running.lock().drain() {
            r.cancel.cancel();
        }
    }

    /// Whether `input`'s outputs should run on this node now.
    fn live_here(&self, node: &Context, input: &str) -> bool {
        if !node.inputs.is_input(input) || node.hub.state(input) == StreamState::Idle {
            return false;
        }
        if !self.cluster {
            return true;
        }
        self.origin.get().is_some_and(|f| f(input))
    }

    fn reconcile(&self, node: &Context) {
        let rows = self.rows.lock().clone();
        let mut live: HashMap<String, bool> = HashMap::new();
        let mut wanted: HashMap<&str, &OutputRow> = HashMap::new();
        for r in rows.iter().filter(|r| r.enabled) {
            let here = *live
                .entry(r.input_uid.clone())
                .or_insert_with(|| self.live_here(node, &r.input_uid));
            if here {
                wanted.insert(r.uid.as_str(), r);
            }
        }
        let mut running = self.running.lock();
        // Stop what is no longer wanted (or changed, or ended by itself).
        let stale: Vec<String> = running
            .iter()
            .filter(|(uid, run)| {
                run.task.is_finished()
                    || wanted.get(uid.as_str()).is_none_or(|r| {
                        run.fingerprint.0 != r.url || run.fingerprint.1 != r.stream_key
                    })
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            if let Some(run) = running.remove(&uid) {
                run.cancel.cancel();
                if let Some(e) = run.status.last_error() {
                    self.last_errors.lock().insert(uid.clone(), e);
                }
                tracing::info!(output = %uid, "output stopped");
            }
        }
        // Start what is wanted and not running.
        for (uid, r) in wanted {
            if running.contains_key(uid) {
                continue;
            }
            let target = match Target::parse(&r.url, &r.stream_key) {
                Ok(t) => t,
                Err(e) => {
                    self.last_errors
                        .lock()
                        .insert(uid.to_string(), format!("url: {e}"));
                    continue;
                }
            };
            let status = Arc::new(PushStatus::default());
            let cancel = node.shutdown.child_token();
            tracing::info!(output = %uid, input = %r.input_uid, destination = ?target, "output starting");
            let task = tokio::spawn(push::run(
                node.hub.clone(),
                r.input_uid.clone(),
                target,
                self.cfg.clone(),
                status.clone(),
                cancel.clone(),
            ));
            self.last_errors.lock().remove(uid);
            running.insert(
                uid.to_string(),
                Running {
                    fingerprint: (r.url.clone(), r.stream_key.clone()),
                    status,
                    cancel,
                    task,
                },
            );
        }
        // Forget errors of outputs that are gone.
        let known: std::collections::HashSet<&str> = rows.iter().map(|r| r.uid.as_str()).collect();
        self.last_errors
            .lock()
            .retain(|uid, _| known.contains(uid.as_str()));
    }
}
