//! Who may call what: tokens, account scope and bodies on every endpoint,
//! the rate limit on failed tokens, and the public lifecycle, views and
//! metrics routes.
//!
//! Each test starts `banyan serve` through the test kit (tests/common) on
//! a temp data dir with port 0 everywhere.

mod common;

use common::calls::*;
use common::http;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every endpoint: no token and a wrong token are 401; another account's
/// token gets 404 for this account's objects; malformed JSON is 400 and an
/// oversized body 413 where a body is read.
#[tokio::test]
async fn every_endpoint_checks_tokens_scope_and_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &[]);
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

/// Repeated bad tokens from one address get 429 (the answer is still the
/// envelope), but a valid token from that address is still served: many
/// clients can share one address.
#[tokio::test]
async fn failed_token_attempts_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &["--no-rtmp"]);
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

#[tokio::test]
async fn lifecycle_views_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let node = api_node(&tmp.path().join("data"), &[]);
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
