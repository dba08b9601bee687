//! A deterministic simulator of a whole cluster: the same
//! [`ClusterNode`](crate::member::ClusterNode) core as production, for many
//! nodes, in virtual time with a seeded RNG.
//!
//! It models regions with RTTs, viewers arriving on a premiere curve (a
//! lobby, a spike at the start, a long tail) and leaving after heavy-tailed
//! sessions, node crashes, a partition between one region and the rest
//! (the database lives with the rest), database outages and slow writes.
//! Links carry no media: a node is served while its chain of pulls reaches
//! the origin through live, unpartitioned nodes; a lost link is noticed
//! after the link idle timeout, as in production.
//!
//! [`run`] returns a [`Report`]; the same scenario and seed give the same
//! report.

mod report;
mod store;
mod world;

use std::time::Duration;

pub use report::{Report, Spread};

use crate::NodeId;

/// A window of simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
}

impl Window {
    pub fn new(from_s: u64, to_s: u64) -> Window {
        Window {
            from: Duration::from_secs(from_s),
            to: Duration::from_secs(to_s),
        }
    }

    pub fn contains(&self, t: Duration) -> bool {
        self.from <= t && t < self.to
    }
}

/// The faults of a scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Non-origin nodes that crash, at random times within `crash_window`.
    pub crashes: usize,
    pub crash_window: Option<Window>,
    /// Region (index) cut off from the others and from the database.
    pub partition: Option<(usize, Window)>,
    /// The database refuses every round.
    pub db_outage: Option<Window>,
    /// Database statements take `factor` times longer.
    pub slow_db: Option<(Window, u32)>,
}

/// One simulated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub nodes: usize,
    pub viewers: usize,
    pub fanout: usize,
    pub duration: Duration,
    /// Region names with their share of nodes and viewers.
    pub regions: Vec<(String, u32)>,
    /// RTT between regions, by index (symmetric).
    pub region_rtt: Vec<Vec<Duration>>,
    pub bitrate_kbps: u64,
    /// When the premiere starts (the spike of arrivals).
    pub premiere_at: Duration,
    /// One database statement.
    pub db_latency: Duration,
    /// How often the store rebuilds the snapshot it serves.
    pub snapshot_every: Duration,
    pub faults: Faults,
}

/// The scenarios [`Scenario::named`] knows.
pub const SCENARIOS: &[&str] = &["steady", "crashes", "partition", "db-outage", "slow-db"];

impl Scenario {
    /// Four regions, a premiere at 5 s, no faults, 60 s.
    pub fn steady(nodes: usize, viewers: usize, seed: u64) -> Scenario {
        let ms = Duration::from_millis;
        let rtt = [
            [0, 80, 140, 230],
            [80, 0, 65, 200],
            [140, 65, 0, 120],
            [230, 200, 120, 0],
        ];
        Scenario {
            name: "steady".into(),
            seed,
            nodes: nodes.max(2),
            viewers,
            fanout: 4,
            duration: Duration::from_secs(60),
            regions: vec![
                ("eu".into(), 35),
                ("us-east".into(), 30),
                ("us-west".into(), 20),
                ("ap".into(), 15),
            ],
            region_rtt: rtt
                .iter()
                .map(|r| r.iter().map(|x| ms(*x)).collect())
                .collect(),
            bitrate_kbps: 6000,
            premiere_at: Duration::from_secs(5),
            db_latency: ms(2),
            snapshot_every: ms(50),
            faults: Faults::default(),
        }
    }

    /// A scenario of [`SCENARIOS`] by name.
    pub fn named(name: &str, nodes: usize, viewers: usize, seed: u64) -> Option<Scenario> {
        let mut s = Scenario::steady(nodes, viewers, seed);
        s.name = name.into();
        match name {
            "steady" => {}
            "crashes" => {
                s.faults.crashes = (nodes / 20).max(2);
                s.faults.crash_window = Some(Window::new(20, 40));
            }
            "partition" => s.faults.partition = Some((3, Window::new(20, 30))),
            "db-outage" => s.faults.db_outage = Some(Window::new(20, 30)),
            "slow-db" => s.faults.slow_db = Some((Window::new(20, 40), 200)),
            _ => return None,
        }
        Some(s)
    }
}

/// Run a scenario.
pub fn run(s: &Scenario) -> Report {
    world::World::new(s).run()
}

/// The stream every viewer watches.
pub(crate) const UID: &str = "premiere";

pub(crate) fn name(i: u32) -> NodeId {
    NodeId::new(format!("n{i:05}"))
}

pub(crate) fn index(n: &NodeId) -> Option<u32> {
    n.as_str().strip_prefix('n')?.parse().ok()
}
