//! Live inputs through the HTTP API against the real binary: a private
//! first start whose credentials, accounts and inputs survive a restart,
//! the exact shapes of a create/read/list/update/delete round trip, and
//! key rotation.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;

use std::time::Duration;

use common::calls::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn first_start_is_private_and_a_restart_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut node = api_node(&dir, &[]);
    assert_eq!(mode(&dir), 0o700);
    let creds_path = dir.join("credentials.json");
    assert_eq!(mode(&creds_path), 0o600);
    assert_eq!(mode(&dir.join("banyan.db")), 0o600);
    assert_eq!(mode(&dir.join("tls/key.pem")), 0o600);
    assert_eq!(node.ready["ready"], json!(true));
    assert_eq!(node.creds["api"], json!(node.api()));
    assert!(is_hex(node.account(), 32));
    assert!(node.token().len() >= 43 && node.admin().len() >= 43);
    assert_ne!(node.token(), node.admin());
    let input = create_input(&node, json!({"meta": {"name": "keep me"}})).await;
    let uid = input["uid"].as_str().unwrap().to_string();
    let (s, accounts) = call(
        Method::POST,
        &format!("{}/client/v4/accounts", node.api()),
        Some(node.admin()),
        Some(br#"{"name":"second"}"#.to_vec()),
    )
    .await;
    let second = success(s, &accounts);

    let log_path = node.log.clone();
    let old_creds = node.creds.clone();
    assert_eq!(node.terminate(), Some(0), "SIGTERM exits 0");

    let node = api_node(&dir, &[]);
    for k in ["accountId", "apiToken", "adminToken"] {
        assert_eq!(node.creds[k], old_creds[k], "{k} kept");
    }
    assert_eq!(
        node.creds["api"],
        json!(node.api()),
        "api follows the new port"
    );
    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    let again = success(s, &v);
    for k in [
        "uid",
        "created",
        "meta",
        "rtmps",
        "rtmpsPlayback",
        "srt",
        "srtPlayback",
    ] {
        if k.starts_with("rtmps") || k.starts_with("srt") {
            assert_eq!(again[k]["streamKey"], input[k]["streamKey"], "{k}");
            assert_eq!(again[k]["passphrase"], input[k]["passphrase"], "{k}");
        } else {
            assert_eq!(again[k], input[k], "{k}");
        }
    }
    let second_inputs = node.stream(second["id"].as_str().unwrap(), "live_inputs");
    let (s, v) = call(
        Method::GET,
        &second_inputs,
        second["apiToken"].as_str(),
        None,
    )
    .await;
    assert_eq!(
        success(s, &v)["liveInputs"],
        json!([]),
        "the second account's token still works"
    );

    // No secret reaches the logs.
    let logs = std::fs::read_to_string(&log_path).unwrap() + &node.log_text();
    let secrets = [
        node.token(),
        node.admin(),
        second["apiToken"].as_str().unwrap(),
        input["rtmps"]["streamKey"].as_str().unwrap(),
        input["rtmpsPlayback"]["streamKey"].as_str().unwrap(),
        input["srt"]["passphrase"].as_str().unwrap(),
        input["srtPlayback"]["passphrase"].as_str().unwrap(),
    ];
    assert!(logs.contains(&uid), "the logs do name the input");
    for s in secrets {
        assert!(!logs.contains(s), "a secret reached the logs");
    }
}

