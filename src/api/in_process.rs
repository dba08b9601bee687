//! The API router built from its context (SQLite in a temporary dir, no
//! listener, no process), driven request by request.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::serve::testkit::{call, call_raw, TestNode};

fn inputs_uri(account: &str) -> String {
    format!("/client/v4/accounts/{account}/stream/live_inputs")
}

/// The error envelope: `success: false` and the one error's code.
fn error_code(v: &Value) -> u64 {
    assert_eq!(v["success"], json!(false), "{v}");
    assert_eq!(v["result"], Value::Null, "{v}");
    v["errors"][0]["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

#[tokio::test]
async fn tokens_are_checked_before_anything_else() {
    let n = TestNode::new(&[]).await;
    let r = n.router();
    let uri = inputs_uri(&n.creds.account_id);
    let (s, v) = call(&r, Method::GET, &uri, None, None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::UNAUTHORIZED, 10000));
    let (s, v) = call(&r, Method::GET, &uri, Some("not-a-token"), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::UNAUTHORIZED, 10000));
    // A scheme other than Bearer is no token.
    let req = Request::get(&uri)
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", n.creds.api_token),
        )
        .body(Body::empty())
        .unwrap();
    let (s, _) = call_raw(&r, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&r, Method::GET, &uri, Some(&n.creds.api_token), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["success"], json!(true));
    assert_eq!(
        v["result"],
        json!({"liveInputs": [], "range": 0, "total": 0})
    );
    assert_eq!(v["result_info"]["total_count"], json!(0));
    // The signing key endpoints share the check.
    let keys = format!("/client/v4/accounts/{}/stream/keys", n.creds.account_id);
    let (s, v) = call(&r, Method::GET, &keys, Some("nope"), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::UNAUTHORIZED, 10000));
    let (s, _) = call(&r, Method::GET, &keys, Some(&n.creds.api_token), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn an_input_is_created_shown_and_its_keys_follow_it() {
    let n = TestNode::new(&[]).await;
    let r = n.router();
    let tok = Some(n.creds.api_token.as_str());
    let uri = inputs_uri(&n.creds.account_id);
    let body = json!({"meta": {"name": "yoga"}, "defaultCreator": "alice"});
    let (s, v) = call(&r, Method::POST, &uri, tok, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let input = &v["result"];
    let uid = input["uid"].as_str().unwrap().to_string();
    assert!(crate::secret::is_id(&uid), "{uid}");
    assert_eq!(input["meta"], json!({"name": "yoga"}));
    assert_eq!(input["defaultCreator"], json!("alice"));
    assert_eq!(input["rtmps"]["url"], json!("rtmps://127.0.0.1:1936/live/"));
    assert_eq!(input["rtmp"]["url"], json!("rtmp://127.0.0.1:1935/live/"));
    assert_eq!(input["srt"]["url"], json!("srt://127.0.0.1:9000"));
    assert_eq!(input["srt"]["streamId"], json!(uid));
    assert_eq!(
        input["hls"]["url"],
        json!(format!("http://127.0.0.1:8080/{uid}/manifest/video.m3u8"))
    );
    let key = input["rtmps"]["streamKey"].as_str().unwrap().to_string();
    let play = input["rtmpsPlayback"]["streamKey"].as_str().unwrap();
    assert_ne!(key, play);
    // The key table follows the API at once (ingest would accept the key).
    let grant = n.parts.keys.lookup_key(&key).expect("publish key live");
    assert_eq!(grant.uid, uid);
    assert!(n.parts.inputs.is_input(&uid));

    let one = format!("{uri}/{uid}");
    let (s, v) = call(&r, Method::GET, &one, tok, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["rtmps"]["streamKey"], json!(key));
    let (s, v) = call(&r, Method::GET, &uri, tok, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"]["total"], json!(1), "{v}");
    assert_eq!(v["result"]["liveInputs"][0]["uid"], json!(uid), "{v}");
    assert_eq!(
        v["result"]["liveInputs"][0]["meta"],
        json!({"name": "yoga"})
    );

    // Rotation: the old key stops, the new one works.
    let (s, v) = call(&r, Method::POST, &format!("{one}/rotate_keys"), tok, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new_key = v["result"]["rtmps"]["streamKey"].as_str().unwrap();
    assert!(
        n.parts.keys.lookup_key(&key).is_none(),
        "old key still live"
    );
    assert!(n.parts.keys.lookup_key(new_key).is_some());

    let (s, v) = call(&r, Method::DELETE, &one, tok, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        n.parts.keys.lookup_key(new_key).is_none(),
        "key outlived its input"
    );
    assert!(!n.parts.inputs.is_input(&uid));
    let (s, v) = call(&r, Method::GET, &one, tok, None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, 10003));
}

#[tokio::test]
async fn accounts_are_the_admins_and_tenants_see_only_their_own() {
    let n = TestNode::new(&[]).await;
    let r = n.router();
    let accounts = "/client/v4/accounts";
    let (s, v) = call(&r, Method::GET, accounts, Some(&n.creds.api_token), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::FORBIDDEN, 10001));
    let admin = Some(n.creds.admin_token.as_str());
    let (s, v) = call(
        &r,
        Method::POST,
        accounts,
        admin,
        Some(json!({"name": "b"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let other = v["result"]["id"].as_str().unwrap().to_string();
    let other_tok = v["result"]["apiToken"].as_str().unwrap().to_string();
    let (s, v) = call(&r, Method::GET, accounts, admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"].as_array().map(Vec::len), Some(2), "{v}");

    let (_, v) = call(
        &r,
        Method::POST,
        &inputs_uri(&n.creds.account_id),
        Some(&n.creds.api_token),
        Some(json!({})),
    )
    .await;
    let uid = v["result"]["uid"].as_str().unwrap();
    // Another account's objects are "not found", never "forbidden".
    let theirs = format!("{}/{uid}", inputs_uri(&n.creds.account_id));
    let (s, v) = call(&r, Method::GET, &theirs, Some(&other_tok), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, 10003));
    let (s, v) = call(&r, Method::GET, &inputs_uri(&other), Some(&other_tok), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"]["liveInputs"], json!([]));
    // Nor may a tenant list another account's inputs.
    let (s, v) = call(
        &r,
        Method::GET,
        &inputs_uri(&other),
        Some(&n.creds.api_token),
        None,
    )
    .await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, 10003));
}

#[tokio::test]
async fn bad_requests_are_answered_in_the_envelope() {
    let n = TestNode::new(&[]).await;
    let r = n.router();
    let uri = inputs_uri(&n.creds.account_id);
    let tok = format!("Bearer {}", n.creds.api_token);
    let post = |body: Body| {
        Request::post(&uri)
            .header(header::AUTHORIZATION, &tok)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap()
    };
    let (s, v) = call_raw(&r, post(Body::from("{\"meta\": [1,"))).await;
    assert_eq!((s, error_code(&v)), (StatusCode::BAD_REQUEST, 10005));
    let big = format!("{{\"meta\":{{\"a\":\"{}\"}}}}", "x".repeat(super::MAX_BODY));
    let (s, v) = call_raw(&r, post(Body::from(big))).await;
    assert_eq!((s, error_code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, 10013));
    let (s, v) = call(&r, Method::GET, "/client/v4/nothing", None, None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, 10003));
    let (s, v) = call(&r, Method::PATCH, &uri, Some(&n.creds.api_token), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::METHOD_NOT_ALLOWED, 10005));
    // Nothing was stored.
    assert_eq!(
        n.parts
            .store
            .count_inputs(&n.creds.account_id)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn quotas_of_the_context_are_enforced() {
    let n = TestNode::new(&[
        "--max-inputs-per-account",
        "1",
        "--api-rate",
        "1",
        "--api-burst",
        "3",
    ])
    .await;
    let r = n.router();
    let uri = inputs_uri(&n.creds.account_id);
    let tok = Some(n.creds.api_token.as_str());
    let (s, _) = call(&r, Method::POST, &uri, tok, Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&r, Method::POST, &uri, tok, Some(json!({}))).await;
    assert_eq!((s, error_code(&v)), (StatusCode::FORBIDDEN, 10040));
    // Once the burst is spent the token's rate answers 429 (code 10430) ...
    let mut refused = None;
    for _ in 0..10 {
        let (s, v) = call(&r, Method::GET, &uri, tok, None).await;
        if s != StatusCode::OK {
            refused = Some((s, error_code(&v)));
            break;
        }
    }
    assert_eq!(refused, Some((StatusCode::TOO_MANY_REQUESTS, 10430)));
    // ... for that token only.
    let (s, _) = call(&r, Method::GET, &uri, Some(&n.creds.admin_token), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_and_graphql_hang_off_the_api() {
    let n = TestNode::new(&[]).await;
    let r = n.router();
    let (s, v) = call(&r, Method::GET, "/metrics", Some(&n.creds.api_token), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::FORBIDDEN, 10001));
    let req = Request::get("/metrics")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", n.creds.admin_token),
        )
        .body(Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(r.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    // GraphQL answers in its own shape, with the same token check.
    let q = json!({"query": "{ viewer { accounts(filter: {accountTag: \"x\"}) { streamMinutesViewedAdaptiveGroups(limit: 1) { sum { minutesViewed } } } } }"});
    let (s, v) = call(&r, Method::POST, "/client/v4/graphql", None, Some(q)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["data"], Value::Null);
    assert!(v["errors"][0]["message"].as_str().is_some(), "{v}");
    let (s, _) = call(&r, Method::GET, "/client/v4/graphql", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}
