//! A live input's `status` as the API shows it, and the record of it in the
//! store: the node whose ingest accepted the publisher writes each change
//! (`connected`, `reconnecting`, `client_disconnect`), so the value survives
//! a restart and every node of a shared store shows it.

use std::collections::HashMap;

use super::Inputs;

/// The longest a status read waits for the store.
const STORE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Statuses that only hold while a publisher is attached somewhere.
const ATTACHED: &[&str] = &["connected", "reconnecting", "reconnected"];

/// What this node last wrote per input it publishes (bounded by the inputs
/// being published here; an entry goes once its stream has ended).
#[derive(Default)]
pub(super) struct Recorded(HashMap<String, &'static str>);

impl Recorded {
    /// Write the status of every input published here that changed since the
    /// last tick. A store that cannot be reached is retried at the next one.
    pub(super) async fn record(&mut self, node: &Inputs) {
        let uids: Vec<String> = node.access.lock().keys().cloned().collect();
        for uid in uids {
            let ours = node.webhooks.published_here(&uid) || self.0.contains_key(&uid);
            if !ours {
                continue;
            }
            let Some(now) = node.status(&uid) else {
                continue;
            };
            if self.0.get(&uid) == Some(&now) {
                continue;
            }
            let write =
                tokio::time::timeout(STORE_WAIT * 4, node.store.set_input_status(&uid, now));
            match write
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
            {
                Ok(()) if ATTACHED.contains(&now) => {
                    self.0.insert(uid, now);
                }
                Ok(()) => {
                    // Ended: nothing more to write until it is published again.
                    self.0.remove(&uid);
                }
                Err(e) => tracing::debug!("recording an input's status: {e}"),
            }
        }
        let known = node.access.lock();
        self.0.retain(|uid, _| known.contains_key(uid));
    }
}

impl Inputs {
    /// The input's `status` (Cloudflare's values, `None` if it never had a
    /// publisher): this node's hub first, else the last one recorded. A lone
    /// node shows an attached status recorded before a restart as
    /// `client_disconnect`, since the publisher cannot have stayed.
    pub async fn input_status(&self, uid: &str) -> Option<String> {
        if let Some(s) = self.status(uid) {
            return Some(s.into());
        }
        // The public `lifecycle` asks too: an unreachable store costs it at
        // most this long, and the answer is then the hub's alone.
        let read = tokio::time::timeout(STORE_WAIT, self.store.input_status(uid)).await;
        let stored = match read {
            Ok(Ok(s)) => s?,
            Ok(Err(e)) => {
                tracing::debug!("reading an input's status: {e}");
                return None;
            }
            Err(_) => return None,
        };
        if !self.clustered && ATTACHED.contains(&stored.as_str()) {
            return Some("client_disconnect".into());
        }
        Some(stored)
    }
}
