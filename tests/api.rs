//! The node's HTTP API, credentials and CLI, against the real binary.
//!
//! Each test starts `banyan serve` on a temp data dir with port 0
//! everywhere and reads the ready line (`{"ready":true,"http":..}`) from its
//! stdout.

mod pg;

use pg::Postgres;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_banyan");

/// A running node; killed on drop.
/// The custom domain names the tests' nodes resolve to themselves.
const PROVEN_NAMES: &[&str] = &[
    "push.mine.test",
    "a.push.test",
    "b.push.test",
    "c.push.test",
    "push.one.test",
    "push.two.test",
];

struct Node {
    child: Option<Child>,
    ready: Value,
    creds: Value,
    log: PathBuf,
}

impl Node {
    fn start(data_dir: &Path, extra: &[&str]) -> Node {
        match Node::try_start(data_dir, extra) {
            Ok(n) => n,
            Err(log) => panic!("node did not start:\n{log}"),
        }
    }

    /// Start a node; on failure, the node's log.
    fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Node, String> {
        let log = data_dir.with_extension(format!("log{}", rand_suffix()));
        let mut args = vec![
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--rtmps",
            "127.0.0.1:0",
            "--srt",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ];
        if !extra
            .iter()
            .any(|a| a.starts_with("--rtmp") || *a == "--no-rtmp")
        {
            args.extend(["--rtmp", "127.0.0.1:0"]);
        }
        // Uploaded domains are proven by a token the node fetches from the
        // name: it resolves the test names to itself through a private
        // hosts file and fetches from its own HTTP port.
        args.extend(["--domain-verify-port", "0"]);
        args.extend(extra);
        let hosts = log.with_extension("hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1 localhost {}\n", PROVEN_NAMES.join(" ")),
        )
        .unwrap();
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            ])
            .arg(&hosts)
            .arg(BIN)
            .args(&args)
            .env("RUST_LOG", "debug")
            .env_remove("BANYAN_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn banyan");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let mut node = Node {
            child: Some(child),
            ready: Value::Null,
            creds: Value::Null,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                node.ready = serde_json::from_str(&line).unwrap();
                let creds = std::fs::read_to_string(data_dir.join("credentials.json")).unwrap();
                node.creds = serde_json::from_str(&creds).unwrap();
                Ok(node)
            }
            Err(_) => {
                node.stop_kill();
                Err(node.log_text())
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api(&self) -> String {
        format!("http://{}", self.ready["http"].as_str().unwrap())
    }

    fn account(&self) -> &str {
        self.creds["accountId"].as_str().unwrap()
    }

    fn token(&self) -> &str {
        self.creds["apiToken"].as_str().unwrap()
    }

    fn admin(&self) -> &str {
        self.creds["adminToken"].as_str().unwrap()
    }

    fn stream(&self, account: &str, rest: &str) -> String {
        format!("{}/client/v4/accounts/{account}/stream/{rest}", self.api())
    }

    fn inputs(&self, rest: &str) -> String {
        self.stream(self.account(), &format!("live_inputs{rest}"))
    }

    /// SIGTERM, then the exit status (killed after 10 s).
    fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn stop_kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_kill();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Send a request; returns the status and the parsed body (Null if none).
async fn call(
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

async fn call_json(method: Method, url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    call(
        method,
        url,
        Some(token),
        Some(body.to_string().into_bytes()),
    )
    .await
}

/// The envelope of a success; returns `result`.
fn success(status: StatusCode, v: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["success"], json!(true), "{v}");
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["messages"], json!([]), "{v}");
    v["result"].clone()
}

/// The envelope of a failure with this status.
fn failure(status: StatusCode, v: &Value, want: StatusCode, what: &str) {
    assert_eq!(status, want, "{what}: {v}");
    assert_eq!(v["success"], json!(false), "{what}: {v}");
    assert_eq!(v["result"], Value::Null, "{what}: {v}");
    let e = &v["errors"][0];
    assert!(e["code"].as_u64().is_some(), "{what}: {v}");
    assert!(!e["message"].as_str().unwrap().is_empty(), "{what}: {v}");
    assert_eq!(v["messages"], json!([]), "{what}: {v}");
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn create_input(node: &Node, body: Value) -> Value {
    let (s, v) = call_json(Method::POST, &node.inputs(""), node.token(), body).await;
    success(s, &v)
}

#[tokio::test]
async fn first_start_is_private_and_a_restart_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir, &[]);
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

    let node = Node::start(&dir, &[]);
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
    let node = Node::start(&tmp.path().join("data"), &[]);
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
    let node = Node::start(&tmp.path().join("data"), &[]);
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

