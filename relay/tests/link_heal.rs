//! The pieces healing is built from: a dead path ends a pull within the
//! idle timeout, several streams share one connection, and a re-pull from
//! another node continues the local stream for its viewers.

mod link_util;

use std::time::Duration;

use banyan_relay::link::{ClusterCa, LinkClient, PullEnd};
use banyan_relay::{Hub, HubConfig, SubscribeOptions};
use link_util::*;
use tokio::time::Instant;

fn frame_index(f: &banyan_relay::Frame) -> u64 {
    u64::from_be_bytes(f.payload[..8].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_path_is_noticed_and_a_repull_elsewhere_continues_the_stream() {
    let ca = ClusterCa::generate().unwrap();
    let a = Node::start(&ca, "a");
    let c = Node::start(&ca, "c");
    // B keeps its stream open for its viewers while it heals.
    let hub_b = Hub::new(HubConfig::default());
    let b_tls = ca.issue_node_cert("b").unwrap();

    let mut p = a.hub.publish("s1").unwrap();
    p.set_info(Some(video_config(1)), None);
    let pusher = tokio::spawn(async move {
        let start = Instant::now();
        for i in 0..150u64 {
            tokio::time::sleep_until(start + Duration::from_millis(33) * i as u32).await;
            p.push(video_frame(i, 10, 500));
        }
        p
    });

    // C pulls from A directly; B pulls from A through a path that will die.
    let ca_link = c.server.connect(a.addr, "a").await.unwrap();
    let _pull_c = ca_link.pull("s1", c.hub.clone()).await.unwrap();
    let clean = Impair {
        delay: Duration::ZERO,
        loss_per_mille: 0,
        rate: 0,
    };
    let proxy = ImpairProxy::start(a.addr, clean, clean).await;
    let ab = LinkClient::connect(any_port(), proxy.addr, "a", &b_tls)
        .await
        .unwrap();
    let mut pull_b = ab.pull("s1", hub_b.clone()).await.unwrap();
    let mut viewer = hub_b.subscribe("s1", SubscribeOptions::default());

    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(f) = next_frame(&mut viewer, Duration::from_millis(500)).await {
            seen.push((frame_index(&f), f.dts, Instant::now()));
        }
    }
    assert!(seen.len() > 20, "nothing arrived before the failure");

    // The path dies silently, like a killed node.
    let died = Instant::now();
    drop(proxy);
    let end = tokio::time::timeout(Duration::from_secs(3), pull_b.ended())
        .await
        .expect("the dead path was not noticed");
    let noticed = died.elapsed();
    assert!(matches!(end, PullEnd::LinkLost(_)), "{end:?}");
    drop(pull_b);

    // Re-pull from C, which has the stream.
    let cb = LinkClient::connect(any_port(), c.addr, "c", &b_tls)
        .await
        .unwrap();
    let _pull_b2 = cb.pull("s1", hub_b.clone()).await.unwrap();
    let healed = died.elapsed();
    let before = seen.len();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        match next_frame(&mut viewer, Duration::from_millis(500)).await {
            Some(f) => seen.push((frame_index(&f), f.dts, Instant::now())),
            None => continue,
        }
    }
    let after = &seen[before..];
    assert!(after.len() > 10, "the viewer got nothing after the heal");
    // The viewer stayed attached: frames go on, newer, timestamps monotonic.
    for w in seen.windows(2) {
        assert!(
            w[1].0 > w[0].0,
            "frame order broke: {:?} then {:?}",
            w[0],
            w[1]
        );
        assert!(w[1].1 > w[0].1, "timestamps went back");
    }
    let gap = after[0].2 - seen[before - 1].2;
    println!("dead path noticed after {noticed:?}, re-pulled after {healed:?}, viewer gap {gap:?}");
    assert!(noticed < Duration::from_millis(2000));
    assert!(gap < Duration::from_millis(2500));
    let _ = pusher.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_one_connection() {
    let ca = ClusterCa::generate().unwrap();
    let a = Node::start(&ca, "a");
    let b = Node::start(&ca, "b");
    let mut p1 = a.hub.publish("one").unwrap();
    let mut p2 = a.hub.publish("two").unwrap();
    p1.set_info(Some(video_config(1)), None);
    p2.set_info(Some(video_config(2)), None);
    let link = b.server.connect(a.addr, "a").await.unwrap();
    let _x = link.pull("one", b.hub.clone()).await.unwrap();
    let _y = link.pull("two", b.hub.clone()).await.unwrap();
    let mut s1 = b.hub.subscribe("one", SubscribeOptions::default());
    let mut s2 = b.hub.subscribe("two", SubscribeOptions::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..20 {
        p1.push(video_frame(i, 5, 100));
        p2.push(video_frame(1000 + i, 5, 200));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each viewer starts at a keyframe (the hubs' fast start) and then gets
    // every frame of its own stream, to the last.
    for (sub, base, size) in [(&mut s1, 0, 100), (&mut s2, 1000, 200)] {
        let first = next_frame(sub, Duration::from_secs(3)).await.unwrap();
        let mut k = frame_index(&first);
        assert!(first.keyframe && (base..base + 20).contains(&k));
        assert_eq!(first, video_frame(k, 5, size));
        while k < base + 19 {
            k += 1;
            let f = next_frame(sub, Duration::from_secs(3)).await.unwrap();
            assert_eq!(f, video_frame(k, 5, size));
        }
    }
    let mut peers = a.downstream.streams();
    peers.sort();
    assert_eq!(peers, vec!["one".to_string(), "two".to_string()]);
}
