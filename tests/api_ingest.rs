//! The API's secrets drive real publishers: `status` and `/lifecycle`
//! follow an RTMPS or SRT publisher, rotation disconnects it, old keys and
//! disabled inputs are refused, and no secret reaches the log.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;

use std::time::Duration;

use common::calls::*;
use common::encode::Publisher;
use reqwest::Method;
use serde_json::{json, Value};

/// `status` and `/lifecycle` follow a real RTMPS publisher; rotate_keys
/// disconnects it and its old key is refused; a disabled input refuses
/// publishing.
#[tokio::test]
async fn status_follows_a_real_publisher_and_rotation_disconnects_it() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &["--no-rtmp"]);
    let input = create_input(&node, json!({})).await;
    let uid = input["uid"].as_str().unwrap();
    let url = |v: &Value| {
        format!(
            "{}{}",
            v["rtmps"]["url"].as_str().unwrap(),
            v["rtmps"]["streamKey"].as_str().unwrap()
        )
    };
    assert_eq!(live(&node, uid).await, json!(false));
    let mut publisher = Publisher::start(&url(&input), 10);
    wait_status(&node, uid, json!("connected")).await;
    assert_eq!(live(&node, uid).await, json!(true));

    let (s, v) = call(
        Method::POST,
        &node.inputs(&format!("/{uid}/rotate_keys")),
        Some(node.token()),
        None,
    )
    .await;
    let rotated = success(s, &v);
    let ended = publisher.wait_exit(Duration::from_secs(5));
    assert!(ended.is_some(), "rotation disconnects the publisher");
    wait_status(&node, uid, json!("client_disconnect")).await;
    assert_eq!(live(&node, uid).await, json!(false));

    let mut old = Publisher::start(&url(&input), 5);
    let refused = old.wait_exit(Duration::from_secs(5));
    assert!(
        refused.is_some_and(|s| !s.success()),
        "the old key is refused"
    );
    assert_eq!(live(&node, uid).await, json!(false));

    let (s, v) = call_json(
        Method::PUT,
        &node.inputs(&format!("/{uid}")),
        node.token(),
        json!({"enabled": false}),
    )
    .await;
    success(s, &v);
    let mut disabled = Publisher::start(&url(&rotated), 5);
    let refused = disabled.wait_exit(Duration::from_secs(5));
    assert!(
        refused.is_some_and(|s| !s.success()),
        "a disabled input refuses publishing"
    );
    assert_eq!(live(&node, uid).await, json!(false));
    drop((publisher, old, disabled));
    assert_no_secrets_logged(&node, &[&input, &rotated]);
}

/// The SRT listener takes the input's stream id and passphrase from the
/// API; rotation disconnects the publisher and the old passphrase fails.
#[tokio::test]
async fn srt_publishing_follows_the_api_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &["--no-rtmp"]);
    let input = create_input(&node, json!({})).await;
    let uid = input["uid"].as_str().unwrap();
    let url = |v: &Value| {
        let srt = &v["srt"];
        format!(
            "{}?streamid={}&passphrase={}",
            srt["url"].as_str().unwrap(),
            srt["streamId"].as_str().unwrap(),
            srt["passphrase"].as_str().unwrap()
        )
    };
    let publish = |url: String, seconds: u32| Publisher::srt(&url, seconds);
    let mut publisher = publish(url(&input), 10);
    wait_status(&node, uid, json!("connected")).await;
    assert_eq!(live(&node, uid).await, json!(true));
    let (s, v) = call(
        Method::POST,
        &node.inputs(&format!("/{uid}/rotate_keys")),
        Some(node.token()),
        None,
    )
    .await;
    success(s, &v);
    assert!(
        publisher.wait_exit(Duration::from_secs(6)).is_some(),
        "rotation disconnects the SRT publisher"
    );
    wait_status(&node, uid, json!("client_disconnect")).await;
    let mut old = publish(url(&input), 4);
    let ended = old.wait_exit(Duration::from_secs(8));
    assert!(
        ended.is_some_and(|s| !s.success()),
        "the old passphrase is refused"
    );
    assert_eq!(live(&node, uid).await, json!(false));
    drop((publisher, old));
    let (_, now) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    assert_no_secrets_logged(&node, &[&input, &now["result"]]);
}
