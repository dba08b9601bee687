//! Upgrade: a data dir made by the last release before schema migrations
//! (commit 5fa896c; tests/fixtures/upgrade/README.md says how) is started
//! by this binary. Everything the old node answered through its API
//! (inputs with their secrets, meta, recording and options, outputs,
//! signing keys, the webhook, API tokens, ingest domains, accounts,
//! analytics) is answered the same; the old credentials, stream keys and
//! signing key still work: ffmpeg publishes to old inputs with their old
//! keys and plays them back, over RTMP and over HLS with a token signed by
//! the old key (openssl). `banyan doctor` reports the database as made
//! before migrations, then as up to date.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{http, Input, Node, Proto};
use serde_json::{json, Value};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

fn expected(name: &str) -> Value {
    let path = fixture().join("expected").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// `v` with every loopback address and port in URLs written as `HOST`:
/// the listeners' ports differ from run to run, nothing else may.
fn normalized(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let Some(at) = s.find("://127.0.0.1:") else {
                return v.clone();
            };
            let host = at + "://".len();
            let end = s[host..].find('/').map_or(s.len(), |i| host + i);
            Value::String(format!("{}HOST{}", &s[..host], &s[end..]))
        }
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalized(v))).collect())
        }
        _ => v.clone(),
    }
}

/// Every field the old node answered is answered the same (fields this
/// node adds are allowed), URLs' ports aside.
fn assert_keeps(what: &str, old: &Value, new: &Value) {
    fn walk(path: &str, old: &Value, new: &Value, diffs: &mut Vec<String>) {
        match (old, new) {
            (Value::Object(o), Value::Object(n)) => {
                for (k, v) in o {
                    match n.get(k) {
                        Some(nv) => walk(&format!("{path}.{k}"), v, nv, diffs),
                        None => diffs.push(format!("{path}.{k}: gone (was {v})")),
                    }
                }
            }
            (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
                for (i, (a, b)) in o.iter().zip(n).enumerate() {
                    walk(&format!("{path}[{i}]"), a, b, diffs);
                }
            }
            _ if old != new => diffs.push(format!("{path}: was {old}, now {new}")),
            _ => {}
        }
    }
    let mut diffs = Vec::new();
    walk(what, &normalized(old), &normalized(new), &mut diffs);
    assert!(diffs.is_empty(), "{what} changed:\n{}", diffs.join("\n"));
}

struct Api {
    base: String,
    account: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = http()
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        let v = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(v["success"], json!(true), "GET {path}: {v}");
        v["result"].clone()
    }

    fn stream(&self, rest: &str) -> String {
        format!("/client/v4/accounts/{}/stream{rest}", self.account)
    }
}

/// `banyan doctor` on the data dir; its report.
fn doctor(data: &Path) -> String {
    let out = std::process::Command::new(common::BIN)
        .arg("doctor")
        .arg("--data-dir")
        .arg(data)
        .args(["--http", "127.0.0.1:9", "--metrics", "127.0.0.1:9"])
        .env_remove("BANYAN_DATA_DIR")
        .output()
        .expect("run banyan doctor");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The analytics query of the fixture's script, on its day.
fn analytics_query(account: &str, day: &str, next: &str) -> String {
    format!(
        "{{ viewer {{ accounts(filter: {{accountTag: \"{account}\"}}) {{
  streamMinutesViewedAdaptiveGroups(limit: 100, orderBy: [datetime_ASC, protocol_ASC],
    filter: {{date_geq: \"{day}\", date_lt: \"{next}\"}}) {{
    sum {{ minutesViewed }} dimensions {{ creator uid date datetime protocol }} }} }} }} }}"
    )
}

