//! In-process nodes for tests: the parts and contexts `serve` builds, over
//! a SQLite store in a temporary data dir, with no listener and no task.
//! Routers are driven with `tower::ServiceExt::oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::Parts;
use crate::config::{ServeArgs, Settings};
use crate::node::{Addrs, Credentials, Urls};
use crate::store::Store;
use crate::tls::{self, SniResolver};

/// A node's parts, wired as `serve` wires them, without listeners.
pub struct TestNode {
    pub parts: Parts,
    /// The addresses written into answers (no listener is bound).
    pub urls: Urls,
    /// The default account and its API and admin tokens.
    pub creds: Credentials,
    pub api: Arc<crate::api::Context>,
    pub analytics: Arc<crate::analytics::Context>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// A node with `banyan serve` flags `argv` (the data dir is added).
    pub async fn new(argv: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap().to_string();
        let mut all = vec!["--data-dir", data.as_str()];
        all.extend_from_slice(argv);
        let settings = Settings::resolve(ServeArgs::parse_from(&all).unwrap()).unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let creds = super::boot::bootstrap(&store, &dir.path().join("credentials.json"), false)
            .await
            .unwrap();
        let (cert, key) = tls::node_cert_files(dir.path(), None, None).unwrap();
        let resolver = SniResolver::new(
            tls::certified_key(&std::fs::read(cert).unwrap(), &std::fs::read(key).unwrap())
                .unwrap(),
        );
        let parts = Parts::build(
            &settings,
            store,
            dir.path(),
            resolver,
            CancellationToken::new(),
        )
        .unwrap();
        parts.inputs.rebuild_keys().await.unwrap();
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let urls = Urls {
            addrs: Addrs {
                http: a,
                rtmp: Some("127.0.0.1:1935".parse().unwrap()),
                rtmps: "127.0.0.1:1936".parse().unwrap(),
                srt: "127.0.0.1:9000".parse().unwrap(),
                webrtc: "127.0.0.1:8443".parse().unwrap(),
                metrics: "127.0.0.1:9100".parse().unwrap(),
                https: None,
            },
            public_host: settings.general.public_host.clone(),
        };
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let analytics = Arc::new(parts.analytics_context(&settings));
        let api = Arc::new(parts.api_context(
            &settings,
            &urls,
            Arc::new(parts.metrics_context(metrics)),
            analytics.clone(),
        ));
        TestNode {
            parts,
            urls,
            creds,
            api,
            analytics,
            _dir: dir,
        }
    }

    /// The API router as `serve` mounts it.
    pub fn router(&self) -> Router {
        crate::api::router(self.api.clone()).merge(crate::api::signing::router(Arc::new(
            self.parts.signing_context(),
        )))
    }
}

/// One request through `router`: the status and the body as JSON (`Null`
/// when it is not JSON).
pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    call_raw(router, req.body(body).unwrap()).await
}

/// One prepared request through `router`.
pub async fn call_raw(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
