//! What ingest tells the node about publishers, without knowing what the
//! node does with it (webhooks, logs): a publish accepted, a publish
//! refused for a known live input, a publish broken by malformed input.
//!
//! The sink is a plain callback that must not block: the node's one puts
//! the event in a bounded channel and drops it when that is full.

use std::sync::Arc;

/// One thing that happened to a publisher of live input `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEvent {
    /// A publisher was accepted and feeds the stream.
    Published { uid: String },
    /// A publish to a known live input was refused (`reason`: `disabled`,
    /// `busy`, `wrong_key`, `domain_account`).
    Refused { uid: String, reason: &'static str },
    /// A publisher's session ended on malformed input (`reason`:
    /// `protocol`, `damaged_ts`).
    Broken { uid: String, reason: &'static str },
}

/// Where ingest reports [`IngestEvent`]s (`Default`: nowhere).
#[derive(Clone, Default)]
pub struct Events(Option<Arc<dyn Fn(IngestEvent) + Send + Sync>>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events(sink)"
        } else {
            "Events(none)"
        })
    }
}

impl Events {
    /// Report to `sink`, which must return at once.
    pub fn new(sink: impl Fn(IngestEvent) + Send + Sync + 'static) -> Events {
        Events(Some(Arc::new(sink)))
    }

    pub fn report(&self, event: IngestEvent) {
        if let Some(sink) = &self.0 {
            sink(event);
        }
    }
}
