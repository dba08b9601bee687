//! banyan-egress
pub mod flv;
pub mod rtmp;
