//! `banyan inputs|accounts|domains|analytics` against a running node.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;

use std::process::Command;

use common::calls::*;
use common::BIN;
use serde_json::{json, Value};

/// `banyan inputs|accounts|domains|analytics` against a running node.
#[tokio::test]
async fn cli_subcommands_work_against_a_running_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = api_node(&dir, &[]);
    let cli = |args: &[&str]| -> (bool, Value, String) {
        let out = Command::new(BIN)
            .args(args)
            .args(["--data-dir", dir.to_str().unwrap()])
            .env_remove("BANYAN_API")
            .env_remove("BANYAN_TOKEN")
            .env_remove("BANYAN_ACCOUNT")
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, created, err) = cli(&[
        "inputs",
        "create",
        "--name",
        "cli",
        "--creator",
        "c-1",
        "--disabled",
    ]);
    assert!(ok, "{err}");
    assert_eq!(created["meta"], json!({"name": "cli"}));
    assert_eq!(created["defaultCreator"], json!("c-1"));
    assert_eq!(created["enabled"], json!(false));
    let uid = created["uid"].as_str().unwrap();
    let (ok, got, _) = cli(&["inputs", "get", uid]);
    assert!(ok);
    assert_eq!(got["rtmps"], created["rtmps"]);
    let (ok, updated, _) = cli(&["inputs", "update", uid, "--enabled", "--name", "renamed"]);
    assert!(ok);
    assert_eq!(
        (updated["enabled"].clone(), updated["meta"]["name"].clone()),
        (json!(true), json!("renamed"))
    );
    let (ok, list, _) = cli(&["inputs", "list"]);
    assert!(ok);
    assert_eq!(list["liveInputs"].as_array().unwrap().len(), 1);
    assert!(list["liveInputs"][0].get("rtmps").is_none(), "{list}");
    let (ok, rotated, _) = cli(&["inputs", "rotate-keys", uid]);
    assert!(ok);
    assert_ne!(rotated["rtmps"]["streamKey"], created["rtmps"]["streamKey"]);
    let (ok, _, _) = cli(&["inputs", "delete", uid]);
    assert!(ok);
    let (ok, _, err) = cli(&["inputs", "get", uid]);
    assert!(!ok && err.contains("404"), "{err}");

    let (ok, acc, err) = cli(&["accounts", "create", "--name", "platform-b"]);
    assert!(ok, "{err}");
    assert!(is_hex(acc["id"].as_str().unwrap(), 32));
    let (ok, accs, _) = cli(&["accounts", "list"]);
    assert!(ok);
    assert_eq!(accs.as_array().unwrap().len(), 2);
    // Explicit connection flags instead of credentials.json: the new account.
    let (ok, theirs, err) = cli(&[
        "inputs",
        "list",
        "--api",
        &node.api(),
        "--account",
        acc["id"].as_str().unwrap(),
        "--token",
        acc["apiToken"].as_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(theirs["liveInputs"], json!([]));

    let (ok, domains, err) = cli(&["domains", "list"]);
    assert!(ok, "{err}");
    assert_eq!(domains, json!([]));
    let (ok, _, err) = cli(&["domains", "remove", "nothing.example.test"]);
    assert!(!ok && err.contains("404"), "{err}");

    // Analytics: data, or a clear message while the node lacks it.
    let (ok, data, err) = cli(&["analytics", "creators"]);
    assert!(ok || err.contains("analytics"), "{data} {err}");
}