/// Every endpoint: no token and a wrong token are 401; another account's
/// token gets 404 for this account's objects; malformed JSON is 400 and an
/// oversized body 413 where a body is read.
#[tokio::test]
async fn every_endpoint_checks_tokens_scope_and_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &[]);
    let (s, v) = call(
        Method::POST,
        &format!("{}/client/v4/accounts", node.api()),
        Some(node.admin()),
        Some(br#"{"name":"other"}"#.to_vec()),
    )
    .await;
    let other = success(s, &v);
    let other_token = other["apiToken"].as_str().unwrap().to_string();
    let other_account = other["id"].as_str().unwrap().to_string();
    assert!(is_hex(&other_account, 32));

    let input = create_input(&node, json!({"meta": {"name": "mine"}})).await;
    let uid = input["uid"].as_str().unwrap();
    let (cert, key) = {
        let c = rcgen::generate_simple_self_signed(vec!["push.mine.test".to_string()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    };
    let domain_body = json!({"domain": "push.mine.test", "certificate": cert, "privateKey": key});
    let (s, v) = call_json(
        Method::POST,
        &node.stream(node.account(), "ingest_domains"),
        node.token(),
        domain_body.clone(),
    )
    .await;
    assert_eq!(success(s, &v)["domain"], json!("push.mine.test"));

    // (method, path under this account's stream API, a valid body if any)
    let a = node.account();
    let table: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "live_inputs".into(), Some(json!({}))),
        (Method::GET, "live_inputs".into(), None),
        (Method::GET, format!("live_inputs/{uid}"), None),
        (
            Method::PUT,
            format!("live_inputs/{uid}"),
            Some(json!({"enabled": true})),
        ),
        (Method::POST, format!("live_inputs/{uid}/rotate_keys"), None),
        (Method::DELETE, format!("live_inputs/{uid}"), None),
        (
            Method::POST,
            "ingest_domains".into(),
            Some(domain_body.clone()),
        ),
        (Method::GET, "ingest_domains".into(), None),
        (Method::DELETE, "ingest_domains/push.mine.test".into(), None),
    ];
    let big = {
        let mut b = br#"{"meta":{"name":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 70 * 1024));
        b.extend(br#""}}"#);
        b
    };
    for (method, path, body) in &table {
        let url = node.stream(a, path);
        let what = format!("{method} {path}");
        let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
        let (s, v) = call(method.clone(), &url, None, bytes.clone()).await;
        failure(
            s,
            &v,
            StatusCode::UNAUTHORIZED,
            &format!("{what} without token"),
        );
        let (s, v) = call(method.clone(), &url, Some("not-a-token"), bytes.clone()).await;
        failure(
            s,
            &v,
            StatusCode::UNAUTHORIZED,
            &format!("{what} with a bad token"),
        );
        // Another account's token on this account's paths...
        let (s, v) = call(method.clone(), &url, Some(&other_token), bytes.clone()).await;
        failure(
            s,
            &v,
            StatusCode::NOT_FOUND,
            &format!("{what} by another account"),
        );
        // ...and on its own account's paths naming this account's objects.
        if path.contains(uid) || path.contains("push.mine.test") {
            let url = node.stream(&other_account, path);
            let (s, v) = call(method.clone(), &url, Some(&other_token), bytes.clone()).await;
            failure(
                s,
                &v,
                StatusCode::NOT_FOUND,
                &format!("{what} of another account's object"),
            );
        }
        if body.is_some() {
            let (s, v) = call(
                method.clone(),
                &url,
                Some(node.token()),
                Some(b"{\"meta\":".to_vec()),
            )
            .await;
            failure(s, &v, StatusCode::BAD_REQUEST, &format!("{what} malformed"));
            let (s, v) = call(method.clone(), &url, Some(node.token()), Some(big.clone())).await;
            failure(
                s,
                &v,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("{what} oversized"),
            );
        }
    }
    // The objects are untouched by all of that.
    let (s, v) = call(
        Method::GET,
        &node.inputs(&format!("/{uid}")),
        Some(node.token()),
        None,
    )
    .await;
    assert_eq!(success(s, &v)["rtmps"], input["rtmps"]);
    let (s, v) = call(
        Method::GET,
        &node.stream(&other_account, "live_inputs"),
        Some(&other_token),
        None,
    )
    .await;
    assert_eq!(success(s, &v)["liveInputs"], json!([]));

    // Accounts: admin only.
    let accounts = format!("{}/client/v4/accounts", node.api());
    for method in [Method::GET, Method::POST] {
        let body = Some(br#"{"name":"x"}"#.to_vec());
        let (s, v) = call(method.clone(), &accounts, None, body.clone()).await;
        failure(s, &v, StatusCode::UNAUTHORIZED, "accounts without token");
        let (s, v) = call(method.clone(), &accounts, Some(node.token()), body.clone()).await;
        failure(s, &v, StatusCode::FORBIDDEN, "accounts with an API token");
    }
    let (s, v) = call(
        Method::POST,
        &accounts,
        Some(node.admin()),
        Some(b"{".to_vec()),
    )
    .await;
    failure(s, &v, StatusCode::BAD_REQUEST, "accounts malformed");
    let (s, v) = call(
        Method::POST,
        &accounts,
        Some(node.admin()),
        Some(big.clone()),
    )
    .await;
    failure(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "accounts oversized");
    let (s, v) = call(Method::GET, &accounts, Some(node.admin()), None).await;
    let list = success(s, &v);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a, other_account.as_str()]);
    assert!(list[1].get("apiToken").is_none(), "tokens are shown once");

    // Unknown routes answer in the envelope too.
    let (s, v) = call(
        Method::GET,
        &format!("{}/client/v4/nothing", node.api()),
        Some(node.token()),
        None,
    )
    .await;
    failure(s, &v, StatusCode::NOT_FOUND, "unknown route");
}