async fn graphql(api: &Api, query: &str) -> Value {
    http()
        .post(format!("{}/client/v4/graphql", api.base))
        .bearer_auth(&api.token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An RS256 playback token for `uid`, signed with the account's signing
/// key as the old node gave it (base64 PKCS#1 PEM), by openssl.
fn sign_with_old_key(key: &Value, uid: &str, dir: &Path) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pem = b64.decode(key["pem"].as_str().unwrap()).unwrap();
    let pem_path = dir.join("old-key.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let kid = key["id"].as_str().unwrap();
    let header = url.encode(json!({"alg": "RS256", "kid": kid}).to_string());
    let claims = url.encode(json!({"sub": uid, "kid": kid, "exp": exp}).to_string());
    let input = format!("{header}.{claims}");
    let data = dir.join("jwt-input");
    std::fs::write(&data, &input).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&pem_path)
        .arg(&data)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{input}.{}", url.encode(out.stdout))
}

/// ffmpeg plays `url` for up to `secs` seconds; the video frames it got.
async fn play(url: &str, secs: u32) -> usize {
    let mut c = common::ffmpeg();
    c.arg("-i")
        .arg(url)
        .args([
            "-t",
            &secs.to_string(),
            "-map",
            "0:v",
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ])
        .stdout(std::process::Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .expect("the player finished")
        .expect("ffmpeg runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        frames > 0,
        "{url}: nothing played: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    frames
}

#[tokio::test]
async fn a_data_dir_of_the_last_release_upgrades_with_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixture().join("data"), &data);
    let before = doctor(&data);
    assert!(
        before.contains("database made by a node from before schema migrations"),
        "{before}"
    );

    let node = Node::start_on(&data, &[]);
    let fx = expected("fixture.json");
    let api = Api {
        base: node.api(),
        account: node.creds["accountId"].as_str().unwrap().into(),
        token: node.creds["apiToken"].as_str().unwrap().into(),
    };
    assert!(
        node.log_text().contains("adopting it"),
        "{}",
        node.log_text()
    );

    // Inputs, their outputs, keys, webhook, tokens, domains.
    let list = api.get(&api.stream("/live_inputs")).await;
    assert_keeps("live_inputs", &expected("live_inputs.json"), &list);
    let mut inputs = Vec::new();
    for uid in fx["inputs"].as_array().unwrap() {
        let uid = uid.as_str().unwrap();
        let got = api.get(&api.stream(&format!("/live_inputs/{uid}"))).await;
        assert_keeps(
            &format!("input {uid}"),
            &expected(&format!("live_input_{uid}.json")),
            &got,
        );
        let outputs = api
            .get(&api.stream(&format!("/live_inputs/{uid}/outputs")))
            .await;
        assert_keeps(
            &format!("outputs of {uid}"),
            &expected(&format!("outputs_{uid}.json")),
            &outputs,
        );
        inputs.push(got);
    }
    assert_keeps(
        "keys",
        &expected("keys.json"),
        &api.get(&api.stream("/keys")).await,
    );
    assert_keeps(
        "webhook",
        &expected("webhook.json"),
        &api.get(&api.stream("/webhook")).await,
    );
    let tokens = format!("/client/v4/accounts/{}/tokens", api.account);
    assert_keeps("tokens", &expected("tokens.json"), &api.get(&tokens).await);
    assert_keeps(
        "ingest_domains",
        &expected("ingest_domains.json"),
        &api.get(&api.stream("/ingest_domains")).await,
    );
    let domains = api.get(&api.stream("/ingest_domains")).await;
    assert_eq!(domains[0]["status"], json!("active"), "{domains}");

    // The named token made by the old node still opens the account.
    let named = Api {
        token: expected("token_created.json")["token"]
            .as_str()
            .unwrap()
            .into(),
        base: api.base.clone(),
        account: api.account.clone(),
    };
    assert_keeps(
        "live_inputs (named token)",
        &expected("live_inputs.json"),
        &named.get(&named.stream("/live_inputs")).await,
    );
    // Accounts (admin token) and the second account's own token.
    let admin = Api {
        token: node.creds["adminToken"].as_str().unwrap().into(),
        base: api.base.clone(),
        account: api.account.clone(),
    };
    assert_keeps(
        "accounts",
        &expected("accounts.json"),
        &admin.get("/client/v4/accounts").await,
    );
    let two = expected("account_created.json");
    let two = Api {
        base: api.base.clone(),
        account: two["id"].as_str().unwrap().into(),
        token: two["apiToken"].as_str().unwrap().into(),
    };
    assert_keeps(
        "live_inputs of the second account",
        &expected("live_inputs_two.json"),
        &two.get(&two.stream("/live_inputs")).await,
    );

    // Analytics: the same answer on the fixture's day, and the whole month
    // (read from the monthly rollup the migration filled) sums the same.
    let day = fx["day"].as_str().unwrap();
    let next = fx["next"].as_str().unwrap();
    let got = graphql(&api, &analytics_query(&api.account, day, next)).await;
    assert_eq!(got, expected("analytics.json"));
    let groups = |v: &Value| {
        v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let total: f64 = groups(&got)
        .iter()
        .map(|g| g["sum"]["minutesViewed"].as_f64().unwrap())
        .sum();
    assert!(total > 1.0, "{got}");
    let (y, m): (u32, u32) = (day[..4].parse().unwrap(), day[5..7].parse().unwrap());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let month_q = format!(
        "{{ viewer {{ accounts(filter: {{accountTag: \"{}\"}}) {{
          streamMinutesViewedAdaptiveGroups(limit: 10,
            filter: {{date_geq: \"{y}-{m:02}-01\", date_lt: \"{ny}-{nm:02}-01\"}}) {{
            sum {{ minutesViewed }} dimensions {{ creator }} }} }} }} }}",
        api.account
    );
    let m = graphql(&api, &month_q).await;
    let g = groups(&m);
    assert_eq!(g.len(), 1, "{m}");
    assert_eq!(g[0]["dimensions"]["creator"], json!("creator-a"));
    let month_total = g[0]["sum"]["minutesViewed"].as_f64().unwrap();
    assert!(
        (month_total - total).abs() < 0.002,
        "{month_total} vs {total}"
    );

    // The node works: ffmpeg publishes to the old inputs with their old
    // keys; A plays over RTMP with its old playback key, B (signed URLs
    // only) over HLS with a token signed by the old signing key.
    let a = Input(inputs[0].clone());
    let b = Input(inputs[1].clone());
    assert_eq!(a.uid(), fx["published"].as_str().unwrap());
    let mut pub_a = common::publish_looped(&a, -1);
    let mut pub_b = common::publish_looped(&b, -1);
    node.wait_connected(a.uid(), &mut pub_a).await;
    node.wait_connected(b.uid(), &mut pub_b).await;
    let frames = play(&a.play_url(Proto::Rtmp), 3).await;
    assert!(frames >= 30, "{frames} frames over RTMP");
    let by_uid = format!("{}/{}/manifest/video.m3u8", api.base, b.uid());
    let refused = http().get(&by_uid).send().await.unwrap().status();
    assert!(refused.is_client_error(), "{by_uid}: {refused}");
    let token = sign_with_old_key(&expected("key_created.json"), b.uid(), tmp.path());
    let signed = format!("{}/{token}/manifest/video.m3u8", api.base);
    let frames = play(&signed, 3).await;
    assert!(frames >= 30, "{frames} frames over HLS");
    pub_a.stop().await;
    pub_b.stop().await;
    drop(node);

    // A second start on the migrated data dir: nothing to do, all there.
    let after = doctor(&data);
    assert!(after.contains("database schema up to date"), "{after}");
    let node = Node::start_on(&data, &[]);
    assert!(!node.log_text().contains("adopting it"));
    let api = Api {
        base: node.api(),
        ..api
    };
    let list = api.get(&api.stream("/live_inputs")).await;
    assert_keeps(
        "live_inputs after a restart",
        &expected("live_inputs.json"),
        &list,
    );
}
