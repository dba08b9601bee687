//! banyan-srt
