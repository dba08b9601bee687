//! Cloudflare's official SDKs, TypeScript (npm `cloudflare`, in web/) and
//! Python (PyPI `cloudflare`), each drive a live input's whole lifecycle
//! against the real binary with only the base URL changed
//! (tests/sdk/lifecycle.mjs and lifecycle.py assert the shapes the SDK
//! returns):
//! create with recording, meta and deleteRecordingAfterDays, get, list,
//! update, rotate keys; then ffmpeg publishes with the rotated key, the
//! public lifecycle endpoint and the SDK show it live, `/views` hides its
//! count while `recording.hideLiveViewerCount` is set, and the SDK deletes it.
//!
//! Needs `node` with `npm ci` in web/, and Python with the package of
//! tests/sdk/requirements.txt: scripts/setup.sh makes tests/sdk/.venv
//! (`BANYAN_PYTHON` names another interpreter).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{publish, Input, Node, Proto};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which official SDK drives the node.
#[derive(Clone, Copy, Debug)]
enum Sdk {
    TypeScript,
    Python,
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BANYAN_PYTHON") {
        return p.into();
    }
    let venv = root().join("tests/sdk/.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// Run a phase of the SDK's script; its stdout's last line as JSON.
async fn run(which: Sdk, node: &Node, args: &[&str]) -> Value {
    let mut cmd = match which {
        Sdk::TypeScript => {
            let mut c = tokio::process::Command::new("node");
            c.arg(root().join("tests/sdk/lifecycle.mjs"));
            c
        }
        Sdk::Python => {
            let mut c = tokio::process::Command::new(python());
            c.arg(root().join("tests/sdk/lifecycle.py"));
            c
        }
    };
    let out = cmd
        .args(args)
        .env("BANYAN_API", node.api())
        .env("BANYAN_ACCOUNT", node.creds["accountId"].as_str().unwrap())
        .env("BANYAN_TOKEN", node.creds["apiToken"].as_str().unwrap())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the SDK script finishes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{which:?} SDK {args:?} failed:\n{}\n{stdout}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    let last = stdout.lines().last().expect("a result line");
    serde_json::from_str(last).expect("JSON result line")
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let s = r.status().as_u16();
    (s, r.json().await.expect("JSON"))
}

async fn put_recording(node: &Node, uid: &str, recording: Value) {
    let url = format!(
        "{}/client/v4/accounts/{}/stream/live_inputs/{uid}",
        node.api(),
        node.creds["accountId"].as_str().unwrap()
    );
    let r = reqwest::Client::new()
        .put(url)
        .bearer_auth(node.creds["apiToken"].as_str().unwrap())
        .json(&json!({ "recording": recording }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_typescript_sdk_drives_a_live_input_lifecycle() {
    lifecycle(Sdk::TypeScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_drives_a_live_input_lifecycle() {
    lifecycle(Sdk::Python).await;
}

async fn lifecycle(sdk: Sdk) {
    let node = Node::start(&[]);
    let made = run(sdk, &node, &["manage"]).await;
    let uid = made["uid"].as_str().expect("uid").to_string();
    let lifecycle = format!("{}/{uid}/lifecycle", node.api());
    let (s, v) = get(&lifecycle).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"isInput": true, "videoUID": null, "live": false, "status": null})
    );

    // A real publisher with the key the SDK rotated to.
    let input =
        Input(json!({"uid": uid, "rtmp": {"url": made["rtmpUrl"], "streamKey": made["rtmpKey"]}}));
    let mut publisher = publish(&input, Proto::Rtmp);
    node.wait_connected(&uid, &mut publisher).await;
    let (s, v) = get(&lifecycle).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"isInput": true, "videoUID": null, "live": true, "status": "connected"})
    );

    // `/views` shows a number, and nothing while the count is hidden.
    let views = format!("{}/{uid}/views", node.api());
    let (s, v) = get(&views).await;
    assert_eq!(s, 200);
    assert!(v["liveViewers"].is_u64(), "{v}");
    put_recording(&node, &uid, json!({"hideLiveViewerCount": true})).await;
    let (_, v) = get(&views).await;
    assert_eq!(v, json!({"liveViewers": null}));
    put_recording(&node, &uid, json!({"hideLiveViewerCount": false})).await;
    let (_, v) = get(&views).await;
    assert!(v["liveViewers"].is_u64(), "{v}");

    let done = run(sdk, &node, &["delete", &uid]).await;
    assert_eq!(done["deleted"], json!(uid));
    // Deleting ends the session: the publisher is cut off.
    assert!(
        publisher.wait(10.0).await.is_some(),
        "the publisher of a deleted input is still connected"
    );
    let (s, v) = get(&lifecycle).await;
    assert_eq!(s, 404);
    assert_eq!(v["isInput"], json!(false));
}
