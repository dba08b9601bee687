//! `GET /cluster/nodes` and `GET /cluster/streams/{uid}` (admin token): the
//! core's view of the members and of one stream's tree.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::Cluster;
use crate::auth::{ClientIp, Refused};

impl Cluster {
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/cluster/nodes", get(nodes_json))
            .route("/cluster/streams/{uid}", get(stream_json))
            .with_state(self.clone())
    }
}

/// The admin token, checked as the API checks tokens (one limiter).
async fn admin(
    c: &Cluster,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<(), Response> {
    match c
        .ctx
        .auth
        .check(headers, ip, crate::auth::Api::Cluster)
        .await
    {
        Ok(i) if i.admin => Ok(()),
        Ok(_) => Err((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "admin token required"})),
        )
            .into_response()),
        Err(Refused::Token(e)) => {
            Err((e.status(), Json(json!({"error": e.message()}))).into_response())
        }
        // The cluster's endpoints take nothing from a token's request rate.
        Err(Refused::Rate(r)) => Err((r.status, Json(json!({"error": r.message}))).into_response()),
    }
}

async fn nodes_json(
    State(c): State<Arc<Cluster>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&c, &headers, ip).await {
        return r;
    }
    let core = c.core.lock();
    let nodes: Vec<Value> = core
        .view()
        .members()
        .into_iter()
        .map(|(name, m)| {
            json!({"name": name, "region": m.region, "link": m.link.to_string(),
                   "http": m.http, "self": name.as_str() == c.cfg.node})
        })
        .collect();
    Json(
        json!({"node": c.cfg.node, "fanout": c.cfg.fanout, "link": c.link_addr.to_string(),
                "nodes": nodes}),
    )
    .into_response()
}

async fn stream_json(
    State(c): State<Arc<Cluster>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    UrlPath(uid): UrlPath<String>,
) -> Response {
    if let Err(r) = admin(&c, &headers, ip).await {
        return r;
    }
    let (origin, edges, pull) = {
        let core = c.core.lock();
        let view = core.view();
        (
            view.origin(&uid).cloned(),
            view.edges(&uid),
            core.pull(&uid),
        )
    };
    // Depth of each member, walking parent links up to the origin.
    let parent_of: HashMap<&str, &str> = edges
        .iter()
        .map(|(ch, p)| (ch.as_str(), p.as_str()))
        .collect();
    let depth = |n: &str| -> Option<usize> {
        let mut at = n;
        for d in 0..=parent_of.len() {
            if Some(at) == origin.as_ref().map(|o| o.node.as_str()) {
                return Some(d);
            }
            at = parent_of.get(at)?;
        }
        None
    };
    let members: Vec<Value> = edges
        .iter()
        .map(|(ch, p)| json!({"child": ch, "parent": p, "depth": depth(ch.as_str())}))
        .collect();
    let height = edges
        .iter()
        .filter_map(|(ch, _)| depth(ch.as_str()))
        .max()
        .unwrap_or(0);
    Json(json!({
        "uid": uid,
        "node": c.cfg.node,
        "origin": origin.as_ref().map(|o| &o.node),
        "originLive": origin.as_ref().map(|o| o.live),
        "state": format!("{:?}", c.ctx.hub.state(&uid)).to_lowercase(),
        "pulledUnder": pull.as_ref().and_then(|p| p.origin.clone()),
        "parent": pull.and_then(|p| p.parent),
        "children": c.downstream.peers(&uid),
        "edges": members,
        "height": height,
    }))
    .into_response()
}
