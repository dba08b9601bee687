//! The HTTP API from a test: requests with a token, the success and
//! failure envelopes, status waits, the public lifecycle view, and the
//! check that no secret reached the node's log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{http, Node};

/// The custom domain names the API tests' nodes resolve to themselves.
pub const PROVEN_NAMES: &[&str] = &[
    "push.mine.test",
    "a.push.test",
    "b.push.test",
    "c.push.test",
    "push.one.test",
    "push.two.test",
];

/// The node the API tests run: `RUST_LOG=debug`, and uploaded domains are
/// proven by a token the node fetches from the name: it resolves the test
/// names to itself through a private hosts file and fetches from its own
/// HTTP port.
pub fn api_node(data: &Path, extra: &[&str]) -> Node {
    Node::builder()
        .data_dir(data)
        .log_level("debug")
        .resolve(PROVEN_NAMES)
        .args(&["--domain-verify-port", "0"])
        .args(extra)
        .start()
}

/// Send a request; returns the status and the parsed body (Null if none).
pub async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v)
}

/// [`call`] with a token and a JSON body.
pub async fn call_json(method: Method, url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    call(
        method,
        url,
        Some(token),
        Some(body.to_string().into_bytes()),
    )
    .await
}

/// The envelope of a success; returns `result`.
pub fn success(status: StatusCode, v: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["success"], json!(true), "{v}");
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["messages"], json!([]), "{v}");
    v["result"].clone()
}

/// The envelope of a failure with this status.
pub fn failure(status: StatusCode, v: &Value, want: StatusCode, what: &str) {
    assert_eq!(status, want, "{what}: {v}");
    assert_eq!(v["success"], json!(false), "{what}: {v}");
    assert_eq!(v["result"], Value::Null, "{what}: {v}");
    let e = &v["errors"][0];
    assert!(e["code"].as_u64().is_some(), "{what}: {v}");
    assert!(!e["message"].as_str().unwrap().is_empty(), "{what}: {v}");
    assert_eq!(v["messages"], json!([]), "{what}: {v}");
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The permission bits of a file.
pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Create a live input from `body`; returns the API's `result`.
pub async fn create_input(node: &Node, body: Value) -> Value {
    let (s, v) = call_json(Method::POST, &node.inputs(""), node.token(), body).await;
    success(s, &v)
}

/// Wait (bounded, 10 s) until the input's `status` is `want`.
pub async fn wait_status(node: &Node, uid: &str, want: Value) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (s, v) = call(
            Method::GET,
            &node.inputs(&format!("/{uid}")),
            Some(node.token()),
            None,
        )
        .await;
        last = success(s, &v)["status"].clone();
        if last == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status stayed {last}, wanted {want}");
}

/// `live` of the input's public `/lifecycle`.
pub async fn live(node: &Node, uid: &str) -> Value {
    let (_, v) = call(
        Method::GET,
        &format!("{}/{uid}/lifecycle", node.api()),
        None,
        None,
    )
    .await;
    v["live"].clone()
}

/// Fail if any secret of these live inputs appears in the node's log.
pub fn assert_no_secrets_logged(node: &Node, inputs: &[&Value]) {
    let log = node.log_text();
    assert!(!log.is_empty(), "the node logs to its log file");
    for input in inputs {
        for (k, f) in [
            ("rtmps", "streamKey"),
            ("rtmpsPlayback", "streamKey"),
            ("srt", "passphrase"),
            ("srtPlayback", "passphrase"),
        ] {
            let secret = input[k][f].as_str().unwrap();
            assert!(!log.contains(secret), "{k}.{f} reached the log");
        }
    }
    assert!(!log.contains(node.token()) && !log.contains(node.admin()));
}

/// [`call`] with a token and an optional JSON body.
pub async fn call_as(
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(
        method,
        url,
        Some(token),
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}