#[tokio::test]
async fn live_input_crud_round_trip_with_exact_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &[]);
    let caps = json!([{"instreamId": "CC1", "language": "en", "name": "English"}]);
    let input = create_input(
        &node,
        json!({"meta": {"name": "yoga"}, "defaultCreator": "creator-42", "enabled": true,
               "captions": caps}),
    )
    .await;
    let uid = input["uid"].as_str().unwrap();
    assert!(is_hex(uid, 32));
    let mut keys: Vec<&str> = input
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "captions",
            "created",
            "defaultCreator",
            "enabled",
            "hls",
            "keysRotatedAt",
            "meta",
            "modified",
            "playback",
            "preferLowLatency",
            "recording",
            "rtmp",
            "rtmpPlayback",
            "rtmps",
            "rtmpsPlayback",
            "srt",
            "srtPlayback",
            "status",
            "uid",
            "watch",
            "webRTC",
            "webRTCPlayback"
        ]
    );
    assert_eq!(input["meta"], json!({"name": "yoga"}));
    assert_eq!(input["defaultCreator"], json!("creator-42"));
    assert_eq!(input["enabled"], json!(true));
    assert_eq!(input["status"], Value::Null);
    assert_eq!(input["captions"], caps);
    let created = input["created"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    let (r, rs, s, h) = (
        node.ready["rtmp"].as_str().unwrap(),
        node.ready["rtmps"].as_str().unwrap(),
        node.ready["srt"].as_str().unwrap(),
        node.ready["http"].as_str().unwrap(),
    );
    assert_eq!(input["rtmps"]["url"], json!(format!("rtmps://{rs}/live/")));
    assert_eq!(
        input["rtmpsPlayback"]["url"],
        json!(format!("rtmps://{rs}/live/"))
    );
    assert_eq!(input["rtmp"]["url"], json!(format!("rtmp://{r}/live/")));
    assert_eq!(
        input["rtmpPlayback"]["url"],
        json!(format!("rtmp://{r}/live/"))
    );
    assert_eq!(
        input["srt"],
        json!({"url": format!("srt://{s}"), "streamId": uid,
        "passphrase": input["srt"]["passphrase"]})
    );
    let webrtc = input["webRTC"]["url"].as_str().unwrap();
    let webrtc_key = webrtc
        .strip_prefix(&format!("http://{h}/"))
        .and_then(|r| r.strip_suffix("/webRTC/publish"))
        .unwrap_or_else(|| panic!("{webrtc}"));
    assert!(is_hex(webrtc_key, 64), "{webrtc}");
    assert_ne!(json!(webrtc_key), input["rtmps"]["streamKey"]);
    assert_eq!(
        input["webRTCPlayback"],
        json!({"url": format!("http://{h}/{uid}/webRTC/play")})
    );
    assert_eq!(
        input["playback"],
        json!({"hls": format!("http://{h}/{uid}/manifest/video.m3u8")})
    );
    assert_eq!(input["keysRotatedAt"], Value::Null);
    assert_eq!(input["preferLowLatency"], json!(false));
    assert!(input.get("deleteRecordingAfterDays").is_none(), "{input}");
    assert_eq!(
        input["srtPlayback"]["streamId"],
        json!(format!("play{uid}"))
    );
    assert_eq!(input["srtPlayback"]["url"], json!(format!("srt://{s}")));
    assert_eq!(
        input["hls"],
        json!({"url": format!("http://{h}/{uid}/manifest/video.m3u8")})
    );
    assert_eq!(
        input["watch"],
        json!({"url": format!("http://{h}/{uid}/watch")})
    );
    let secrets = [
        &input["rtmps"]["streamKey"],
        &input["rtmpsPlayback"]["streamKey"],
        &input["srt"]["passphrase"],
        &input["srtPlayback"]["passphrase"],
    ];
    for (i, a) in secrets.iter().enumerate() {
        let a = a.as_str().unwrap();
        assert!(
            a.len() >= 43 && a.len() <= 79,
            "long secrets that fit SRT: {a}"
        );
        for b in &secrets[i + 1..] {
            assert_ne!(json!(a), **b, "distinct secrets");
        }
    }
    assert_eq!(input["rtmp"]["streamKey"], input["rtmps"]["streamKey"]);
    assert_eq!(
        input["rtmpPlayback"]["streamKey"],
        input["rtmpsPlayback"]["streamKey"]
    );

    // Defaults of an empty body.
    let bare = create_input(&node, json!({})).await;
    assert_eq!(bare["meta"], json!({}));
    assert_eq!(bare["enabled"], json!(true));
    assert_eq!(bare["captions"], json!([]));
    assert_eq!(
        bare["recording"],
        json!({"mode": "off", "timeoutSeconds": 0, "requireSignedURLs": false,
               "allowedOrigins": null, "hideLiveViewerCount": false}),
        "Cloudflare's defaults"
    );
    let (s, v) = call(Method::POST, &node.inputs(""), Some(node.token()), None).await;
    success(s, &v);

    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    assert_eq!(success(s, &v), input);
    let (s, v) = call(Method::GET, &node.inputs(""), Some(node.token()), None).await;
    let list = success(s, &v);
    assert_eq!(list["total"], json!(3), "{list}");
    assert_eq!(list["range"], json!(3), "{list}");
    let list = &list["liveInputs"];
    assert_eq!(list.as_array().unwrap().len(), 3);
    // Listed oldest first, in Cloudflare's list shape: no credentials.
    assert_eq!(list[0]["uid"], input["uid"], "listed oldest first");
    let keys: Vec<&String> = list[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["created", "enabled", "meta", "modified", "uid"],
        "{list}"
    );
    assert_eq!(v["result_info"]["count"], json!(3), "{v}");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let (s, v) = call_json(
        Method::PUT,
        &node.inputs(&format!("/{uid}")),
        node.token(),
        json!({"meta": {"name": "pilates"}, "enabled": false}),
    )
    .await;
    let changed = success(s, &v);
    assert_eq!(changed["meta"], json!({"name": "pilates"}));
    assert_eq!(changed["enabled"], json!(false));
    assert_eq!(
        changed["defaultCreator"],
        json!("creator-42"),
        "untouched fields stay"
    );
    assert_eq!(changed["rtmps"], input["rtmps"], "keys stay");
    assert_eq!(changed["created"], input["created"]);
    assert!(changed["modified"].as_str() > input["modified"].as_str());

    let (s, v) = call(
        Method::DELETE,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    assert_eq!(success(s, &v), Value::Null);
    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    failure(s, &v, StatusCode::NOT_FOUND, "deleted");
    let (s, v) = call(
        Method::DELETE,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    failure(s, &v, StatusCode::NOT_FOUND, "deleted twice");

    // Bad field values.
    for bad in [
        json!({"enabled": "yes"}),
        json!({"meta": "name"}),
        json!({"captions": [{"instreamId": "CC9", "language": "en"}]}),
        json!({"captions": [{"instreamId": "CC1", "language": "en"}, {"instreamId": "CC1", "language": "fr"}]}),
        json!([1, 2]),
    ] {
        let (s, v) = call_json(Method::POST, &node.inputs(""), node.token(), bad.clone()).await;
        failure(s, &v, StatusCode::BAD_REQUEST, &bad.to_string());
    }
}

#[tokio::test]
async fn rotate_keys_changes_all_four_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &[]);
    let input = create_input(&node, json!({})).await;
    let uid = input["uid"].as_str().unwrap();
    let (s, v) = call(
        Method::POST,
        &node.inputs(&format!("/{uid}/rotate_keys")),
        Some(node.token()),
        None,
    )
    .await;
    let rotated = success(s, &v);
    for (k, f) in [
        ("rtmps", "streamKey"),
        ("rtmpsPlayback", "streamKey"),
        ("rtmp", "streamKey"),
        ("rtmpPlayback", "streamKey"),
        ("srt", "passphrase"),
        ("srtPlayback", "passphrase"),
    ] {
        assert_ne!(rotated[k][f], input[k][f], "{k}.{f} rotated");
        assert!(rotated[k][f].as_str().unwrap().len() >= 43);
    }
    assert_eq!(rotated["uid"], input["uid"]);
    assert_eq!(rotated["srt"]["streamId"], input["srt"]["streamId"]);
    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    assert_eq!(success(s, &v)["rtmps"], rotated["rtmps"], "stored");
}
