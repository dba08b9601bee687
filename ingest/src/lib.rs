//! Ingest: protocol termination for publishers and players.
//!
//! Listeners for RTMP, RTMPS and SRT live here. A connection that publishes
//! is turned into hub frames by this crate (FLV tags, MPEG-TS); a connection
//! that plays is handed to `banyan-egress`, which turns hub frames back into
//! protocol bytes. Nothing here knows about the cluster or the store: keys are
//! looked up in the in-memory [`KeyTable`] snapshot.

pub mod admission;
pub mod events;
pub mod flv;
pub mod net;
pub mod proxy_protocol;
pub mod rtmp;
pub mod srt;
pub mod ts;

use std::sync::Arc;

use banyan_relay::access::KeyTable;
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig};

/// What every listener needs from the node.
#[derive(Clone)]
pub struct Context {
    pub hub: Arc<Hub>,
    pub keys: Arc<KeyTable>,
    pub views: Arc<Views>,
    /// Caption channels of the streams published here (ingest writes them).
    pub captions: Arc<banyan_captions::Registry>,
    /// Custom domains' accounts and the failed-attempt limiter
    /// (`Default::default()`: no custom domains, the default limit).
    pub admission: Arc<admission::Admission>,
    /// Where publish outcomes are reported (`Default`: nowhere).
    pub events: events::Events,
}

impl Context {
    /// Ingest on its own, checking keys against `keys`: a hub and view
    /// counts of its own, no custom domains, publish outcomes reported
    /// nowhere (tests and tools; a node builds its context in its root).
    pub fn standalone(keys: Arc<KeyTable>) -> Context {
        Context {
            hub: Hub::new(HubConfig::default()),
            keys,
            views: Views::new(),
            captions: banyan_captions::Registry::new(),
            admission: Default::default(),
            events: Default::default(),
        }
    }
}

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A socket or TLS failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An SRT (libsrt) failure.
    #[error("srt: {0}")]
    Srt(#[from] banyan_srt::SrtError),
}
