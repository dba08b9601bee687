//! A fixed-bucket latency histogram in microseconds, shared by many tasks without locks.
//!
//! Buckets: 10 µs wide below 1 ms, 100 µs below 20 ms, 1 ms below 2 s, 10 ms below 20 s,
//! and one overflow bucket. A quantile is reported as its bucket's upper edge.

use std::sync::atomic::{AtomicU64, Ordering};

const B1: u64 = 100; // [0, 1 ms) in 10 µs
const B2: u64 = B1 + 190; // [1, 20 ms) in 100 µs
const B3: u64 = B2 + 1980; // [20 ms, 2 s) in 1 ms
const B4: u64 = B3 + 1800; // [2 s, 20 s) in 10 ms
const BUCKETS: usize = B4 as usize + 1;

fn bucket_of(us: u64) -> usize {
    let b = if us < 1_000 {
        us / 10
    } else if us < 20_000 {
        B1 + (us - 1_000) / 100
    } else if us < 2_000_000 {
        B2 + (us - 20_000) / 1_000
    } else if us < 20_000_000 {
        B3 + (us - 2_000_000) / 10_000
    } else {
        B4
    };
    b as usize
}

/// The upper edge of bucket `b`, in microseconds.
fn upper_edge(b: usize) -> u64 {
    let b = b as u64;
    if b < B1 {
        (b + 1) * 10
    } else if b < B2 {
        1_000 + (b - B1 + 1) * 100
    } else if b < B3 {
        20_000 + (b - B2 + 1) * 1_000
    } else if b < B4 {
        2_000_000 + (b - B3 + 1) * 10_000
    } else {
        u64::MAX
    }
}

/// A concurrent histogram of durations in microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The mean value (0 when empty).
    pub fn mean(&self) -> u64 {
        self.sum.load(Ordering::Relaxed) / self.count().max(1)
    }

    /// The value at quantile `q` (0..=1), as the upper edge of its bucket, capped at the maximum.
    /// 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return upper_edge(i).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut prev = 0;
        for us in (0..25_000_000u64).step_by(997) {
            let b = bucket_of(us);
            assert!(b >= prev && b < BUCKETS);
            assert!(us < upper_edge(b), "{us} not below the edge of bucket {b}");
            if b > 0 {
                assert!(us >= upper_edge(b - 1));
            }
            prev = b;
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), 0);
        for us in 1..=1000u64 {
            h.record(us * 10); // 10 µs .. 10 ms
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.mean(), 5_005);
        let p50 = h.quantile(0.5);
        assert!((5_000..=5_100).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((9_900..=10_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 10_000);
    }
}