#[tokio::test]
async fn ingest_domains_are_checked_and_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &["--max-ingest-domains", "2"]);
    let url = node.stream(node.account(), "ingest_domains");
    let pair = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    };
    let (c1, k1) = pair("a.push.test");
    let (c2, k2) = pair("b.push.test");
    let (c3, k3) = pair("c.push.test");
    for (body, why) in [
        (
            json!({"domain": "x.push.test", "certificate": c1, "privateKey": k1}),
            "does not cover",
        ),
        (
            json!({"domain": "a.push.test", "certificate": c1, "privateKey": k2}),
            "does not fit",
        ),
        (
            json!({"domain": "a.push.test", "certificate": "junk", "privateKey": k1}),
            "certificate",
        ),
        (
            json!({"domain": "a.push.test", "certificate": c1}),
            "go together",
        ),
        (
            json!({"domain": "not a domain", "certificate": c1, "privateKey": k1}),
            "domain",
        ),
    ] {
        let (s, v) = call_json(Method::POST, &url, node.token(), body).await;
        failure(s, &v, StatusCode::BAD_REQUEST, why);
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(why), "{msg} should say {why}");
    }
    let (s, v) = call_json(
        Method::POST,
        &url,
        node.token(),
        json!({"domain": "A.Push.Test", "certificate": c1, "privateKey": k1}),
    )
    .await;
    let added = success(s, &v);
    assert_eq!(added["domain"], json!("a.push.test"));
    assert!(added.get("privateKey").is_none());
    let (s, v) = call_json(
        Method::POST,
        &url,
        node.token(),
        json!({"domain": "a.push.test", "certificate": c1, "privateKey": k1}),
    )
    .await;
    failure(s, &v, StatusCode::CONFLICT, "twice");
    let (s, v) = call_json(
        Method::POST,
        &url,
        node.token(),
        json!({"domain": "b.push.test", "certificate": c2, "privateKey": k2}),
    )
    .await;
    success(s, &v);
    let (s, v) = call_json(
        Method::POST,
        &url,
        node.token(),
        json!({"domain": "c.push.test", "certificate": c3, "privateKey": k3}),
    )
    .await;
    failure(s, &v, StatusCode::CONFLICT, "over the limit");
    let (s, v) = call(Method::GET, &url, Some(node.token()), None).await;
    let names: Vec<Value> = success(s, &v)
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["domain"].clone())
        .collect();
    assert_eq!(names, [json!("a.push.test"), json!("b.push.test")]);
    let (s, v) = call(
        Method::DELETE,
        &format!("{url}/a.push.test"),
        Some(node.token()),
        None,
    )
    .await;
    success(s, &v);
    let (s, v) = call(
        Method::DELETE,
        &format!("{url}/a.push.test"),
        Some(node.token()),
        None,
    )
    .await;
    failure(s, &v, StatusCode::NOT_FOUND, "removed twice");
}

