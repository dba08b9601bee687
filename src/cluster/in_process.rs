//! The cluster driver's glue in-process: its admin endpoints behind the one
//! token check, the link admission answered by the core, the local scan fed
//! to it. The member is bound (a QUIC link on 127.0.0.1:0) but runs no
//! database round and no task.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use banyan_relay::link::{Admission as _, Admit, AdmitRequest, ClusterCa};
use banyan_relay::views::Protocol;
use banyan_relay::StreamState;
use banyan_topology::member::LocalState;
use serde_json::{json, Value};

use super::{Cluster, ClusterConfig};
use crate::serve::testkit::{call, TestNode};
use crate::store::{now_micros, LiveInputRow};

/// A member named `a` with `fanout`, over a test node's parts.
fn member(n: &TestNode, dir: &std::path::Path, fanout: usize) -> Arc<Cluster> {
    let ca = ClusterCa::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("ca.key"), &ca.key_pem).unwrap();
    let cfg = ClusterConfig {
        node: "a".into(),
        region: "r1".into(),
        link: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        fanout,
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
    };
    Cluster::bind(n.parts.cluster_context(&n.urls), cfg).unwrap()
}

#[tokio::test]
async fn admin_endpoints_take_the_admin_token_only() {
    let n = TestNode::new(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let c = member(&n, dir.path(), 3);
    let r = c.router();
    for uri in ["/cluster/nodes", "/cluster/streams/abc"] {
        let (s, v) = call(&r, Method::GET, uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {v}");
        assert!(v["error"].as_str().is_some(), "{v}");
        let (s, _) = call(&r, Method::GET, uri, Some("guess"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        let (s, v) = call(&r, Method::GET, uri, Some(&n.creds.api_token), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}: {v}");
        assert_eq!(v, json!({"error": "admin token required"}));
    }
    let admin = Some(n.creds.admin_token.as_str());
    let (s, v) = call(&r, Method::GET, "/cluster/nodes", admin, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"], json!("a"));
    assert_eq!(v["fanout"], json!(3));
    assert_eq!(v["link"], json!(c.link_addr.to_string()));
    // No database round yet: the view has no member.
    assert_eq!(v["nodes"], json!([]));
    let (s, v) = call(&r, Method::GET, "/cluster/streams/abc", admin, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["uid"], json!("abc"));
    assert_eq!(v["origin"], Value::Null);
    assert_eq!(v["state"], json!("idle"));
    assert_eq!(
        (v["children"].clone(), v["edges"].clone()),
        (json!([]), json!([]))
    );
    assert_eq!(v["height"], json!(0));
}

#[tokio::test]
async fn the_link_admission_is_the_cores_answer() {
    let n = TestNode::new(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let c = member(&n, dir.path(), 1);
    let ask = |peer: &str, children: &[String], state| {
        c.core.admit(&AdmitRequest {
            uid: "s1",
            peer,
            children,
            state,
        })
    };
    assert_eq!(ask("b", &[], StreamState::Idle), Admit::NotHere);
    assert_eq!(ask("b", &[], StreamState::Live), Admit::Accept);
    // `b` was accepted a moment ago and counts before its pull shows: with
    // a fan-out of one the node is full, and `b` is not in the view yet.
    match ask("c", &[], StreamState::Live) {
        Admit::Refuse(why) => assert!(why.contains("full"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Once its pull is served it is a child like any other.
    match ask("c", &["b".to_string()], StreamState::Reconnecting) {
        Admit::Refuse(why) => assert!(why.contains("full"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Another stream has its own places.
    let other = c.core.admit(&AdmitRequest {
        uid: "s2",
        peer: "c",
        children: &[],
        state: StreamState::Live,
    });
    assert_eq!(other, Admit::Accept);
}

#[tokio::test]
async fn the_local_scan_is_what_the_node_has() {
    let n = TestNode::new(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let c = member(&n, dir.path(), 2);
    assert!(c.scan().is_empty());
    let row = LiveInputRow::new(&crate::secret::new_id(), &n.creds.account_id, now_micros());
    n.parts.store.insert_input(&row).await.unwrap();
    n.parts.inputs.input_changed(&row).await;
    let scan = c.scan();
    assert_eq!(scan.len(), 1);
    let l = &scan[0];
    assert_eq!(l.uid, row.uid);
    assert_eq!(l.state, LocalState::Idle);
    assert!(!l.viewers && !l.subscribers && l.downstream == 0, "{l:?}");
    let _viewer = n.parts.views.viewer(&row.uid, Protocol::Hls);
    assert!(c.scan()[0].viewers);
    // Nothing is fetchable nor originated here without a database round.
    assert!(!(c.fetchable())(&row.uid));
    assert!(!(c.origin_check())(&row.uid));
}
