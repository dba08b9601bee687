//! WHEP playback wired to the node: its settings, and the narrow context the
//! WebRTC subsystem gets (hub, views, the playback gate, shutdown).

use std::sync::Arc;

use banyan_webrtc::{Context, WebRtcConfig};

use crate::config::Settings;
use crate::node::Node;

/// The subsystem's settings from the node's.
pub fn config(settings: &Settings) -> WebRtcConfig {
    WebRtcConfig {
        bind: settings.net.webrtc,
        public_ip: settings.net.webrtc_public_ip,
        max_per_address: settings.limits.max_connections_per_address,
        max_sessions: settings.limits.max_connections,
        ..WebRtcConfig::default()
    }
}

/// What the subsystem may reach of the node.
pub fn context(node: &Arc<Node>) -> Context {
    Context {
        hub: node.hub.clone(),
        views: node.views.clone(),
        access: node.playback.clone(),
        shutdown: node.shutdown.clone(),
    }
}
