use std::net::SocketAddr;

use super::*;

fn n(s: &str) -> NodeId {
    NodeId::from(s)
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn member(port: u16) -> Member {
    Member {
        region: "r".into(),
        link: SocketAddr::from(([127, 0, 0, 1], port)),
        http: String::new(),
    }
}

/// Members a..e, `o` the live origin of "s", with the given edges.
fn snapshot(edges: &[(&str, &str)]) -> Arc<Snapshot> {
    let mut s = Snapshot::default();
    for (i, x) in ["o", "a", "b", "c", "d", "e", "me"].iter().enumerate() {
        s.nodes.insert(n(x), member(9000 + i as u16));
    }
    s.origins.insert(
        "s".into(),
        Origin {
            node: n("o"),
            live: true,
        },
    );
    s.edges.insert(
        "s".into(),
        edges.iter().map(|(c, p)| (n(c), n(p))).collect(),
    );
    Arc::new(s)
}

fn synced(node: &mut ClusterNode, now: Duration, snap: Arc<Snapshot>) -> Vec<Action> {
    node.handle(now, Event::SyncDue);
    node.handle(
        now,
        Event::Synced {
            snapshot: snap,
            taken: vec![],
            linked: BTreeSet::new(),
        },
    )
}

fn viewers(on: bool) -> Event {
    Event::Local(vec![Local {
        uid: "s".into(),
        state: if on {
            LocalState::Idle
        } else {
            LocalState::Live
        },
        viewers: on,
        subscribers: on,
        downstream: 0,
    }])
}

fn ask_of(actions: &[Action]) -> Option<(u64, NodeId)> {
    actions.iter().find_map(|a| match a {
        Action::Ask { attempt, node, .. } => Some((*attempt, node.clone())),
        _ => None,
    })
}

#[test]
fn joins_through_redirects_and_heals_under_the_nearest_live_ancestor() {
    let mut me = ClusterNode::new(n("me"), 2, Timing::default());
    synced(
        &mut me,
        ms(0),
        snapshot(&[("a", "o"), ("b", "o"), ("c", "a")]),
    );
    let out = me.handle(ms(10), viewers(true));
    let (attempt, at) = ask_of(&out).expect("asks the origin");
    assert_eq!(at, n("o"));
    assert!(me.pulling("s"));
    // A late answer to another attempt is ignored.
    let stale = me.handle(
        ms(11),
        Event::Answer {
            uid: "s".into(),
            attempt: attempt + 7,
            answer: Answer::Accepted,
        },
    );
    assert!(stale.is_empty());
    let out = me.handle(
        ms(12),
        Event::Answer {
            uid: "s".into(),
            attempt,
            answer: Answer::Redirect {
                node: n("a"),
                link: None,
            },
        },
    );
    assert_eq!(ask_of(&out), Some((attempt, n("a"))));
    let out = me.handle(
        ms(13),
        Event::Answer {
            uid: "s".into(),
            attempt,
            answer: Answer::Redirect {
                node: n("c"),
                link: None,
            },
        },
    );
    assert_eq!(ask_of(&out), Some((attempt, n("c"))));
    let out = me.handle(
        ms(14),
        Event::Answer {
            uid: "s".into(),
            attempt,
            answer: Answer::Accepted,
        },
    );
    assert!(out.contains(&Action::StoreEdge {
        uid: "s".into(),
        parent: n("c")
    }));
    assert_eq!(me.parent("s"), Some(&n("c")));

    // c's link is lost: ask c's parent a, not the origin.
    synced(
        &mut me,
        ms(500),
        snapshot(&[("a", "o"), ("b", "o"), ("c", "a"), ("me", "c")]),
    );
    let out = me.handle(
        ms(600),
        Event::PullEnded {
            uid: "s".into(),
            attempt,
            lost: Some("idle".into()),
        },
    );
    let (heal, at) = ask_of(&out).expect("heals at once");
    assert_eq!(at, n("a"));
    // a fails: the origin next, after the retry wait.
    let out = me.handle(
        ms(700),
        Event::Answer {
            uid: "s".into(),
            attempt: heal,
            answer: Answer::Failed("down".into()),
        },
    );
    assert_eq!(ask_of(&out), None);
    assert!(out.contains(&Action::TickAt(ms(800))));
    let out = me.handle(ms(800), Event::Tick);
    let (heal, at) = ask_of(&out).expect("asks the origin");
    assert_eq!(at, n("o"));
    // Redirected to the lost parent: the origin is asked again in a
    // moment (its link to c closes soon), three times, then the join
    // starts over.
    let to_c = || Event::Answer {
        uid: "s".into(),
        attempt: heal,
        answer: Answer::Redirect {
            node: n("c"),
            link: None,
        },
    };
    for k in 0..3u64 {
        let t = ms(801 + 100 * k);
        assert_eq!(me.handle(t, to_c()), [Action::TickAt(t + ms(100))]);
        let out = me.handle(t + ms(100), Event::Tick);
        assert_eq!(ask_of(&out), Some((heal, n("o"))));
    }
    let out = me.handle(ms(1101), to_c());
    assert!(out.iter().any(|a| matches!(a, Action::Note(Note::JoinFailed { why, .. }) if why.contains("lost moments ago"))));
    let out = me.handle(ms(1201), Event::Tick);
    let (heal, _) = ask_of(&out).unwrap();
    let out = me.handle(
        ms(1250),
        Event::Answer {
            uid: "s".into(),
            attempt: heal,
            answer: Answer::Accepted,
        },
    );
    let took = out.iter().find_map(|a| match a {
        Action::Note(Note::Healed { took, .. }) => Some(*took),
        _ => None,
    });
    assert_eq!(took, Some(ms(650)));
}

#[test]
fn leaves_after_the_last_viewer_and_follows_a_moved_origin() {
    let t = Timing::default();
    let mut me = ClusterNode::new(n("me"), 2, t.clone());
    synced(&mut me, ms(0), snapshot(&[]));
    let (attempt, _) = ask_of(&me.handle(ms(1), viewers(true))).unwrap();
    me.handle(
        ms(2),
        Event::Answer {
            uid: "s".into(),
            attempt,
            answer: Answer::Accepted,
        },
    );
    // The origin moves to a: the pull is dropped and re-made there.
    let mut moved = Snapshot::default();
    moved.nodes = snapshot(&[]).nodes.clone();
    moved.origins.insert(
        "s".into(),
        Origin {
            node: n("a"),
            live: true,
        },
    );
    let out = synced(&mut me, ms(100), Arc::new(moved));
    assert!(out.contains(&Action::DropPull { uid: "s".into() }));
    let (attempt, at) = ask_of(&out).unwrap();
    assert_eq!(at, n("a"));
    me.handle(
        ms(101),
        Event::Answer {
            uid: "s".into(),
            attempt,
            answer: Answer::Accepted,
        },
    );
    // No viewer: kept for leave_after, then released.
    let mut idle = viewers(false);
    if let Event::Local(l) = &mut idle {
        l[0].state = LocalState::Live;
    }
    assert!(me.handle(ms(200), idle.clone()).is_empty());
    let out = me.handle(ms(200) + t.leave_after, idle.clone());
    assert!(out.contains(&Action::Release { uid: "s".into() }));
    assert!(
        me.pulling("s"),
        "no new join until the driver says released"
    );
    let out = me.handle(ms(6000), Event::Released { uid: "s".into() });
    assert_eq!(out, [Action::RemoveEdge { uid: "s".into() }]);
    assert!(!me.pulling("s"));
}

#[test]
fn a_broadcaster_here_takes_the_lease() {
    let mut me = ClusterNode::new(n("me"), 2, Timing::default());
    let out = me.handle(ms(0), viewers(false));
    assert_eq!(out, [Action::WakeSync]);
    let out = me.handle(ms(1), Event::SyncDue);
    let Some(Action::Sync(plan)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(
        plan.origins,
        [("s".to_string(), OriginOp::Take { live: true })]
    );
    assert!(!plan.sweep, "the first round is not settled");
    let out = me.handle(
        ms(5),
        Event::Synced {
            snapshot: Arc::new(Snapshot::default()),
            taken: vec![("s".into(), true)],
            linked: BTreeSet::new(),
        },
    );
    assert!(out.contains(&Action::Note(Note::OriginTaken { uid: "s".into() })));
    assert!(me.is_origin("s"));
    // Settled after `settle` of successful rounds; a failure resets it.
    me.handle(ms(3000), Event::SyncDue);
    me.handle(ms(3001), Event::SyncFailed);
    let out = me.handle(ms(3500), Event::SyncDue);
    assert!(matches!(&out[0], Action::Sync(p) if !p.sweep));
}

#[test]
fn nodes_asking_at_once_cannot_both_take_the_last_place() {
    let mut a = ClusterNode::new(n("a"), 2, Timing::default());
    synced(&mut a, ms(0), snapshot(&[]));
    // a serves b; c and d ask before either of them is served.
    let served = [n("b")];
    let live = LocalState::Live;
    assert_eq!(a.admit(ms(1), "s", &n("c"), &served, live), Admit::Accept);
    match a.admit(ms(2), "s", &n("d"), &served, live) {
        Admit::Redirect { node, .. } => assert!(node == n("b") || node == n("c"), "{node}"),
        other => panic!("d must go below a child, got {other:?}"),
    }
    // Asking again (a retry) does not count twice.
    assert_eq!(a.admit(ms(3), "s", &n("c"), &served, live), Admit::Accept);
    assert_eq!(
        a.admit(ms(4), "s", &n("c"), &served, LocalState::Idle),
        Admit::NotHere
    );
}

#[test]
fn redirects_go_to_the_child_with_the_shallowest_free_slot() {
    let mut o = ClusterNode::new(n("o"), 2, Timing::default());
    // Below a: c and d (a is full); below b: e (room).
    synced(
        &mut o,
        ms(0),
        snapshot(&[("a", "o"), ("b", "o"), ("c", "a"), ("d", "a"), ("e", "b")]),
    );
    let kids = [n("a"), n("b")];
    match o.admit(ms(1), "s", &n("me"), &kids, LocalState::Live) {
        Admit::Redirect { node, .. } => assert_eq!(node, n("b")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_sent_to_that_is_joining_itself_is_asked_again() {
    let mut me = ClusterNode::new(n("me"), 2, Timing::default());
    synced(&mut me, ms(0), snapshot(&[("a", "o"), ("b", "o")]));
    let (attempt, _) = ask_of(&me.handle(ms(1), viewers(true))).unwrap();
    let answer = |node: &str| Event::Answer {
        uid: "s".into(),
        attempt,
        answer: if node == "here" {
            Answer::NotHere
        } else {
            Answer::Redirect {
                node: n(node),
                link: None,
            }
        },
    };
    assert_eq!(
        ask_of(&me.handle(ms(2), answer("a"))),
        Some((attempt, n("a")))
    );
    // a is not pulling yet: asked again after the retry wait, three times,
    // then the join starts over from the origin.
    for k in 0..3u64 {
        let t = ms(3 + 100 * k);
        let out = me.handle(t, answer("here"));
        assert_eq!(out, [Action::TickAt(t + ms(100))]);
        assert_eq!(ask_of(&me.handle(t + ms(50), Event::Tick)), None);
        assert_eq!(
            ask_of(&me.handle(t + ms(100), Event::Tick)),
            Some((attempt, n("a")))
        );
    }
    let out = me.handle(ms(400), answer("here"));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Note(Note::JoinFailed { .. }))));
    let (next, at) = ask_of(&me.handle(ms(500), Event::Tick)).unwrap();
    assert_eq!(at, n("o"));
    assert!(next > attempt);
}
