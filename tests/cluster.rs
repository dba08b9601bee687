//! Five real nodes on one PostgreSQL: a stream published to one node reaches
//! players on the four others through a per-stream tree over the QUIC
//! links, with a fan-out limit of 2; killing a middle node with `kill -9`
//! leaves every player below it receiving; HLS on a node without the
//! stream pulls it on demand; an unused pull is dropped; a QUIC client
//! without a certificate of the cluster CA is refused.
//!
//! Players are ffmpeg (`-c copy -f framemd5`): every video packet they
//! receive must be one of the packets published (compared by hash).

mod cluster_node;
mod common;
mod pg;

use cluster_node::{
    cluster_ca, get_json, http, input_everywhere, make_clip, publisher, reference_hashes,
    wait_members, wait_until, Input, Node, Player,
};
use pg::Postgres;
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

const LINK: &[&str] = &["--cluster-link", "127.0.0.1:0"];

/// The tests of this file run one at a time (CPU).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_share_a_stream_through_a_tree_that_heals() {
    let _serial = SERIAL.lock().await;
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());

    // A 320x240 clip, one keyframe per second, and its packet hashes.
    let clip = tmp.path().join("clip.flv");
    make_clip(&clip);
    let reference = reference_hashes(&clip);
    assert!(reference.len() >= 190);

    let names = ["a", "b", "c", "d", "e"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|n| Node::start(tmp.path(), n, &pg.url(), &ca, 2, LINK))
        .collect();
    let account = nodes[0].creds["accountId"].as_str().unwrap().to_string();
    let token = nodes[0].creds["apiToken"].as_str().unwrap().to_string();
    let admin = nodes[0].creds["adminToken"].as_str().unwrap().to_string();
    for n in &nodes[1..] {
        assert_eq!(
            n.creds["accountId"], account,
            "every node uses the cluster's one default account"
        );
    }

    // Every node lists the five members.
    wait_members(&nodes, &admin, 5).await;
    let (s, _) = get_json(&format!("{}/cluster/nodes", nodes[1].http()), &token).await;
    assert_eq!(s, 403, "the cluster view needs the admin token");

    // A live input, created through node a, known to every node.
    let Input { uid, key, pkey } = input_everywhere(&nodes[0], &nodes, "cluster").await;

    // Publish to node a.
    let _publisher = publisher(&clip, &nodes[0].rtmp(&key), 60);
    let stream_url = |n: &Node| format!("{}/cluster/streams/{uid}", n.http());
    let a_url = stream_url(&nodes[0]);
    wait_until(Duration::from_secs(5), "a is the origin", || {
        let (url, admin) = (a_url.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["origin"] == "a" }
    })
    .await;

    // HLS on node e, which does not have the stream: it pulls it on demand.
    let e_url = stream_url(&nodes[4]);
    wait_until(Duration::from_secs(5), "e knows the origin", || {
        let (url, admin) = (e_url.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["origin"] == "a" }
    })
    .await;
    let hls = format!("{}/{uid}/manifest/video.m3u8", nodes[4].http());
    let r = http().get(&hls).send().await.unwrap();
    assert_eq!(r.status(), 200, "HLS on a node without the stream");
    let text = r.text().await.unwrap();
    assert!(text.starts_with("#EXTM3U"), "{text}");
    wait_until(Duration::from_secs(5), "e pulls for its HLS viewer", || {
        let (url, admin) = (e_url.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["parent"].is_string() }
    })
    .await;

    // Players on b, c, d, e.
    let mut players: HashMap<String, Player> = HashMap::new();
    for n in &nodes[1..] {
        players.insert(n.name.clone(), Player::start(&n.rtmp(&pkey)));
        // Join one at a time, so the tree fills level by level.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) && players.values().any(|p| p.count() < 50) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, p) in &players {
        assert!(
            p.count() >= 50,
            "player on {name} got {} packets",
            p.count()
        );
    }

    // The tree: a serves at most 2 nodes, and it is at least 2 deep.
    let (_, tree) = get_json(&a_url, &admin).await;
    eprintln!("tree: {tree}");
    let a_children = tree["children"].as_array().unwrap().len();
    assert!(a_children <= 2, "origin serves {a_children} nodes: {tree}");
    assert!(tree["height"].as_u64().unwrap() >= 2, "{tree}");
    let edges: Vec<(String, String)> = tree["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["child"].as_str().unwrap().to_string(),
                e["parent"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(edges.len(), 4, "every other node is in the tree: {tree}");
    // A middle node: a child of a with children of its own.
    let middle = edges
        .iter()
        .filter(|(_, p)| p == "a")
        .map(|(c, _)| c.clone())
        .find(|c| edges.iter().any(|(_, p)| p == c))
        .expect("a middle node");
    let orphans: Vec<String> = edges
        .iter()
        .filter(|(_, p)| *p == middle)
        .map(|(c, _)| c.clone())
        .collect();
    eprintln!("killing {middle}; below it: {orphans:?}");

    // kill -9 the middle node; the players below it keep receiving.
    let killed_at = Instant::now();
    let idx = names.iter().position(|n| *n == middle).unwrap();
    nodes[idx].proc.kill9();
    players.remove(&middle);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for o in &orphans {
        let p = &players[o];
        assert!(p.proc.0.is_some());
        let after = p.arrivals_after(killed_at);
        assert!(
            after.len() >= 50,
            "player on {o} got {} packets after the kill",
            after.len()
        );
        let mut gaps = vec![after[0].duration_since(killed_at)];
        gaps.extend(after.windows(2).map(|w| w[1].duration_since(w[0])));
        let worst = gaps.iter().max().unwrap();
        eprintln!("player on {o}: longest gap after the kill {worst:?}");
        assert!(
            *worst < Duration::from_secs(2),
            "player on {o} stalled {worst:?}"
        );
    }
    for (name, p) in players.iter_mut() {
        assert!(p.proc.running(), "player on {name} still running");
    }
    for n in &nodes {
        if orphans.contains(&n.name) {
            let log = n.log_text();
            if let Some(l) = log.lines().find(|l| l.contains("healed")) {
                eprintln!("{}: {}", n.name, l.rsplit("ms=").next().unwrap_or(l));
            }
        }
    }
    let (_, tree) = get_json(&a_url, &admin).await;
    eprintln!("tree after the kill: {tree}");
    assert!(tree["children"].as_array().unwrap().len() <= 2, "{tree}");

    // Every packet any player got is one that was published.
    for (name, p) in &players {
        let hashes = p.hashes();
        let foreign = hashes.iter().filter(|h| !reference.contains(*h)).count();
        assert_eq!(
            foreign,
            0,
            "player on {name}: {foreign} of {} packets unknown",
            hashes.len()
        );
    }

    // Origin upload: fan-out times the stream, not the number of nodes.
    let metrics = http()
        .get(nodes[0].metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tx = metric(&metrics, "banyan_link_bytes_total{direction=\"tx\"}");
    let ingest = metric(&metrics, "banyan_ingest_bytes_total");
    eprintln!(
        "origin: link tx {tx} bytes, ingest {ingest} bytes, ratio {:.2}",
        tx / ingest.max(1.0)
    );
    assert!(
        tx > 0.0 && tx < 3.0 * ingest,
        "origin upload {tx} vs ingest {ingest}"
    );

    // An outsider: a certificate from another CA is refused at the
    // handshake; one from the cluster CA gets through (the check can fail).
    let (_, v) = get_json(&format!("{}/cluster/nodes", nodes[0].http()), &admin).await;
    let link: std::net::SocketAddr = v["link"].as_str().unwrap().parse().unwrap();
    let other = banyan_relay::link::ClusterCa::generate()
        .unwrap()
        .issue_node_cert("mallory")
        .unwrap();
    let bind: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let r = banyan_relay::link::LinkClient::connect(bind, link, "a", &other).await;
    assert!(r.is_err(), "a client of another CA must not connect");
    let ca_cert = std::fs::read_to_string(ca.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(ca.join("ca.key")).unwrap();
    let insider = banyan_relay::link::ClusterCa {
        cert_pem: ca_cert,
        key_pem: ca_key,
    }
    .issue_node_cert("probe")
    .unwrap();
    let client = banyan_relay::link::LinkClient::connect(bind, link, "a", &insider)
        .await
        .expect("a client of the cluster CA connects");
    drop(client);

    // Leaving: with its player gone, a leaf drops its pull within ~5 s
    // (not e: its HLS muxer keeps watching for a while).
    let parents: HashSet<&str> = tree["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["parent"].as_str())
        .collect();
    let leaf = players
        .keys()
        .filter(|n| *n != "e" && !parents.contains(n.as_str()))
        .min()
        .expect("a leaf with a player")
        .clone();
    players.remove(&leaf);
    let leaf_node = &nodes[names.iter().position(|n| *n == leaf).unwrap()];
    let leaf_url = stream_url(leaf_node);
    let dropped_at = Instant::now();
    let mut left = false;
    while dropped_at.elapsed() < Duration::from_secs(9) && !left {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = get_json(&leaf_url, &admin).await.1;
        left = v["parent"].is_null() && v["children"].as_array().is_some_and(|c| c.is_empty());
    }
    let log = leaf_node.log_text();
    assert!(
        left,
        "{leaf} still pulls; its log ends with:\n{}",
        tail(&log, 30)
    );
    eprintln!(
        "{leaf} left the tree {:?} after its last viewer",
        dropped_at.elapsed()
    );
}

/// The broadcaster moves from node a to node c: the origin lease moves, and
/// node b's viewer keeps playing from the tree re-formed under c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_follows_the_broadcaster_to_another_node() {
    let _serial = SERIAL.lock().await;
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());
    let clip = tmp.path().join("clip.flv");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "4",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "25", "-bf", "0", "-f", "flv"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success());
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(tmp.path(), n, &pg.url(), &ca, 4, LINK))
        .collect();
    let admin = nodes[0].creds["adminToken"].as_str().unwrap().to_string();
    let Input { uid, key, pkey } = input_everywhere(&nodes[0], &nodes, "broadcaster").await;
    let mut first = publisher(&clip, &nodes[0].rtmp(&key), 60);
    let b_url = format!("{}/cluster/streams/{uid}", nodes[1].http());
    wait_until(Duration::from_secs(5), "b sees origin a", || {
        let (url, admin) = (b_url.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["origin"] == "a" }
    })
    .await;
    let player = Player::start(&nodes[1].rtmp(&pkey));
    wait_until(Duration::from_secs(10), "b plays from a", || {
        let n = player.count();
        async move { n >= 25 }
    })
    .await;

    // The broadcaster drops and comes back on node c.
    first.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved_at = Instant::now();
    let _second = publisher(&clip, &nodes[2].rtmp(&key), 60);
    wait_until(Duration::from_secs(8), "b pulls from c", || {
        let (url, admin) = (b_url.clone(), admin.clone());
        async move {
            let v = get_json(&url, &admin).await.1;
            v["origin"] == "c" && v["parent"] == "c"
        }
    })
    .await;
    eprintln!(
        "b re-joined under c {:?} after the broadcaster moved",
        moved_at.elapsed()
    );
    let mut player = player;
    wait_until(
        Duration::from_secs(8),
        "b's player gets frames from c",
        || {
            let n = player
                .arrivals_after(moved_at + Duration::from_millis(500))
                .len();
            async move { n >= 25 }
        },
    )
    .await;
    assert!(player.proc.running(), "the viewer on b stayed connected");
}
