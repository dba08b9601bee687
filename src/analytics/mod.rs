//! Viewing analytics: minutes viewed per account, live input, creator,
//! protocol and minute, recorded in batches and answered over GraphQL.
//!
//! * [`flush`]: a task drains [`banyan_relay::views::Views`] every
//!   `--analytics-flush` seconds (default 10), attributes each stream's
//!   delivered media time to the live input's account and its
//!   `defaultCreator` at that moment, buckets it by UTC minute and writes one
//!   transaction per flush. A crash (kill -9, power loss) loses at most the
//!   media time accrued since the last flush, so at most one flush interval;
//!   a graceful shutdown (SIGTERM, Ctrl-C) flushes first. Nothing is written
//!   per frame or per request.
//! * [`db`]: the tables (`view_minutes`, the daily rollup `view_days` that
//!   answers day-aligned queries, and the monthly one of [`months`] that
//!   answers the whole months of a range) and the grouped query, in SQL
//!   that runs unchanged on SQLite and PostgreSQL.
//! * [`graphql`]: `POST /client/v4/graphql`, the
//!   `viewer.accounts.streamMinutesViewedAdaptiveGroups` query.
//! * [`ingest_stats`]: per-stream ingest bitrate and frame-rate gauges.

#[cfg(test)]
mod bench;
pub mod cost;
pub mod db;
pub mod filter;
pub mod flush;
pub mod graphql;
#[cfg(test)]
mod in_process;
pub mod ingest_stats;
pub mod months;

pub use flush::run;
pub use graphql::handler;

use std::sync::Arc;
use std::time::Duration;

/// What analytics uses: the views it drains, the store it writes to and
/// queries, the token check of its GraphQL endpoint.
pub struct Context {
    pub store: crate::store::Store,
    pub views: Arc<banyan_relay::views::Views>,
    pub auth: Arc<crate::auth::Auth>,
    /// `--analytics-flush`.
    pub flush: Duration,
    pub shutdown: tokio_util::sync::CancellationToken,
}
