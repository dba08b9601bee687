//! Signed-playback tests' parts: the API as one account, platform-signed tokens, playlist and
//! session helpers, viewer counts and minutes.

#![allow(dead_code)]

use crate::common::{http, Input, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const RANDOM_UID: &str = "0123456789abcdef0123456789abcdef";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client whose requests come from another loopback address.
pub fn http_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

pub struct Api<'a> {
    pub node: &'a Node,
    pub account: String,
    pub token: String,
}

impl Api<'_> {
    pub fn stream(&self, rest: &str) -> String {
        format!(
            "{}/client/v4/accounts/{}/stream{rest}",
            self.node.api(),
            self.account
        )
    }

    pub async fn call(
        &self,
        method: Method,
        rest: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = http()
            .request(method, self.stream(rest))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: Method, rest: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, rest, body).await;
        assert_eq!(s, StatusCode::OK, "{rest}: {v}");
        v["result"].clone()
    }

    pub async fn input(&self, recording: Value) -> Input {
        Input(
            self.ok(
                Method::POST,
                "/live_inputs",
                Some(json!({"recording": recording})),
            )
            .await,
        )
    }

    pub async fn token(&self, uid: &str, body: Value) -> String {
        let v = self
            .ok(Method::POST, &format!("/{uid}/token"), Some(body))
            .await;
        v["token"].as_str().unwrap().to_string()
    }
}

/// A token signed outside Banyan with `jose`, from the keys endpoint's key.
pub fn platform_sign(key: &Value, sub: &str, exp: i64, rules: Option<Value>) -> String {
    let mut c = std::process::Command::new("node");
    c.arg(root().join("tests/browser/sign-jwt.mjs"))
        .arg(key["jwk"].as_str().unwrap())
        .arg(key["pem"].as_str().unwrap())
        .arg(sub)
        .arg(exp.to_string());
    if let Some(r) = rules {
        c.arg(r.to_string());
    }
    let out = c.output().expect("node runs");
    assert!(
        out.status.success(),
        "sign-jwt.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub async fn get(
    url: &str,
    origin: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut r = http().get(url);
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    let r = r.send().await.unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.unwrap_or_default())
}

/// The status and body of a GET: what a prober learns.
pub async fn probe(url: &str) -> (StatusCode, String) {
    let (s, _, b) = get(url, None).await;
    (s, b)
}

/// Every URI a playlist names.
pub fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .flat_map(|l| {
            if l.starts_with('#') {
                l.split("URI=\"")
                    .skip(1)
                    .filter_map(|p| p.split('"').next())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            } else if l.trim().is_empty() {
                vec![]
            } else {
                vec![l.trim().to_string()]
            }
        })
        .collect()
}

/// The session id a fresh multivariant playlist of `base` hands out.
pub async fn session_id(c: &reqwest::Client, base: &str) -> String {
    for _ in 0..40 {
        let r = c
            .get(format!("{base}/manifest/video.m3u8"))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            let text = r.text().await.unwrap();
            if let Some(id) = text
                .lines()
                .find_map(|l| l.strip_prefix("media.m3u8?s="))
                .map(str::to_string)
            {
                return id;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no session id from {base}");
}

pub async fn live_viewers(base: &str) -> u64 {
    let (s, _, b) = get(&format!("{base}/views"), None).await;
    assert_eq!(s, StatusCode::OK, "{base}/views: {b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    v["liveViewers"].as_u64().unwrap()
}

/// minutesViewed per input uid of the account.
pub async fn minutes(api: &Api<'_>) -> std::collections::HashMap<String, f64> {
    let q = "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
      streamMinutesViewedAdaptiveGroups(limit: 100) { sum { minutesViewed } dimensions { uid } } } } }";
    let r = http()
        .post(format!("{}/client/v4/graphql", api.node.api()))
        .bearer_auth(&api.token)
        .json(&json!({"query": q, "variables": {"a": api.account}}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let groups = v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    groups
        .iter()
        .map(|g| {
            (
                g["dimensions"]["uid"].as_str().unwrap().to_string(),
                g["sum"]["minutesViewed"].as_f64().unwrap(),
            )
        })
        .collect()
}
