//! Custom ingest domains and TLS: uploaded certificates are checked and
//! limited, RTMPS picks the certificate by SNI, and a configured
//! certificate is served over TLS 1.2 and 1.3.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;

use std::process::{Command, Stdio};

use common::calls::*;
use common::tls::presented_cert;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn ingest_domains_are_checked_and_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &["--max-ingest-domains", "2"]);
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

/// RTMPS picks the certificate by SNI: each custom domain gets its own,
/// unknown names and no SNI get the node's; removal takes effect at once.
#[tokio::test]
async fn rtmps_certificate_is_chosen_by_sni() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = api_node(&dir, &["--no-rtmp"]);
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
    let node = api_node(
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
