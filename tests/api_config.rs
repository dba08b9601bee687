//! How a node is configured: a TOML file, env variables and flags (flags
//! win), `--public-host`, `--no-rtmp`, and the consent plain RTMP on a
//! public address needs.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;

use std::process::Command;

use common::calls::*;
use common::{Node, BIN};
use serde_json::{json, Value};

/// Settings from a TOML file, env variables and flags (flags win), and
/// `--public-host` in every returned URL.
#[tokio::test]
async fn config_file_env_and_public_host() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "# a node\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\nrtmps = \"127.0.0.1:0\"\n\
             srt = \"127.0.0.1:0\"\nwebrtc = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n\
             public_host = \"file.example.test\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let node = Node::builder()
        .bare()
        .data_dir(&dir)
        .args(&["serve", "--config", cfg.to_str().unwrap()])
        .args(&["--public-host", "live.example.test"])
        .env("BANYAN_NO_RTMP", "true")
        .start();
    assert_eq!(node.ready["rtmp"], Value::Null, "BANYAN_NO_RTMP");
    let port = |k: &str| {
        node.ready[k]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        node.creds["api"],
        json!(format!("http://live.example.test:{}", port("http")))
    );
    let input = create_input(&node, json!({})).await;
    let uid = input["uid"].as_str().unwrap();
    assert_eq!(
        input["rtmps"]["url"],
        json!(format!("rtmps://live.example.test:{}/live/", port("rtmps")))
    );
    assert_eq!(
        input["srt"]["url"],
        json!(format!("srt://live.example.test:{}", port("srt")))
    );
    assert_eq!(
        input["hls"]["url"],
        json!(format!(
            "http://live.example.test:{}/{uid}/manifest/video.m3u8",
            port("http")
        ))
    );
    assert!(input.get("rtmp").is_none());
}

#[tokio::test]
async fn no_rtmp_hides_the_rtmp_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &["--no-rtmp"]);
    assert_eq!(node.ready["rtmp"], Value::Null);
    let input = create_input(&node, json!({})).await;
    assert!(
        input.get("rtmp").is_none() && input.get("rtmpPlayback").is_none(),
        "{input}"
    );
    assert!(input["rtmps"]["streamKey"].is_string());
}

#[test]
fn plain_rtmp_on_a_public_address_needs_consent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args([
            "--rtmps",
            "127.0.0.1:0",
            "--srt",
            "127.0.0.1:0",
            "--rtmp",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing plain RTMP"), "{err}");
    assert!(out.stdout.is_empty(), "never ready");
    let node = api_node(
        &dir,
        &["--rtmp", "0.0.0.0:0", "--allow-plain-rtmp-on-public"],
    );
    assert!(node.ready["rtmp"].as_str().unwrap().starts_with("0.0.0.0:"));
}
