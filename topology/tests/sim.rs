//! The cluster simulator at a small size: the member core, run for a
//! cluster of nodes through every scenario, keeps its promises.

use std::time::Duration;

use banyan_topology::sim::{run, Report, Scenario, SCENARIOS};
use banyan_topology::{NodeId, RttTable, Tree};

const NODES: usize = 80;
const VIEWERS: usize = 4000;

fn scenario(name: &str, seed: u64) -> Report {
    let s = Scenario::named(name, NODES, VIEWERS, seed).expect("a known scenario");
    run(&s)
}

/// What holds in every scenario once its faults are over.
fn check_common(r: &Report) {
    eprintln!("{}", r.row());
    assert_eq!(
        r.unserved_end, 0,
        "every node with viewers is served: {r:?}"
    );
    assert!(r.is_tree, "the links form one tree: {r:?}");
    assert_eq!(
        r.over_fanout, 0,
        "no node serves more than the fan-out: {r:?}"
    );
    assert!(
        r.height_end <= r.height_bound + 1,
        "height {} within one of the bound {}",
        r.height_end,
        r.height_bound
    );
    // The planner's walk under a perfect view, for as many members.
    let mut reference = Tree::new(NodeId::new("o"), r.fanout);
    for i in 0..r.members_end {
        reference
            .join(&NodeId::new(format!("m{i}")), &RttTable::new())
            .unwrap();
    }
    assert!(
        r.height_end <= reference.height() + 1,
        "height {} within one of the planner's {}",
        r.height_end,
        reference.height()
    );
    assert!(
        r.members_end >= NODES / 2,
        "most nodes pull the stream: {r:?}"
    );
    assert!(
        r.origin_mbps <= 4 * 6,
        "the origin uploads to at most fan-out children"
    );
    assert!(
        r.join.count > 0 && r.join.p95 < Duration::from_secs(2),
        "{r:?}"
    );
    assert!(r.db_writes_per_node_s < 10.0, "{r:?}");
}

#[test]
fn every_scenario_serves_every_viewer_node_within_bounds() {
    for name in SCENARIOS {
        let r = scenario(name, 7);
        check_common(&r);
        match *name {
            "steady" => {
                assert_eq!(r.viewers_with_gap, 0, "no fault, no gap: {r:?}");
                assert_eq!(r.heal.count, 0);
            }
            "crashes" => {
                assert!(r.crashed >= 2, "{r:?}");
                assert!(r.heal.count > 0, "orphans healed: {r:?}");
                assert!(r.heal.max < Duration::from_secs(1), "heal: {}", r.heal);
                assert!(r.gap.max < Duration::from_secs(2), "gap: {}", r.gap);
            }
            "partition" => {
                // The cut region cannot reach the origin until the cut ends;
                // then it heals.
                assert!(r.viewers_with_gap > 0, "{r:?}");
                assert!(r.heal.count > 0, "{r:?}");
            }
            // Streams keep flowing while the database is away or slow.
            "db-outage" | "slow-db" => assert_eq!(r.viewers_with_gap, 0, "{r:?}"),
            _ => {}
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = scenario("crashes", 3);
    let b = scenario("crashes", 3);
    assert_eq!(a, b);
    let c = scenario("crashes", 4);
    assert_ne!(a, c, "another seed, another run");
}
