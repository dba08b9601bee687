//! The flusher: drain the viewer counters, attribute, bucket, write.
//!
//! [`Batcher`] is the pure part (no clock, no database): it takes drained
//! `(uid, protocol, seconds)` with the wall-clock interval they accrued in,
//! splits them over the UTC minutes of that interval and keeps the result
//! until a write succeeds. [`run`] is the driver.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banyan_relay::views::Protocol;

use super::db::{self, ViewKey};
use super::Context;

/// Buckets kept while the database is unreachable; beyond this, new time is
/// dropped (and counted).
pub const MAX_PENDING: usize = 200_000;

/// Longest interval one drain is spread over (the first drain, or a stall).
const MAX_SPAN_MS: i64 = 120_000;

/// Milliseconds of viewing per (uid, protocol, minute), not yet attributed.
#[derive(Debug, Default)]
pub struct Batcher {
    pending: HashMap<(String, Protocol, i64), i64>,
    /// Milliseconds dropped because `pending` was full.
    pub dropped_ms: u64,
}

impl Batcher {
    /// Add time drained at `now_ms` (Unix ms) that accrued since `since_ms`.
    /// Each entry is split over the minutes of the interval in proportion to
    /// their overlap.
    pub fn add(&mut self, drained: &[(String, Protocol, f64)], since_ms: i64, now_ms: i64) {
        let since = since_ms.clamp(now_ms - MAX_SPAN_MS, now_ms);
        for (uid, protocol, seconds) in drained {
            if !seconds.is_finite() || *seconds <= 0.0 {
                continue;
            }
            let total = (*seconds * 1000.0).round() as i64;
            if total == 0 {
                continue;
            }
            let span = now_ms - since;
            if span <= 0 {
                self.put(uid, *protocol, now_ms.div_euclid(60_000), total);
                continue;
            }
            let mut left = total;
            let mut t = since;
            while t < now_ms {
                let minute = t.div_euclid(60_000);
                let end = ((minute + 1) * 60_000).min(now_ms);
                let part = if end == now_ms {
                    left
                } else {
                    // Widened: total * span fits easily, but stay exact.
                    (i128::from(total) * i128::from(end - t) / i128::from(span)) as i64
                };
                if part > 0 {
                    self.put(uid, *protocol, minute, part);
                }
                left -= part;
                t = end;
            }
        }
    }

    fn put(&mut self, uid: &str, protocol: Protocol, minute: i64, ms: i64) {
        let k = (uid.to_string(), protocol, minute);
        if let Some(v) = self.pending.get_mut(&k) {
            *v += ms;
        } else if self.pending.len() < MAX_PENDING {
            self.pending.insert(k, ms);
        } else {
            self.dropped_ms += ms as u64;
            metrics::counter!("banyan_analytics_dropped_ms_total", "reason" => "backlog")
                .increment(ms as u64);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The distinct uids waiting.
    pub fn uids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pending.keys().map(|(u, _, _)| u.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Attribute the pending time with `owners` (uid → (account, creator)).
    /// Time of inputs without an owner (deleted) is dropped and counted.
    pub fn attribute(&self, owners: &HashMap<String, (String, String)>) -> HashMap<ViewKey, i64> {
        let mut out = HashMap::with_capacity(self.pending.len());
        for ((uid, protocol, minute), ms) in &self.pending {
            match owners.get(uid) {
                Some((account, creator)) => {
                    *out.entry(ViewKey {
                        account_id: account.clone(),
                        uid: uid.clone(),
                        creator: creator.clone(),
                        protocol: protocol.as_str(),
                        minute: *minute,
                    })
                    .or_default() += ms;
                }
                None => {
                    metrics::counter!("banyan_analytics_dropped_ms_total", "reason" => "unknown_input")
                        .increment(*ms as u64);
                }
            }
        }
        out
    }

    /// Forget what was written.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

fn now_ms() -> i64 {
    crate::store::now_micros() / 1000
}

/// Drain once and write everything pending. On a database error the time
/// stays pending for the next flush.
pub async fn flush_once(node: &Context, batcher: &mut Batcher, since_ms: &mut i64) {
    let now = now_ms();
    let drained = node.views.drain();
    batcher.add(&drained, *since_ms, now);
    *since_ms = now;
    if batcher.is_empty() {
        return;
    }
    let started = Instant::now();
    let pool = node.store.pool();
    let result = async {
        let owners = db::owners(pool, &batcher.uids()).await?;
        let batch = batcher.attribute(&owners);
        db::record(pool, &batch).await?;
        Ok::<usize, sqlx::Error>(batch.len())
    }
    .await;
    metrics::histogram!("banyan_analytics_flush_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(rows) => {
            node.store.note_ok();
            batcher.clear();
            metrics::counter!("banyan_analytics_flushes_total", "result" => "ok").increment(1);
            metrics::counter!("banyan_analytics_rows_total").increment(rows as u64);
            tracing::debug!(rows, "analytics flushed");
        }
        Err(e) => {
            metrics::counter!("banyan_analytics_flushes_total", "result" => "error").increment(1);
            node.store.note_failure(
                "analytics flush (kept for the next one)",
                &anyhow::Error::from(e),
            );
        }
    }
}

/// Flush every `--analytics-flush` period until shutdown, then once more.
pub async fn run(node: Arc<Context>) {
    let period = node.flush;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batcher = Batcher::default();
    let mut since = now_ms();
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => break,
            _ = tick.tick() => flush_once(&node, &mut batcher, &mut since).await,
        }
    }
    // Let sessions that are closing account their last frames.
    tokio::time::sleep(Duration::from_millis(200)).await;
    flush_once(&node, &mut batcher, &mut since).await;
    tracing::info!("analytics flushed for shutdown");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_over_minutes_and_keeps_totals() {
        let mut b = Batcher::default();
        // 10 s of accrual from 55 s to 65 s past a minute: half in each.
        let m = 29_000_000i64;
        b.add(
            &[("u".into(), Protocol::Hls, 10.0)],
            m * 60_000 + 55_000,
            m * 60_000 + 65_000,
        );
        assert_eq!(b.pending[&("u".into(), Protocol::Hls, m)], 5000);
        assert_eq!(b.pending[&("u".into(), Protocol::Hls, m + 1)], 5000);
        // Junk is ignored; a huge span is clamped to two minutes.
        b.add(
            &[
                ("u".into(), Protocol::Rtmp, f64::NAN),
                ("u".into(), Protocol::Rtmp, -1.0),
                ("v".into(), Protocol::Srt, 3.0),
            ],
            0,
            m * 60_000,
        );
        let srt: i64 = b
            .pending
            .iter()
            .filter(|(k, _)| k.0 == "v")
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(srt, 3000);
        assert_eq!(b.uids(), vec!["u", "v"]);
        let mut owners = HashMap::new();
        owners.insert("u".to_string(), ("acct".to_string(), "alice".to_string()));
        let batch = b.attribute(&owners);
        assert_eq!(batch.values().sum::<i64>(), 10_000, "v has no owner");
        assert!(batch
            .keys()
            .all(|k| k.creator == "alice" && k.protocol == "hls"));
    }

    #[test]
    fn backlog_is_bounded() {
        let mut b = Batcher::default();
        for i in 0..(MAX_PENDING as i64 + 10) {
            b.put("u", Protocol::Rtmp, i, 1);
        }
        assert_eq!(b.pending.len(), MAX_PENDING);
        assert_eq!(b.dropped_ms, 10);
    }
}