#[tokio::test]
async fn lifecycle_views_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &[]);
    let input = create_input(&node, json!({})).await;
    let uid = input["uid"].as_str().unwrap();
    let (s, v) = call(
        Method::GET,
        &format!("{}/{uid}/lifecycle", node.api()),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"isInput": true, "videoUID": null, "live": false, "status": null})
        )
    );
    let (s, v) = call(
        Method::GET,
        &format!("{}/{uid}/views", node.api()),
        None,
        None,
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"liveViewers": 0})));
    let resp = http()
        .get(format!("{}/{uid}/watch", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the watch page is served");
    assert!(resp.text().await.unwrap().contains("manifest/video.m3u8"));
    let unknown = "0123456789abcdef0123456789abcdef";
    let (s, _) = call(
        Method::GET,
        &format!("{}/{unknown}/lifecycle", node.api()),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        Method::GET,
        &format!("{}/{unknown}/views", node.api()),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // On the public port /metrics needs the admin token; the metrics
    // listener answers without one.
    let (s, _) = call(Method::GET, &format!("{}/metrics", node.api()), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        Method::GET,
        &format!("{}/metrics", node.api()),
        Some(node.token()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an account token is not enough");
    for (url, token) in [
        (format!("{}/metrics", node.api()), Some(node.admin())),
        (
            format!("http://{}/metrics", node.ready["metrics"].as_str().unwrap()),
            None,
        ),
    ] {
        let mut req = http().get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("banyan_live_inputs_created_total"), "{text}");
    }
}

#[tokio::test]
async fn no_rtmp_hides_the_rtmp_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &["--no-rtmp"]);
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
    let node = Node::start(
        &dir,
        &["--rtmp", "0.0.0.0:0", "--allow-plain-rtmp-on-public"],
    );
    assert!(node.ready["rtmp"].as_str().unwrap().starts_with("0.0.0.0:"));
}

/// `banyan inputs|accounts|domains|analytics` against a running node.
#[tokio::test]
async fn cli_subcommands_work_against_a_running_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir, &[]);
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

/// An ffmpeg publisher; killed on drop.
struct Publisher(Child);

impl Publisher {
    fn start(url: &str, seconds: u32) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-g",
                "25",
                "-bf",
                "0",
                "-c:a",
                "aac",
                "-t",
                &seconds.to_string(),
            ])
            .args(["-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        Publisher(child)
    }

    /// The exit status if it ends within `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fail if any secret of these live inputs appears in the node's log.
fn assert_no_secrets_logged(node: &Node, inputs: &[&Value]) {
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

async fn wait_status(node: &Node, uid: &str, want: Value) -> Value {
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

async fn live(node: &Node, uid: &str) -> Value {
    let (_, v) = call(
        Method::GET,
        &format!("{}/{uid}/lifecycle", node.api()),
        None,
        None,
    )
    .await;
    v["live"].clone()
}

/// `status` and `/lifecycle` follow a real RTMPS publisher; rotate_keys
/// disconnects it and its old key is refused; a disabled input refuses
/// publishing.
#[tokio::test]
async fn status_follows_a_real_publisher_and_rotation_disconnects_it() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &["--no-rtmp"]);
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

/// Records the server's certificate and accepts it (the test compares it).
#[derive(Debug)]
struct CaptureCert(std::sync::Mutex<Option<Vec<u8>>>);

impl rustls::client::danger::ServerCertVerifier for CaptureCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf certificate the RTMPS listener presents for `sni` (an IP
/// address sends no SNI), over TLS 1.2 or 1.3.
fn presented_cert(addr: &str, sni: &str, tls12_only: bool) -> Vec<u8> {
    use std::sync::Arc;
    let capture = Arc::new(CaptureCert(std::sync::Mutex::new(None)));
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(capture.clone())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("tls handshake");
    }
    let der = capture.0.lock().unwrap().take();
    der.expect("a certificate")
}

/// RTMPS picks the certificate by SNI: each custom domain gets its own,
/// unknown names and no SNI get the node's; removal takes effect at once.
#[tokio::test]
async fn rtmps_certificate_is_chosen_by_sni() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir, &["--no-rtmp"]);
    let rtmps = node.ready["rtmps"].as_str().unwrap().to_string();
    let url = node.stream(node.account(), "ingest_domains");
    let mut ders = Vec::new();
    for name in ["push.one.test", "push.two.test"] {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let body = json!({"domain": name, "certificate": c.cert.pem(),
                          "privateKey": c.key_pair.serialize_pem()});
        let (s, v) = call_json(Method::POST, &url, node.token(), body).await;
        success(s, &v);
        ders.push(c.cert.der().to_vec());
    }
    let pem = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    let default = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    let addr = rtmps.clone();
    let got = tokio::task::spawn_blocking(move || {
        [
            presented_cert(&addr, "push.one.test", false),
            presented_cert(&addr, "PUSH.TWO.TEST", true),
            presented_cert(&addr, "unknown.test", false),
            presented_cert(&addr, "127.0.0.1", false),
        ]
    })
    .await
    .unwrap();
    assert!(got[0] == ders[0], "push.one.test gets its certificate");
    assert!(
        got[1] == ders[1],
        "push.two.test gets its certificate (TLS 1.2)"
    );
    assert!(
        got[2] == default,
        "an unknown name gets the node's certificate"
    );
    assert!(got[3] == default, "no SNI gets the node's certificate");

    let (s, v) = call(
        Method::DELETE,
        &format!("{url}/push.one.test"),
        Some(node.token()),
        None,
    )
    .await;
    success(s, &v);
    let addr = rtmps.clone();
    let after = tokio::task::spawn_blocking(move || presented_cert(&addr, "push.one.test", false))
        .await
        .unwrap();
    assert!(after == default, "a removed domain falls back at once");
}

