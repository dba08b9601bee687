//! The webhook receivers of tests/webhooks.rs (plain, HTTPS, raw), the signature check and the event helpers.

#![allow(dead_code)]

use crate::reliab::*;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// One request the receiver got: its signature header and body.
#[derive(Debug, Clone)]
pub struct Got {
    pub signature: String,
    pub body: String,
}

pub type Inbox = Arc<parking_lot::Mutex<Vec<Got>>>;

/// A small HTTP server taking webhook POSTs on `/hook`; stop and start it
/// again on the same port to play a receiver that is down.
pub struct Receiver {
    pub addr: SocketAddr,
    pub inbox: Inbox,
    pub stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// HTTPS with this configuration (else plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver {
            addr: "127.0.0.1:0".parse().expect("addr"),
            inbox: Inbox::default(),
            stop: None,
            tls: None,
        };
        r.up().await;
        r
    }

    /// An HTTPS receiver with a self-signed certificate for `localhost`;
    /// and that certificate (PEM).
    pub async fn start_tls() -> (Receiver, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(made.key_pair.serialize_der()).expect("key");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .expect("server config");
        let mut r = Receiver {
            addr: "127.0.0.1:0".parse().expect("addr"),
            inbox: Inbox::default(),
            stop: None,
            tls: Some(Arc::new(cfg)),
        };
        r.up().await;
        (r, made.cert.pem())
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/hook", self.addr.port()),
            None => format!("http://{}/hook", self.addr),
        }
    }

    /// Listen (again, on the same port once it has one).
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind receiver");
        self.addr = listener.local_addr().expect("receiver addr");
        if let Some(cfg) = self.tls.clone() {
            let cancel = CancellationToken::new();
            let task = tokio::spawn(serve_tls(listener, cfg, self.inbox.clone(), cancel.clone()));
            self.stop = Some((cancel, task));
            return;
        }
        let inbox = self.inbox.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let inbox = inbox.clone();
                async move {
                    let signature = headers
                        .get("webhook-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    inbox.lock().push(Got { signature, body });
                    StatusCode::OK
                }
            }),
        );
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
        self.stop = Some((cancel, task));
    }

    /// Stop listening: connections are refused until `up`.
    pub async fn down(&mut self) {
        if let Some((cancel, task)) = self.stop.take() {
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    pub fn count(&self) -> usize {
        self.inbox.lock().len()
    }

    /// Every request so far, each signature checked against `secret`; the
    /// parsed bodies.
    pub fn verified(&self, secret: &str) -> Vec<Value> {
        self.inbox
            .lock()
            .iter()
            .map(|g| {
                verify(secret, &g.signature, &g.body);
                serde_json::from_str(&g.body).expect("body is JSON")
            })
            .collect()
    }

    /// Wait (bounded) until `want` holds for the verified events.
    pub async fn wait_for(
        &self,
        secret: &str,
        secs: u64,
        what: &str,
        node: &Node,
        want: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.verified(secret);
            if want(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{what}: not received in {secs} s; got {got:#?}\nnode log:\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The HTTPS receiver: each connection through TLS, then HTTP/1.1.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    inbox: Inbox,
    cancel: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let tcp = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let inbox = inbox.clone();
                async move {
                    let signature = req
                        .headers()
                        .get("webhook-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let body =
                        axum::body::to_bytes(axum::body::Body::new(req.into_body()), 1 << 20)
                            .await
                            .unwrap_or_default();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    inbox.lock().push(Got { signature, body });
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// `time=T,sig1=HEX` must be HMAC-SHA256(secret, "T.body"), T recent.
pub fn verify(secret: &str, header: &str, body: &str) {
    let mut time = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("time", t)) => time = Some(t.to_string()),
            Some(("sig1", s)) => sig = Some(s.to_string()),
            _ => {}
        }
    }
    let (Some(time), Some(sig)) = (time, sig) else {
        panic!("malformed Webhook-Signature {header:?}");
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{time}.{body}").as_bytes());
    let want = hex::encode(mac.finalize().into_bytes());
    assert_eq!(sig, want, "signature of {body}");
    let t: i64 = time.parse().expect("time is a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - t).abs() < 600, "signature time {t} is not recent");
}

/// The events for `uid`, as `(event_type, error code or "")`.
pub fn events_of(got: &[Value], uid: &str) -> Vec<(String, String)> {
    got.iter()
        .filter(|v| v["data"]["input_id"] == json!(uid))
        .map(|v| {
            (
                v["data"]["event_type"].as_str().unwrap_or("").to_string(),
                v["data"]["live_input_errored"]["error"]["code"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

pub fn has(got: &[Value], uid: &str, event: &str, code: &str) -> bool {
    events_of(got, uid)
        .iter()
        .any(|(e, c)| e == event && c == code)
}

pub fn pair(e: &str, c: &str) -> (String, String) {
    (e.to_string(), c.to_string())
}

/// PUT the account's webhook; the answer (status, body).
pub async fn put_webhook(node: &Node, url: &str) -> (StatusCode, Value) {
    let resp = http()
        .put(node.stream_api("webhook"))
        .bearer_auth(node.token())
        .json(&json!({"notificationUrl": url}))
        .send()
        .await
        .expect("PUT webhook");
    let status = resp.status();
    (status, resp.json().await.expect("JSON answer"))
}

/// Set the webhook to `url` (must succeed); its secret.
pub async fn set_webhook(node: &Node, url: &str) -> String {
    let (status, v) = put_webhook(node, url).await;
    assert_eq!(status, StatusCode::OK, "PUT webhook: {v}");
    assert_eq!(v["result"]["notificationUrl"], json!(url));
    assert!(v["result"]["modified"].is_string(), "{v}");
    let secret = v["result"]["secret"].as_str().expect("secret").to_string();
    assert_eq!(secret.len(), 64, "{v}");
    secret
}

/// Publish the clip to `input` until it is connected; the publisher.
pub async fn go_live(node: &Node, input: &Value) -> Client {
    let publisher = publish(&clip("testsrc2"), &rtmp_publish_url(input));
    let uid = input["uid"].as_str().expect("uid");
    node.wait_status(uid, "connected", 15).await;
    publisher
}

pub fn uid(input: &Value) -> String {
    input["uid"].as_str().expect("uid").to_string()
}

/// A raw HTTP receiver counting connections: it reads a request and
/// writes `answer`, or (`None`) never answers and holds the connection.
pub async fn raw_receiver(
    answer: Option<String>,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(k) if k > 0 => seen.extend_from_slice(&buf[..k]),
                        _ => return,
                    }
                }
                match answer {
                    Some(a) => {
                        let _ = tcp.write_all(a.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    (addr, count)
}

pub async fn wait_counter(node: &Node, labels: &[&str], at_least: f64, secs: u64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let m = node.metrics().await;
        if counter(&m, "banyan_webhook_deliveries_total", labels) >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "banyan_webhook_deliveries_total{labels:?} < {at_least}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
