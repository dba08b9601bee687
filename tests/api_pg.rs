//! The HTTP API on PostgreSQL: what the node stores survives a restart
//! and a second node on the same store follows the first.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;
mod pg;

use pg::Postgres;

use std::time::Duration;

use common::calls::*;
use common::encode::Publisher;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The same node code on PostgreSQL: credentials, inputs, accounts and
/// domains survive a restart.
#[tokio::test]
async fn the_api_works_on_postgresql() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = pg.url();
    let args = ["--database-url", url.as_str()];
    let mut node = api_node(&dir, &args);
    assert!(
        !dir.join("banyan.db").exists(),
        "no SQLite file with a database URL"
    );
    let input = create_input(
        &node,
        json!({"meta": {"name": "pg"}, "defaultCreator": "c"}),
    )
    .await;
    let uid = input["uid"].as_str().unwrap().to_string();
    let (s, v) = call(
        Method::POST,
        &format!("{}/client/v4/accounts", node.api()),
        Some(node.admin()),
        Some(br#"{"name":"b"}"#.to_vec()),
    )
    .await;
    let other = success(s, &v);
    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        other["apiToken"].as_str(),
        None,
    )
    .await;
    failure(s, &v, StatusCode::NOT_FOUND, "another account's token");
    assert_eq!(node.terminate(), Some(0));

    let node = api_node(&dir, &args);
    let (s, v) = call(Method::GET, &node.inputs(""), Some(node.token()), None).await;
    let list = &success(s, &v)["liveInputs"];
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["created"], input["created"]);
    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    assert_eq!(
        success(s, &v)["rtmps"]["streamKey"],
        input["rtmps"]["streamKey"]
    );
    let (s, v) = call_json(
        Method::PUT,
        &node.inputs(&format!("/{uid}")),
        node.token(),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(success(s, &v)["enabled"], json!(false));
    let (s, v) = call(
        Method::DELETE,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    success(s, &v);

    // A second node on the same store sees the first one's changes within
    // its refresh period, and a rotation made on the first disconnects a
    // publisher on the second.
    let tmp_b = tempfile::tempdir().unwrap();
    let b = api_node(&tmp_b.path().join("data"), &args);
    let fresh = create_input(&node, json!({})).await;
    let fresh_uid = fresh["uid"].as_str().unwrap();
    let lifecycle = format!("{}/{fresh_uid}/lifecycle", b.api());
    let mut seen = false;
    for _ in 0..50 {
        let (s, _) = call(Method::GET, &lifecycle, None, None).await;
        if s == StatusCode::OK {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "node b learns the new input");
    let key = fresh["rtmps"]["streamKey"].as_str().unwrap();
    let mut publisher = Publisher::start(
        &format!("rtmps://{}/live/{key}", b.ready["rtmps"].as_str().unwrap()),
        10,
    );
    let mut live_on_b = false;
    for _ in 0..50 {
        let (_, v) = call(Method::GET, &lifecycle, None, None).await;
        if v["live"] == json!(true) {
            live_on_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(live_on_b, "publishing on node b with a key made on node a");
    let (s, v) = call(
        Method::POST,
        &node.inputs(&format!("/{fresh_uid}/rotate_keys")),
        Some(node.token()),
        None,
    )
    .await;
    success(s, &v);
    assert!(
        publisher.wait_exit(Duration::from_secs(6)).is_some(),
        "a rotation on node a disconnects the publisher on node b"
    );
}
