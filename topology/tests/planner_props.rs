//! Property tests of the tree planner: whatever the join, leave and failure
//! sequence and the RTTs, the tree stays a tree within its limits.

use std::time::Duration;

use banyan_topology::{NodeId, PlanError, RttTable, Tree};
use proptest::prelude::*;

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i:03}"))
}

fn rtts(n: usize, seed: &[u16]) -> RttTable {
    let mut t = RttTable::new();
    let mut k = 0;
    for a in 0..n {
        for b in (a + 1)..n {
            let ms = seed.get(k % seed.len().max(1)).copied().unwrap_or(1) as u64 % 200;
            t.set(&node(a), &node(b), Duration::from_millis(ms + 1));
            k += 1;
        }
    }
    t
}

/// ceil(log_f(n)) computed exactly with integers.
fn ceil_log(f: usize, n: usize) -> usize {
    let mut d = 0;
    let mut cap = 1usize;
    while cap < n {
        cap = cap.saturating_mul(f);
        d += 1;
    }
    d
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Leave(usize),
    Fail(usize),
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..max).prop_map(Op::Join),
        1 => (1..max).prop_map(Op::Leave),
        1 => (1..max).prop_map(Op::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Greedy joins only: every joiner placed, limits hold, no loop, and the
    /// height stays within ceil(log_fanout(n)) + 1.
    #[test]
    fn joins_make_a_shallow_tree(
        fanout in 2usize..6,
        count in 1usize..120,
        seed in proptest::collection::vec(any::<u16>(), 1..64),
    ) {
        let table = rtts(count + 1, &seed);
        let mut tree = Tree::new(node(0), fanout);
        for i in 1..=count {
            let p = tree.join(&node(i), &table).unwrap();
            prop_assert!(tree.contains(&node(i)));
            prop_assert_eq!(tree.parent(&node(i)), Some(&p.parent));
            prop_assert_eq!(p.path.first(), Some(&node(0)));
            prop_assert_eq!(p.path.last(), Some(&p.parent));
            // The walk is the joiner's path from the origin.
            prop_assert_eq!(p.path.len(), tree.depth(&node(i)).unwrap());
        }
        prop_assert_eq!(tree.len(), count + 1);
        tree.check().map_err(TestCaseError::fail)?;
        let n = tree.len();
        prop_assert!(tree.height() <= ceil_log(fanout, n) + 1,
            "height {} for {} nodes at fan-out {}", tree.height(), n, fanout);
    }

    /// Any mix of joins, leaves and failures: invariants hold after every
    /// step and every live node still reaches the origin.
    #[test]
    fn churn_keeps_a_valid_tree(
        fanout in 1usize..5,
        ops in proptest::collection::vec(op(40), 1..150),
        seed in proptest::collection::vec(any::<u16>(), 1..64),
    ) {
        let table = rtts(40, &seed);
        let mut tree = Tree::new(node(0), fanout);
        let mut live: std::collections::BTreeSet<usize> = [0].into();
        for op in ops {
            match op {
                Op::Join(i) => {
                    tree.join(&node(i), &table).unwrap();
                    live.insert(i);
                }
                Op::Leave(i) | Op::Fail(i) => {
                    let before: Vec<NodeId> = tree.children(&node(i)).cloned().collect();
                    let r = if matches!(op, Op::Leave(_)) {
                        tree.leave(&node(i), &table)
                    } else {
                        tree.node_failed(&node(i), &table)
                    };
                    if live.remove(&i) {
                        let moves = r.unwrap();
                        // Exactly the orphans moved, each once, none under itself.
                        let mut moved: Vec<NodeId> = moves.iter().map(|m| m.0.clone()).collect();
                        moved.sort();
                        prop_assert_eq!(moved, before);
                        for (orphan, parent) in &moves {
                            prop_assert_ne!(orphan, parent);
                            prop_assert_eq!(tree.parent(orphan), Some(parent));
                        }
                    } else {
                        prop_assert_eq!(r, Err(PlanError::NotMember(node(i))));
                    }
                }
            }
            tree.check().map_err(TestCaseError::fail)?;
            prop_assert_eq!(tree.len(), live.len());
            for i in &live {
                prop_assert!(tree.depth(&node(*i)).is_some(), "{} unreachable", i);
            }
        }
    }

    /// A failed middle node's children rejoin and a later join still finds
    /// room; the origin is never re-placed.
    #[test]
    fn origin_cannot_leave(fanout in 1usize..4) {
        let mut tree = Tree::new(node(0), fanout);
        prop_assert_eq!(tree.leave(&node(0), &RttTable::new()), Err(PlanError::IsOrigin(node(0))));
        prop_assert_eq!(tree.join(&node(0), &RttTable::new()), Err(PlanError::IsOrigin(node(0))));
    }
}

/// With RTTs, a full origin sends the joiner to the nearest child among the
/// equally shallow ones.
#[test]
fn nearest_child_wins_among_equals() {
    let mut tree = Tree::new(node(0), 3);
    let mut table = RttTable::new();
    for (i, ms) in [(1, 40), (2, 3), (3, 90)] {
        table.set(&node(9), &node(i), Duration::from_millis(ms));
        tree.join(&node(i), &table).unwrap();
    }
    assert_eq!(tree.join(&node(9), &table).unwrap().parent, node(2));
}
