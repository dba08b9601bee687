//! banyan-egress
pub mod flv;
pub mod rtmp;
pub mod hls;