/// The same node code on PostgreSQL: credentials, inputs, accounts and
/// domains survive a restart.
#[tokio::test]
async fn the_api_works_on_postgresql() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = pg.url();
    let args = ["--database-url", url.as_str()];
    let node = Node::start(&dir, &args);
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

    let node = Node::start(&dir, &args);
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
    let b = Node::start(&tmp_b.path().join("data"), &args);
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

/// The SRT listener takes the input's stream id and passphrase from the
/// API; rotation disconnects the publisher and the old passphrase fails.
#[tokio::test]
async fn srt_publishing_follows_the_api_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &["--no-rtmp"]);
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
    let publish = |url: String, seconds: u32| {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "25", "-bf", "0", "-t", &seconds.to_string()])
            .args(["-f", "mpegts", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        Publisher(child)
    };
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

/// Repeated bad tokens from one address get 429 (the answer is still the
/// envelope), but a valid token from that address is still served: many
/// clients can share one address.
#[tokio::test]
async fn failed_token_attempts_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"), &["--no-rtmp"]);
    let url = node.inputs("");
    for i in 0..30 {
        let (s, v) = call(Method::GET, &url, Some(&format!("guess-{i}")), None).await;
        failure(s, &v, StatusCode::UNAUTHORIZED, "a wrong token");
    }
    let (s, v) = call(Method::GET, &url, Some("guess-again"), None).await;
    failure(s, &v, StatusCode::TOO_MANY_REQUESTS, "over the limit");
    let (s, v) = call(Method::GET, &url, Some(node.token()), None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a valid token from a limited address: {v}"
    );
    let (s, v) = call(Method::GET, &url, Some("guess-after"), None).await;
    failure(s, &v, StatusCode::TOO_MANY_REQUESTS, "still limited");
    let metrics = http()
        .get(format!(
            "http://{}/metrics",
            node.ready["metrics"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("banyan_api_auth_failures_total 30"),
        "{metrics}"
    );
}

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
             srt = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n\
             public_host = \"file.example.test\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--public-host", "live.example.test"])
        .env("BANYAN_NO_RTMP", "true")
        .env_remove("BANYAN_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    // Adopt the process so it is killed on every path.
    let node = Node {
        child: Some(child),
        ready: serde_json::from_str(&line.expect("ready line")).unwrap(),
        creds: serde_json::from_str(
            &std::fs::read_to_string(dir.join("credentials.json")).unwrap(),
        )
        .unwrap(),
        log: PathBuf::new(),
    };
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

/// A configured certificate replaces the self-signed one; RTMPS speaks
/// TLS 1.2 (openssl) and 1.3 (rustls). Nothing older is compiled in.
#[tokio::test]
async fn configured_certificate_over_tls12_and_tls13() {
    let tmp = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["live.example.test".to_string()]).unwrap();
    let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(
        &dir,
        &[
            "--no-rtmp",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!dir.join("tls").exists(), "no self-signed certificate made");
    let addr = node.ready["rtmps"].as_str().unwrap().to_string();
    let a = addr.clone();
    let der = tokio::task::spawn_blocking(move || presented_cert(&a, "127.0.0.1", false))
        .await
        .unwrap();
    assert!(
        der == made.cert.der().to_vec(),
        "the configured certificate (TLS 1.3)"
    );
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-tls1_2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TLSv1.2"), "TLS 1.2 is accepted: {text}");
}
