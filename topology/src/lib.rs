//! banyan-topology
