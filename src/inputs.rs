//! The live inputs as this node knows them: the key table kept in step with
//! the store (`keysync`), and each input's `status` (`status`).
//!
//! [`Inputs`] is one of the parts the composition root (`serve`) builds and
//! hands to the subsystems that need it: the API changes inputs through it,
//! analytics, outputs, the metrics page and the cluster read which inputs
//! exist and their state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use banyan_relay::access::KeyTable;
use banyan_relay::{Hub, StreamState};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub mod keysync;
mod status;

/// What [`Inputs`] reads and changes.
pub struct Parts {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub keys: Arc<KeyTable>,
    pub playback: Arc<crate::playback::Gate>,
    pub captions: Arc<banyan_captions::Registry>,
    /// Which inputs are published on this node (for the status record).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// A cluster member: a status recorded by another node may still hold.
    pub clustered: bool,
}

/// The live inputs of the store, as the key table has them.
pub struct Inputs {
    store: Store,
    hub: Arc<Hub>,
    keys: Arc<KeyTable>,
    playback: Arc<crate::playback::Gate>,
    captions: Arc<banyan_captions::Registry>,
    webhooks: Arc<crate::webhooks::Webhooks>,
    clustered: bool,
    /// Every live input as the key table has it (see `keysync`).
    access: Mutex<HashMap<String, keysync::Known>>,
    /// Inputs seen connected since this node started (for `status`).
    seen_live: Mutex<HashSet<String>>,
    /// Held while the key table changes; the marks of the shared-store
    /// refresh.
    rebuild: tokio::sync::Mutex<keysync::Marks>,
}

impl Inputs {
    pub fn new(p: Parts) -> Arc<Inputs> {
        Arc::new(Inputs {
            store: p.store,
            hub: p.hub,
            keys: p.keys,
            playback: p.playback,
            captions: p.captions,
            webhooks: p.webhooks,
            clustered: p.clustered,
            access: Mutex::new(HashMap::new()),
            seen_live: Mutex::new(HashSet::new()),
            rebuild: tokio::sync::Mutex::new(keysync::Marks::default()),
        })
    }

    /// The uids of every live input (from the last rebuild).
    pub fn input_uids(&self) -> Vec<String> {
        self.access.lock().keys().cloned().collect()
    }

    /// Whether `uid` is a live input.
    pub fn is_input(&self, uid: &str) -> bool {
        self.access.lock().contains_key(uid)
    }

    /// The `status` field of a live input, from this node's hub.
    pub fn status(&self, uid: &str) -> Option<&'static str> {
        match self.hub.state(uid) {
            StreamState::Live => {
                self.seen_live.lock().insert(uid.to_string());
                Some("connected")
            }
            StreamState::Reconnecting => {
                self.seen_live.lock().insert(uid.to_string());
                Some("reconnecting")
            }
            StreamState::Idle => self
                .seen_live
                .lock()
                .contains(uid)
                .then_some("client_disconnect"),
        }
    }

    /// Forget an input's connection history (deletion).
    pub fn forget(&self, uid: &str) {
        self.seen_live.lock().remove(uid);
    }

    /// Note which inputs have been connected, so a short session between two
    /// API calls still shows as `client_disconnect` afterwards, and record
    /// the statuses of inputs published here.
    pub async fn watch_status(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recorded = status::Recorded::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let uids = self.input_uids();
            for uid in uids {
                if self.hub.state(&uid) != StreamState::Idle {
                    self.seen_live.lock().insert(uid);
                }
            }
            recorded.record(&self).await;
        }
    }
}
