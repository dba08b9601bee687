//! banyan-egress
pub mod flv;
pub mod hls;
pub mod push;
pub mod rtmp;
pub mod srt;
pub mod ts;
