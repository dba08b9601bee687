//! PostgreSQL restarting under a running cluster: three nodes on one
//! PostgreSQL, a stream published to node a and played on a and b (so a
//! link a -> b is flowing); PostgreSQL is stopped with `-m immediate`, kept
//! down longer than the heartbeat's death threshold, and started again on
//! the same data dir and port.
//!
//! Through the outage every player keeps receiving (no gap over a second,
//! every packet one of those published, timestamps in order), the API
//! answers a bounded 503 in its envelope instead of hanging, and each node
//! logs the outage a few times, not every tick. After it, the cluster is
//! whole again: every node lists the three members, the tree is stored, and
//! a new player on c (which had no viewer) gets the stream.

mod cluster_node;
mod common;
mod pg;

use cluster_node::{
    cluster_ca, get_json, input_everywhere, make_clip, publisher, reference_hashes, wait_members,
    wait_until, Input, Node, Player,
};
use pg::Postgres;
use std::time::{Duration, Instant};

use serde_json::Value;

const LINK: &[&str] = &["--cluster-link", "127.0.0.1:0"];
/// How long PostgreSQL stays down: ten times the heartbeat's death
/// threshold (1.5 s) and the origin lease (1.5 s), and longer than the
/// hub's reconnect window (10 s), so every row in the database is long
/// stale when it returns; `BANYAN_PG_OUTAGE_SECS` tries other lengths by
/// hand.
fn outage() -> Duration {
    let secs = std::env::var("BANYAN_PG_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15u64);
    Duration::from_secs(secs.clamp(3, 120))
}

/// GET with a timeout of its own: (status, body, time taken); status 0 when
/// no answer came within `limit`.
async fn timed_get(url: &str, token: &str, limit: Duration) -> (u16, Value, Duration) {
    let start = Instant::now();
    let client = reqwest::Client::builder().timeout(limit).build().unwrap();
    match client.get(url).bearer_auth(token).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let v = r.json().await.unwrap_or(Value::Null);
            (s, v, start.elapsed())
        }
        Err(_) => (0, Value::Null, start.elapsed()),
    }
}

fn wall_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    d.as_micros() as i64
}

