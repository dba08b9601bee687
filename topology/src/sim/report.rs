//! What one simulated scenario measured.

use std::fmt;
use std::time::Duration;

/// p50, p95 and max of a set of durations (zero when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spread {
    pub count: usize,
    pub p50: Duration,
    pub p95: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(mut v: Vec<Duration>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Spread {
            count: v.len(),
            p50: at(0.5),
            p95: at(0.95),
            max: v[v.len() - 1],
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_millis();
        write!(
            f,
            "{}/{}/{} ms (n={})",
            ms(self.p50),
            ms(self.p95),
            ms(self.max),
            self.count
        )
    }
}

/// The figures of one run. Equal seeds and scenarios give equal reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub nodes: usize,
    pub viewers: usize,
    pub fanout: usize,
    /// Simulated time.
    pub duration: Duration,
    /// Largest tree height seen (sampled every second) and at the end.
    pub height_max: usize,
    pub height_end: usize,
    /// `ceil(log_fanout(members)) + 1` for the members at the end.
    pub height_bound: usize,
    /// Nodes pulling the stream at the end (the origin not counted).
    pub members_end: usize,
    /// Nodes with more children than the fan-out at the end (admission
    /// races), and whether the links formed one tree.
    pub over_fanout: usize,
    pub is_tree: bool,
    /// Nodes with viewers and no stream at the end.
    pub unserved_end: usize,
    /// Origin upload and the cluster's total node-to-node traffic, Mbit/s,
    /// at the end.
    pub origin_mbps: u64,
    pub fanout_mbps: u64,
    /// From a lost link to pulling again (the core's own measure).
    pub heal: Spread,
    /// Viewers whose node lost the stream while they watched, and the
    /// gaps they saw.
    pub viewers_with_gap: usize,
    pub gap: Spread,
    /// From a node's first viewer to the stream flowing there.
    pub join: Spread,
    pub joins: u64,
    pub failed_asks: u64,
    /// Per node per second.
    pub control_per_node_s: f64,
    pub db_writes_per_node_s: f64,
    pub db_rows_read_per_node_s: f64,
    pub crashed: usize,
}

impl Report {
    /// The header of [`Report::row`].
    pub fn header() -> &'static str {
        "| scenario | nodes | viewers | height max/end (bound) | origin up / fan-out Mbit/s | heal p50/p95/max | viewers with a gap | gap p50/p95/max | join p50/p95/max | ctrl msg/s/node | DB writes/s/node | DB rows read/s/node | unserved at end |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// One Markdown table row.
    pub fn row(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        let s3 = |s: &Spread| format!("{}/{}/{} ms", ms(s.p50), ms(s.p95), ms(s.max));
        format!(
            "| {} | {} | {} | {}/{} ({}) | {} / {} | {} (n={}) | {} ({:.2}%) | {} | {} (n={}) | {:.2} | {:.2} | {:.0} | {} |",
            self.scenario,
            self.nodes,
            self.viewers,
            self.height_max,
            self.height_end,
            self.height_bound,
            self.origin_mbps,
            self.fanout_mbps,
            s3(&self.heal),
            self.heal.count,
            self.viewers_with_gap,
            100.0 * self.viewers_with_gap as f64 / self.viewers.max(1) as f64,
            s3(&self.gap),
            s3(&self.join),
            self.join.count,
            self.control_per_node_s,
            self.db_writes_per_node_s,
            self.db_rows_read_per_node_s,
            self.unserved_end,
        )
    }
}
