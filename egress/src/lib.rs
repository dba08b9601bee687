//! banyan-egress