/// How long until the cluster's rows are rewritten after `since` (wall
/// clock, microseconds): the three heartbeats, the origin lease of `uid`
/// and b's tree edge.
async fn rows_rewritten(url: &str, uid: &str, since: i64) -> Duration {
    let start = Instant::now();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(sql)
                .bind(since)
                .bind(uid)
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    while start.elapsed() < Duration::from_secs(10) {
        let nodes =
            count("SELECT count(*) FROM cluster_nodes WHERE heartbeat_at > $1 AND $2 <> ''").await;
        let lease = count(
            "SELECT count(*) FROM stream_origins WHERE lease_until > $1 AND uid = $2 \
             AND node = 'a' AND live = 1",
        )
        .await;
        let edge = count(
            "SELECT count(*) FROM stream_tree WHERE updated_at > $1 AND uid = $2 \
             AND child = 'b' AND parent = 'a'",
        )
        .await;
        if nodes == 3 && lease == 1 && edge == 1 {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the cluster's rows were not rewritten within 10 s");
}

/// `text` without terminal colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds from `t0` to `t` (negative before it).
fn secs_after(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64() - t0.saturating_duration_since(t).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_a_postgres_restart() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());
    let clip = tmp.path().join("clip.flv");
    make_clip(&clip);
    let reference = reference_hashes(&clip);

    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(tmp.path(), n, &pg.url(), &ca, 2, LINK))
        .collect();
    let account = nodes[0].creds["accountId"].as_str().unwrap().to_string();
    let token = nodes[0].creds["apiToken"].as_str().unwrap().to_string();
    let admin = nodes[0].creds["adminToken"].as_str().unwrap().to_string();
    let members = |v: &Value| v["nodes"].as_array().map_or(0, |a| a.len());
    wait_members(&nodes, &admin, 3).await;

    // A live input, known to every node.
    let Input { uid, key, pkey } = input_everywhere(&nodes[0], &nodes, "pg-restart").await;
    let inputs = format!(
        "{}/client/v4/accounts/{account}/stream/live_inputs",
        nodes[0].http()
    );

    // Publish to a; play on a and on b (b pulls over the link).
    let _publisher = publisher(&clip, &nodes[0].rtmp(&key), 180);
    let stream_url = |n: &Node| format!("{}/cluster/streams/{uid}", n.http());
    let b_url = stream_url(&nodes[1]);
    wait_until(Duration::from_secs(5), "b knows the origin", || {
        let (url, admin) = (b_url.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["origin"] == "a" }
    })
    .await;
    let mut players = vec![
        ("a", Player::start(&nodes[0].rtmp(&pkey))),
        ("b", Player::start(&nodes[1].rtmp(&pkey))),
    ];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && players.iter().any(|p| p.1.count() < 25) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, p) in &players {
        assert!(p.count() >= 25, "player on {name} got {}", p.count());
    }
    // Past the players' start-up burst: packets flow at the frame rate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, tree) = get_json(&b_url, &admin).await;
    assert_eq!(tree["parent"], "a", "b pulls from a: {tree}");
    let log_len: Vec<usize> = nodes.iter().map(|n| n.log_text().len()).collect();

    // PostgreSQL vanishes.
    let stopped_at = Instant::now();
    pg.stop_immediate();
    eprintln!("postgres stopped");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The API answers, and soon, with a clear error.
    let (s, v, took) = timed_get(&inputs, &token, Duration::from_secs(8)).await;
    eprintln!("API during the outage: {s} in {took:?}: {v}");
    assert_eq!(s, 503, "live inputs during the outage: {v}");
    assert_eq!(v["success"], false, "{v}");
    assert!(v["errors"][0]["code"].is_u64(), "{v}");
    assert!(took < Duration::from_secs(4), "answered in {took:?}");
    let (s, v, took) = timed_get(
        &format!("{}/cluster/nodes", nodes[1].http()),
        &admin,
        Duration::from_secs(8),
    )
    .await;
    eprintln!("/cluster/nodes during the outage: {s} in {took:?}: {v}");
    assert_eq!(s, 503, "{v}");
    assert!(took < Duration::from_secs(4), "answered in {took:?}");
    tokio::time::sleep(outage().saturating_sub(stopped_at.elapsed())).await;

    // PostgreSQL is back on the same data dir and port.
    pg.start_again();
    let back_at = Instant::now();
    let back_wall = wall_micros();
    eprintln!("postgres back after {:?}", back_at - stopped_at);
    let rows_fresh = rows_rewritten(&pg.url(), &uid, back_wall).await;
    eprintln!("every node's heartbeat, a's lease and b's edge rewritten {rows_fresh:?} after postgres came back");
    for n in &nodes {
        let url = format!("{}/cluster/nodes", n.http());
        wait_until(Duration::from_secs(10), "membership after", || {
            let (url, admin) = (url.clone(), admin.clone());
            async move {
                let (s, v) = get_json(&url, &admin).await;
                s == 200 && members(&v) == 3
            }
        })
        .await;
    }
    let a_url = stream_url(&nodes[0]);
    wait_until(Duration::from_secs(10), "the tree after", || {
        let (url, admin) = (a_url.clone(), admin.clone());
        async move {
            let v = get_json(&url, &admin).await.1;
            v["origin"] == "a"
                && v["originLive"] == true
                && v["edges"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["child"] == "b" && e["parent"] == "a"))
        }
    })
    .await;
    let consistent = back_at.elapsed();
    eprintln!("cluster consistent {consistent:?} after postgres came back");

    // A new viewer on c, which had none: c joins the tree.
    let joined_at = Instant::now();
    players.push(("c", Player::start(&nodes[2].rtmp(&pkey))));
    while joined_at.elapsed() < Duration::from_secs(10) && players[2].1.count() < 25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        players[2].1.count() >= 25,
        "new player on c got {}",
        players[2].1.count()
    );
    eprintln!("new player on c: 25 packets in {:?}", joined_at.elapsed());
    let c_url = stream_url(&nodes[2]);
    let (_, tree) = get_json(&c_url, &admin).await;
    assert!(tree["parent"].is_string(), "c pulls: {tree}");
    // Watch the old players a while past the cluster's recovery too.
    tokio::time::sleep(
        (back_at + Duration::from_secs(4)).saturating_duration_since(Instant::now()),
    )
    .await;
    let end = Instant::now();
    // By now every node is past its settling time: what it shows comes from
    // the database alone, so every member re-registered and both children
    // stored their edges.
    for n in &nodes {
        let (s, v) = get_json(&format!("{}/cluster/nodes", n.http()), &admin).await;
        assert!(s == 200 && members(&v) == 3, "{}: {v}", n.name);
    }
    let (_, tree) = get_json(&a_url, &admin).await;
    eprintln!("tree at the end: {tree}");
    let edges = tree["edges"].as_array().cloned().unwrap_or_default();
    let has = |child: &str| edges.iter().any(|e| e["child"] == child);
    assert!(has("b") && has("c") && tree["originLive"] == true, "{tree}");

    // The players of the outage never stalled.
    for (name, p) in &players[..2] {
        let (gap, at) = p.longest_gap(stopped_at - Duration::from_secs(1), end);
        eprintln!(
            "player on {name}: longest gap {gap:?} (from {:.2} s after the stop; \
             PostgreSQL back at {:.2} s)",
            secs_after(stopped_at, at),
            back_at.duration_since(stopped_at).as_secs_f64()
        );
        assert!(
            gap < Duration::from_millis(1000),
            "player on {name} stalled {gap:?}"
        );
    }
    for (name, p) in &mut players {
        assert!(p.proc.running(), "player on {name} still running");
        let hashes = p.hashes();
        let foreign = hashes.iter().filter(|h| !reference.contains(*h)).count();
        assert_eq!(foreign, 0, "player on {name}: {foreign} unknown packets");
        let pts = p.pts();
        let back = pts.windows(2).filter(|w| w[1] < w[0]).count();
        assert_eq!(
            back, 0,
            "player on {name}: timestamps went back {back} times"
        );
    }

    // The nodes lived through it and said so without flooding the log.
    for (n, from) in nodes.iter_mut().zip(log_len) {
        assert!(n.proc.running(), "node {} is alive", n.name);
        let log = n.log_text();
        assert!(!log.contains("panicked"), "node {}: {log}", n.name);
        let during = &log[from.min(log.len())..];
        // The pull b -> a was held throughout, never dropped and re-made.
        assert!(
            !during.contains("re-joining") && !during.contains("origin lease released"),
            "node {}: the tree was torn down:\n{during}",
            n.name
        );
        let during = plain(during);
        let loud: Vec<&str> = during
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        // The node's own: the outage, once. The driver's: a notice per
        // pooled connection at most.
        let own = loud.iter().filter(|l| l.contains(" banyan")).count();
        eprintln!(
            "node {}: {own} warnings of its own, {} in all",
            n.name,
            loud.len()
        );
        if let Some(l) = during.lines().find(|l| l.contains("reachable again")) {
            eprintln!("  {}", l.rsplit("  ").next().unwrap_or(l));
        }
        assert!(
            own <= 2,
            "node {}: {own} warnings:\n{}",
            n.name,
            loud.join("\n")
        );
        assert!(loud.len() <= 20, "node {}:\n{}", n.name, loud.join("\n"));
    }
}
