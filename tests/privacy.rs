//! Private by default: what a caller without a token can learn, account API
//! tokens, the admin token's rotation, and the modes of secret files.
//!
//! - Two accounts, each with a live input published by ffmpeg (one of them
//!   the witness, played throughout): no unauthenticated answer (the public
//!   `/metrics`, the metrics listener with default settings, unknown routes,
//!   wrong uids, the watch page, lifecycle and views, headers) names the
//!   other account's uid or id; the node's log holds no secret.
//! - Per-stream series are hashed on request and go away with their input.
//! - Tokens: create, list (no secret), use, revoke (then 401); another
//!   account's token can neither list nor revoke; a cap per account; the
//!   CLI; the admin token's rotation (the old one is refused after).
//! - credentials.json, the TLS key, the database and the metrics key made
//!   0644 before a restart are 0600 after it.

mod common;
mod reliab;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use reliab::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// An answer: status, headers and body as one text to scan, and the body.
struct Answer {
    status: StatusCode,
    text: String,
    body: String,
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let mut text = String::new();
    for (k, v) in resp.headers() {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let body = resp.text().await.unwrap_or_default();
    text.push_str(&body);
    Answer { status, text, body }
}

async fn get(url: &str, token: Option<&str>) -> Answer {
    send(reqwest::Method::GET, url, token, None).await
}

/// The `result` of a successful call in the envelope.
async fn ok(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> Value {
    let a = send(method, url, Some(token), body).await;
    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
    assert!(
        a.status.is_success() && v["success"] == json!(true),
        "{url}: {} {}",
        a.status,
        a.body
    );
    v["result"].clone()
}

fn admin(node: &Node) -> String {
    node.creds["adminToken"]
        .as_str()
        .expect("adminToken")
        .into()
}

/// A new account (by the admin token): its id and API token.
async fn new_account(node: &Node, name: &str) -> (String, String) {
    let r = ok(
        reqwest::Method::POST,
        &format!("{}/client/v4/accounts", node.api()),
        &admin(node),
        Some(json!({"name": name})),
    )
    .await;
    (
        r["id"].as_str().unwrap().into(),
        r["apiToken"].as_str().unwrap().into(),
    )
}

fn metrics_url(node: &Node) -> String {
    format!("http://{}/metrics", node.addr("metrics"))
}

/// Wait (bounded) until `/{uid}/lifecycle` says live.
async fn wait_live(node: &Node, uid: &str) {
    for _ in 0..150 {
        let a = get(&format!("{}/{uid}/lifecycle", node.api()), None).await;
        if a.body.contains("\"live\":true") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{uid} never went live; node log:\n{}", node.log_text());
}

fn assert_absent(what: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, s) in secrets {
        assert!(!text.contains(s), "{what} names {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_unauthenticated_names_another_accounts_uid() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = Node::start(&dir.path().join("data"), &dir.path().join("node.log"), &[]);
    let witness = Witness::start(&node, dir.path(), 10).await;
    let inputs = node.get("live_inputs").await;
    let uid_a = inputs["liveInputs"][0]["uid"]
        .as_str()
        .expect("witness uid")
        .to_string();
    let input_a = node.get(&format!("live_inputs/{uid_a}")).await;
    let key_a = input_a["rtmp"]["streamKey"].as_str().unwrap().to_string();

    // Account B with its own live input, published by ffmpeg.
    let (acct_b, token_b) = new_account(&node, "b").await;
    let input_b = ok(
        reqwest::Method::POST,
        &format!(
            "{}/client/v4/accounts/{acct_b}/stream/live_inputs",
            node.api()
        ),
        &token_b,
        Some(json!({"meta": {"name": "b"}})),
    )
    .await;
    let uid_b = input_b["uid"].as_str().unwrap().to_string();
    let key_b = input_b["rtmp"]["streamKey"].as_str().unwrap().to_string();
    let mut pub_b = publish(&clip("smptebars"), &rtmp_publish_url(&input_b));
    wait_live(&node, &uid_b).await;
    // Long enough for any per-stream meter to have reported.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let acct_a = node.account();
    let both = [
        ("uid A", uid_a.as_str()),
        ("uid B", uid_b.as_str()),
        ("account A", acct_a.as_str()),
        ("account B", acct_b.as_str()),
    ];
    let api = node.api();

    // /metrics on the public port: 401 without a token, 403 with an
    // account's token, and no uid either way.
    let a = get(&format!("{api}/metrics"), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_absent("public /metrics without a token", &a.text, &both);
    let a = get(&format!("{api}/metrics"), Some(&token_b)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_absent("public /metrics with B's token", &a.text, &both);

    // The metrics listener with default settings: real metrics, no uid.
    let a = get(&metrics_url(&node), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("banyan_viewers"), "{}", a.body);
    assert!(
        !a.body.contains("banyan_ingest_fps"),
        "per-stream series are off by default:\n{}",
        a.body
    );
    assert_absent("the metrics listener", &a.text, &both);
    let a = get(
        &format!("http://{}/{uid_a}/watch", node.addr("metrics")),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "only /metrics there");

    // Unknown routes, wrong uids, another account's objects.
    let unknown = "0123456789abcdef0123456789abcdef";
    for url in [
        format!("{api}/nope"),
        format!("{api}/client/v4/nope"),
        format!("{api}/{unknown}/manifest/video.m3u8"),
        format!("{api}/{unknown}/lifecycle"),
        format!("{api}/{unknown}/views"),
        format!("{api}/{unknown}/watch"),
        format!("{api}/client/v4/accounts/{acct_b}/stream/live_inputs"),
        format!("{api}/client/v4/accounts/{acct_b}/stream/live_inputs/{unknown}"),
    ] {
        let a = get(&url, None).await;
        // The watch page is a page for any well-formed uid.
        if !url.ends_with("/watch") {
            assert!(a.status.is_client_error(), "{url}: {}", a.status);
        }
        assert_absent(&url, &a.text, &both);
    }
    // With A's token: B's input and B's account answer 404 without naming
    // anything of B beyond what the caller sent.
    for url in [
        format!("{api}/client/v4/accounts/{acct_a}/stream/live_inputs/{uid_b}"),
        format!("{api}/client/v4/accounts/{acct_b}/stream/live_inputs"),
        format!("{api}/client/v4/accounts/{acct_b}/tokens"),
    ] {
        let a = get(&url, Some(&node.token())).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{url}: {}", a.text);
        assert_absent(&url, &a.text, &both);
    }

    // Public per-input answers of one input name nothing of the other.
    for (mine, others) in [
        (&uid_a, [both[1], both[2], both[3]]),
        (&uid_b, [both[0], both[2], both[3]]),
    ] {
        for what in ["watch", "lifecycle", "views", "manifest/video.m3u8"] {
            let url = format!("{api}/{mine}/{what}");
            let a = get(&url, None).await;
            if what != "manifest/video.m3u8" {
                assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.text);
            }
            if what == "watch" {
                assert!(a.body.contains(mine.as_str()), "{url}: its own page");
            }
            assert_absent(&url, &a.text, &others);
        }
    }

    // The ready line names no account; the log holds no secret.
    let ready = node.ready.to_string();
    assert_absent("the ready line", &ready, &both);
    assert!(node.ready["metrics"].is_string(), "{ready}");
    let log = node.log_text();
    let admin_token = admin(&node);
    assert_absent(
        "the node's log",
        &log,
        &[
            ("A's stream key", key_a.as_str()),
            ("B's stream key", key_b.as_str()),
            ("B's API token", token_b.as_str()),
            ("the admin token", admin_token.as_str()),
            ("A's API token", node.creds["apiToken"].as_str().unwrap()),
        ],
    );

    witness.check().await;
    pub_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_stream_series_are_hashed_and_go_away_with_their_input() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = Node::start(
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        &["--metrics-per-stream", "hashed"],
    );
    let input = node.create_input("hashed").await;
    let uid = input["uid"].as_str().unwrap().to_string();
    let mut publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&input));
    node.wait_status(&uid, "connected", 15).await;

    let mut line = None;
    for _ in 0..60 {
        let text = get(&metrics_url(&node), None).await.body;
        assert!(!text.contains(&uid), "a uid in hashed mode:\n{text}");
        line = text
            .lines()
            .find(|l| l.starts_with("banyan_ingest_fps{stream=\""))
            .map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let line = line.expect("no per-stream series in hashed mode");
    let label = line.split('"').nth(1).expect("a label value").to_string();
    assert!(
        label.len() == 12 && label.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    let fps: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((20.0..=35.0).contains(&fps), "{line}");
    // The same on the public port with the admin token.
    let a = get(&format!("{}/metrics", node.api()), Some(&admin(&node))).await;
    assert!(
        a.body.contains(&format!("stream=\"{label}\"")),
        "{}",
        a.body
    );

    // Deleting the input removes its series at once.
    ok(
        reqwest::Method::DELETE,
        &node.stream_api(&format!("live_inputs/{uid}")),
        &node.token(),
        None,
    )
    .await;
    let text = get(&metrics_url(&node), None).await.body;
    assert!(
        !text.contains(&label),
        "the deleted input's series stayed:\n{text}"
    );
    publisher.stop().await;
}

/// Run the `banyan` client against the node's data dir: (success, stdout
/// as JSON, stderr).
fn cli(data: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_banyan"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("BANYAN_API")
        .env_remove("BANYAN_TOKEN")
        .env_remove("BANYAN_ACCOUNT")
        .output()
        .expect("run banyan");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_tokens_and_admin_rotation() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = Node::start(&data, &dir.path().join("node.log"), &[]);
    let api = node.api();
    let tokens_a = format!("{api}/client/v4/accounts/{}/tokens", node.account());
    let inputs_a = node.stream_api("live_inputs");
    use reqwest::Method;

    // Create: the secret once; list: never the secret.
    let made = ok(
        Method::POST,
        &tokens_a,
        &node.token(),
        Some(json!({"name": "ci"})),
    )
    .await;
    let (id, secret) = (
        made["id"].as_str().unwrap().to_string(),
        made["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(made["name"], json!("ci"));
    assert!(made["created"].is_string(), "{made}");
    let a = get(&tokens_a, Some(&node.token())).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        !a.text.contains(&secret),
        "the list shows a secret: {}",
        a.body
    );
    let list: Value = serde_json::from_str(&a.body).unwrap();
    let listed = list["result"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t["id"] == json!(id) && t["name"] == json!("ci")),
        "{list}"
    );
    assert!(listed.iter().all(|t| t.get("token").is_none()), "{list}");
    // Use it.
    assert_eq!(get(&inputs_a, Some(&secret)).await.status, StatusCode::OK);

    // Another account's token can neither list nor revoke.
    let (acct_b, token_b) = new_account(&node, "b").await;
    assert_eq!(
        get(&tokens_a, Some(&token_b)).await.status,
        StatusCode::NOT_FOUND
    );
    let a = send(
        Method::DELETE,
        &format!("{tokens_a}/{id}"),
        Some(&token_b),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(
        get(&inputs_a, Some(&secret)).await.status,
        StatusCode::OK,
        "still valid"
    );
    // Nor act with A's token on B's tokens.
    let tokens_b = format!("{api}/client/v4/accounts/{acct_b}/tokens");
    assert_eq!(
        get(&tokens_b, Some(&secret)).await.status,
        StatusCode::NOT_FOUND
    );

    // Revoke: refused from the next request on.
    ok(
        Method::DELETE,
        &format!("{tokens_a}/{id}"),
        &node.token(),
        None,
    )
    .await;
    assert_eq!(
        get(&inputs_a, Some(&secret)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = send(
        Method::DELETE,
        &format!("{tokens_a}/{id}"),
        Some(&node.token()),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // The admin token manages any account's tokens; a cap per account.
    let listed = ok(Method::GET, &tokens_b, &admin(&node), None).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "B's first token: {listed}"
    );
    for i in 1..100 {
        ok(
            Method::POST,
            &tokens_b,
            &admin(&node),
            Some(json!({"name": format!("t{i}")})),
        )
        .await;
    }
    let a = send(Method::POST, &tokens_b, Some(&token_b), Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(
        a.body.contains("max_tokens_per_account (100)"),
        "{}",
        a.body
    );
    let m = get(&metrics_url(&node), None).await.body;
    assert!(
        counter(
            &m,
            "banyan_api_refused_total",
            &["limit=\"max_tokens_per_account\""]
        ) >= 1.0,
        "{m}"
    );

    // The client subcommands.
    let (ok_, made, err) = cli(&data, &["tokens", "create", "--name", "deploy"]);
    assert!(ok_, "{err}");
    let cli_token = made["token"]
        .as_str()
        .expect("token printed once")
        .to_string();
    assert_eq!(
        get(&inputs_a, Some(&cli_token)).await.status,
        StatusCode::OK
    );
    let (ok_, list, err) = cli(&data, &["tokens", "list"]);
    assert!(ok_, "{err}");
    assert!(!list.to_string().contains(&cli_token), "{list}");
    let cli_id = made["id"].as_str().unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == json!(cli_id)));
    let (ok_, _, err) = cli(&data, &["tokens", "revoke", cli_id]);
    assert!(ok_, "{err}");
    assert_eq!(
        get(&inputs_a, Some(&cli_token)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Rotation: only by the admin token; the old one is refused after, the
    // new one is in credentials.json (0600).
    let accounts = format!("{api}/client/v4/accounts");
    let a = send(
        Method::POST,
        &format!("{api}/client/v4/admin/rotate"),
        Some(&node.token()),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let old = admin(&node);
    let (ok_, out, err) = cli(&data, &["admin", "rotate"]);
    assert!(ok_, "{err}");
    assert!(!out.to_string().contains(&old), "{out}");
    assert_eq!(
        get(&accounts, Some(&old)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("credentials.json")).unwrap())
            .unwrap();
    let new = creds["adminToken"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(get(&accounts, Some(new)).await.status, StatusCode::OK);
    assert_eq!(mode(&data.join("credentials.json")), 0o600);
    // The API token is untouched.
    assert_eq!(creds["apiToken"], node.creds["apiToken"]);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_are_0600_after_a_restart() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let data = dir.path().join("data");
    let log = dir.path().join("node.log");
    let files = [
        data.join("credentials.json"),
        data.join("tls/key.pem"),
        data.join("banyan.db"),
        data.join("metrics.key"),
    ];
    let mut node = Node::start(&data, &log, &[]);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} on first start", f.display());
    }
    let token = node.token();
    node.kill();
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let node = Node::start(&data, &log, &[]);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} after a restart", f.display());
    }
    // Same credentials, still working.
    assert_eq!(node.token(), token);
    assert_eq!(
        get(&node.stream_api("live_inputs"), Some(&token))
            .await
            .status,
        StatusCode::OK
    );
}
