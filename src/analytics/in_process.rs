//! Analytics from its context (SQLite in a temporary dir, no process):
//! viewing time recorded in the views, flushed, and answered over GraphQL.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use banyan_relay::views::Protocol;
use banyan_relay::CLOCK_HZ;
use serde_json::{json, Value};

use super::flush::{flush_once, Batcher};
use crate::auth::ClientIp;
use crate::serve::testkit::TestNode;
use crate::store::{now_micros, LiveInputRow};

const BY_CREATOR: &str = "query ($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
  streamMinutesViewedAdaptiveGroups(limit: 10, orderBy: [sum_minutesViewed_DESC]) {
    sum { minutesViewed } dimensions { creator uid protocol } } } } }";

async fn graphql(
    ctx: &Arc<super::Context>,
    token: Option<&str>,
    account: &str,
) -> (StatusCode, Value) {
    let mut req =
        Request::post("/client/v4/graphql").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = json!({"query": BY_CREATOR, "variables": {"a": account}}).to_string();
    let resp = super::handler(
        ctx.clone(),
        ClientIp(None),
        req.body(Body::from(body)).unwrap(),
    )
    .await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// An input of `account` whose default creator is `creator`.
async fn input(n: &TestNode, account: &str, creator: &str) -> String {
    let uid = crate::secret::new_id();
    let row = LiveInputRow {
        default_creator: creator.into(),
        ..LiveInputRow::new(&uid, account, now_micros())
    };
    n.parts.store.insert_input(&row).await.unwrap();
    uid
}

fn seconds(s: u64) -> u64 {
    s * CLOCK_HZ as u64
}

#[tokio::test]
async fn viewing_time_is_flushed_and_answered_per_creator() {
    let n = TestNode::new(&[]).await;
    let acct = n.creds.account_id.clone();
    let a = input(&n, &acct, "alice").await;
    let b = input(&n, &acct, "bob").await;
    n.parts.views.add_delivered(&a, Protocol::Hls, seconds(90));
    n.parts.views.add_delivered(&a, Protocol::Hls, seconds(30));
    n.parts.views.add_delivered(&b, Protocol::Rtmp, seconds(30));
    let mut batcher = Batcher::default();
    let mut since = now_micros() / 1000 - 1000;
    flush_once(&n.analytics, &mut batcher, &mut since).await;
    assert!(batcher.is_empty(), "the flush kept time pending");
    // Drained: a second flush writes nothing more.
    flush_once(&n.analytics, &mut batcher, &mut since).await;

    let (s, v) = graphql(&n.analytics, Some(&n.creds.api_token), &acct).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["errors"], Value::Null, "{v}");
    let groups = v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    // One flush spans at most two minutes: sum each creator's groups.
    let total = |creator: &str| -> f64 {
        groups
            .iter()
            .filter(|g| g["dimensions"]["creator"] == json!(creator))
            .map(|g| g["sum"]["minutesViewed"].as_f64().unwrap())
            .sum()
    };
    assert!((total("alice") - 2.0).abs() < 1e-6, "{v}");
    assert!((total("bob") - 0.5).abs() < 1e-6, "{v}");
    assert_eq!(groups[0]["dimensions"]["creator"], json!("alice"), "{v}");
    assert!(groups
        .iter()
        .any(|g| g["dimensions"] == json!({"creator": "bob", "uid": b, "protocol": "rtmp"})));
}

#[tokio::test]
async fn only_the_accounts_own_token_reads_its_minutes() {
    let n = TestNode::new(&[]).await;
    let acct = n.creds.account_id.clone();
    let a = input(&n, &acct, "alice").await;
    n.parts.views.add_delivered(&a, Protocol::Srt, seconds(60));
    let mut since = now_micros() / 1000 - 1000;
    flush_once(&n.analytics, &mut Batcher::default(), &mut since).await;

    let (s, v) = graphql(&n.analytics, None, &acct).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["data"], Value::Null);
    let (s, _) = graphql(&n.analytics, Some("not-a-token"), &acct).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let other = crate::secret::new_id();
    n.parts.store.create_account(&other, "other").await.unwrap();
    let other_tok = crate::secret::new_secret();
    n.parts
        .store
        .add_token(&crate::secret::token_hash(&other_tok), &other, false)
        .await
        .unwrap();
    let (s, v) = graphql(&n.analytics, Some(&other_tok), &acct).await;
    assert_ne!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(v["data"]["viewer"]["accounts"], Value::Null, "{v}");
    // Its own account has no minutes.
    let (s, v) = graphql(&n.analytics, Some(&other_tok), &other).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"],
        json!([]),
        "{v}"
    );
}
