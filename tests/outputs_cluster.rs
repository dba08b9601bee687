//! Simulcast outputs in a cluster: an output runs once, on the node the
//! broadcaster publishes to, never on a node that pulls the stream.

mod cluster_node;
mod common;
mod outputs_support;
#[allow(dead_code)]
mod pg;

use std::time::{Duration, Instant};

use common::{source, Hashes, FPS};
use outputs_support::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_an_output_runs_once_on_the_broadcasters_node() {
    let _one = SERIAL.lock().await;
    let pg = pg::Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = cluster_node::cluster_ca(dir.path());
    let nginx = Nginx::start(dir.path()).await;
    let extra = ["--cluster-link", "127.0.0.1:0", "--outputs-allow-private"];
    let nodes: Vec<cluster_node::Node> = ["a", "b"]
        .iter()
        .map(|n| cluster_node::Node::start(dir.path(), n, &pg.url(), &ca, 4, &extra))
        .collect();
    let admin = nodes[0].creds["adminToken"].as_str().expect("admin");
    cluster_node::wait_members(&nodes, admin, 2).await;
    let input = cluster_node::input_everywhere(&nodes[0], &nodes, "simulcast").await;
    let api_a = Api::with(&nodes[0].http(), &nodes[0].creds);
    let api_b = Api::with(&nodes[1].http(), &nodes[1].creds);
    // Created through b, published to a: it runs on a.
    let o = api_b.create(&input.uid, &nginx.url(), "cluster").await;
    let _publisher = cluster_node::publisher(&source().ts, &nodes[0].rtmp(&input.key), 60);
    // A viewer on b makes b pull the stream: it is live there too.
    let viewer = cluster_node::Player::start(&nodes[1].rtmp(&input.pkey));
    api_a
        .wait_status(&input.uid, &o, json!("connected"), 20)
        .await;
    let md5 = dir.path().join("nginx.md5");
    let mut p = player(&format!("{}/cluster", nginx.url()), &md5, "nginx player");
    wait_video(&md5, 2 * FPS, 15, "the destination").await;
    let t0 = Instant::now();
    while viewer.count() < FPS && t0.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        viewer.count() >= FPS,
        "the viewer on b gets the pulled stream"
    );
    // For three seconds b, which has the stream too, never runs the output.
    for _ in 0..15 {
        let v = api_b.get(&input.uid, &o).await;
        assert_eq!(v["status"], Value::Null, "b runs the output: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = |n: &cluster_node::Node| {
        let url = n.metrics_url();
        async move {
            http()
                .get(url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    let (ma, mb) = (metrics(&nodes[0]).await, metrics(&nodes[1]).await);
    assert_eq!(
        metric(&ma, "banyan_outputs{state=\"connected\"}"),
        1.0,
        "{ma}"
    );
    assert_eq!(metric(&mb, "banyan_outputs{"), 0.0, "{mb}");
    // One push only: a second one to the same key would be refused by
    // nginx and show as reconnects.
    assert_eq!(metric(&ma, "banyan_output_reconnects_total"), 0.0);
    assert_eq!(metric(&mb, "banyan_output_reconnects_total"), 0.0);
    p.stop().await;
    check_run(&Hashes::read(&md5), &looped(6), 2, "cluster output");
}
