//! The WebRTC (WHEP and WHIP) subsystem's settings from the node's; its context is
//! built by the root (`serve::Parts::webrtc_context`).

use banyan_webrtc::WebRtcConfig;

use crate::config::Settings;

/// The subsystem's settings from the node's.
pub fn config(settings: &Settings) -> WebRtcConfig {
    WebRtcConfig {
        bind: settings.net.webrtc,
        public_ip: settings.net.webrtc_public_ip,
        max_per_address: settings.limits.max_connections_per_address,
        max_sessions: settings.limits.max_webrtc_sessions,
        ..WebRtcConfig::default()
    }
}
