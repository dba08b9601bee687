//! WHEP through the cluster: two nodes on one PostgreSQL, ffmpeg publishes
//! to node a, and headless Chromium plays over WHEP from node b, which does
//! not have the stream: b answers the offer, pulls the stream from a over
//! the link like for any other viewer, and the browser decodes it. An offer
//! for a stream that is live nowhere is still refused on b.

mod cluster_node;
mod common;
mod pg;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cluster_node::{cluster_ca, input_everywhere, make_clip, publisher, wait_members, Node};
use pg::Postgres;
use serde_json::{json, Value};
use tokio::process::Command;

const LINK: &[&str] = &["--cluster-link", "127.0.0.1:0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_whep_from_a_node_without_the_stream() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());
    let clip = tmp.path().join("clip.flv");
    make_clip(&clip);
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|n| Node::start(tmp.path(), n, &pg.url(), &ca, 4, LINK))
        .collect();
    let admin = nodes[0].creds["adminToken"].as_str().unwrap().to_string();
    wait_members(&nodes, &admin, 2).await;
    let input = input_everywhere(&nodes[0], &nodes, "whep-edge").await;
    let whep = format!("{}/{}/webRTC/play", nodes[1].http(), input.uid);

    // Live nowhere: refused on b too.
    let r = cluster_node::http()
        .post(&whep)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "an offer for a stream live nowhere"
    );

    let _publisher = publisher(&clip, &nodes[0].rtmp(&input.key), 40);
    // b knows a as the stream's origin (from the shared database).
    let url = format!("{}/{}/lifecycle", nodes[1].http(), input.uid);
    let tree = format!("{}/cluster/streams/{}", nodes[1].http(), input.uid);
    let mut known = false;
    for _ in 0..150 {
        let (s, v) = cluster_node::get_json(&tree, &admin).await;
        if s == 200 && v["origin"] == json!("a") {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(known, "b knows a as the origin");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/browser/whep.mjs"))
        .arg(&url)
        .arg(&whep)
        .args(["--seconds", "8", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let res: Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| json!({"raw": text}));
    eprintln!("WHEP from the edge node: {res}");
    assert!(out.status.success(), "the browser did not play: {res}");
    assert_eq!(res["status"], json!(201), "{res}");
    assert_eq!(
        (res["width"].clone(), res["height"].clone()),
        (json!(320), json!(240)),
        "{res}"
    );
    // 8 s at 25 fps, of which the pull's start takes some: at least half.
    let decoded = res["framesDecoded"].as_u64().unwrap_or(0);
    assert!(
        decoded >= 100,
        "decoded {decoded} frames from the edge: {res}"
    );
    if let Some(ms) = res["firstFrameMs"].as_u64() {
        eprintln!("first frame {ms} ms after the offer, through the pull from a");
    }
}
