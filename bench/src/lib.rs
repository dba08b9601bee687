//! Banyan's benchmark tools.
