//! banyan-captions
