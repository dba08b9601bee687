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

    /// The origin never joins its own tree.
    #[test]
    fn origin_cannot_join(fanout in 1usize..4) {
        let mut tree = Tree::new(node(0), fanout);
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A full member's admission, from the stored edges of its view, sends
    /// a joiner where the planner's rule does.
    #[test]
    fn admission_follows_the_planner(
        fanout in 2usize..5,
        count in 1usize..80,
        seed in proptest::collection::vec(any::<u16>(), 1..64),
    ) {
        use banyan_topology::member::{
            Admit, ClusterNode, Event, LocalState, Member, Snapshot, Timing,
        };
        use std::collections::BTreeSet;
        use std::sync::Arc;

        let table = rtts(count + 2, &seed);
        let mut tree = Tree::new(node(0), fanout);
        for i in 1..=count {
            tree.join(&node(i), &table).unwrap();
        }
        let joiner = node(count + 1);
        let mut snap = Snapshot::default();
        for i in 0..=count + 1 {
            snap.nodes.insert(node(i), Member {
                region: format!("r{i}"),
                link: ([127, 0, 0, 1], 9000 + i as u16).into(),
                http: String::new(),
            });
        }
        let edges = snap.edges.entry("s".into()).or_default();
        for (c, p) in tree.edges() {
            edges.insert(c.clone(), p.clone());
        }
        snap.rtts = table.clone();
        let mut origin = ClusterNode::new(node(0), fanout, Timing::default());
        let now = Duration::from_secs(1);
        origin.handle(now, Event::SyncDue);
        origin.handle(now, Event::Synced {
            snapshot: Arc::new(snap),
            taken: vec![],
            linked: BTreeSet::new(),
        });
        let kids: Vec<NodeId> = tree.children(&node(0)).cloned().collect();
        let got = origin.admit(now, "s", &joiner, &kids, LocalState::Live);
        match tree.decide(&node(0), &joiner, &table) {
            banyan_topology::Decision::Accept => prop_assert_eq!(got, Admit::Accept),
            banyan_topology::Decision::Redirect(c) => match got {
                Admit::Redirect { node, .. } => prop_assert_eq!(node, c),
                other => prop_assert!(false, "expected a redirect to {}, got {:?}", c, other),
            },
        }
    }
}
