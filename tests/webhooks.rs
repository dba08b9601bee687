//! Live webhooks through the real binary, real publishers and a receiver
//! in the test that checks every `Webhook-Signature`.
//!
//! - Connected, errored (a second publisher, a disabled input, a publisher
//!   that sends malformed chunks) and disconnected arrive, signed, in
//!   Cloudflare's payload shape.
//! - Without `--webhook-allow-private`, loopback, private, link-local,
//!   unique-local and unspecified targets are refused with a 400 naming the
//!   range, beside a witness stream; a private target stored while it was
//!   allowed is refused again at delivery once it is not.
//! - A receiver that is down for a while gets the events, in order, once
//!   it is back; events queued before a restart are delivered after it.

mod common;
mod reliab;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reliab::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// One request the receiver got: its signature header and body.
#[derive(Debug, Clone)]
struct Got {
    signature: String,
    body: String,
}

type Inbox = Arc<parking_lot::Mutex<Vec<Got>>>;

/// A small HTTP server taking webhook POSTs on `/hook`; stop and start it
/// again on the same port to play a receiver that is down.
struct Receiver {
    addr: SocketAddr,
    inbox: Inbox,
    stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// HTTPS with this configuration (else plain HTTP).
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Receiver {
    async fn start() -> Receiver {
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
    async fn start_tls() -> (Receiver, String) {
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

    fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/hook", self.addr.port()),
            None => format!("http://{}/hook", self.addr),
        }
    }

    /// Listen (again, on the same port once it has one).
    async fn up(&mut self) {
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
    async fn down(&mut self) {
        if let Some((cancel, task)) = self.stop.take() {
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    fn count(&self) -> usize {
        self.inbox.lock().len()
    }

    /// Every request so far, each signature checked against `secret`; the
    /// parsed bodies.
    fn verified(&self, secret: &str) -> Vec<Value> {
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
    async fn wait_for(
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
async fn serve_tls(
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
fn verify(secret: &str, header: &str, body: &str) {
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
fn events_of(got: &[Value], uid: &str) -> Vec<(String, String)> {
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

fn has(got: &[Value], uid: &str, event: &str, code: &str) -> bool {
    events_of(got, uid)
        .iter()
        .any(|(e, c)| e == event && c == code)
}

fn pair(e: &str, c: &str) -> (String, String) {
    (e.to_string(), c.to_string())
}

/// PUT the account's webhook; the answer (status, body).
async fn put_webhook(node: &Node, url: &str) -> (StatusCode, Value) {
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
async fn set_webhook(node: &Node, url: &str) -> String {
    let (status, v) = put_webhook(node, url).await;
    assert_eq!(status, StatusCode::OK, "PUT webhook: {v}");
    assert_eq!(v["result"]["notificationUrl"], json!(url));
    assert!(v["result"]["modified"].is_string(), "{v}");
    let secret = v["result"]["secret"].as_str().expect("secret").to_string();
    assert_eq!(secret.len(), 64, "{v}");
    secret
}

/// Publish the clip to `input` until it is connected; the publisher.
async fn go_live(node: &Node, input: &Value) -> Client {
    let publisher = publish(&clip("testsrc2"), &rtmp_publish_url(input));
    let uid = input["uid"].as_str().expect("uid");
    node.wait_status(uid, "connected", 15).await;
    publisher
}

fn uid(input: &Value) -> String {
    input["uid"].as_str().expect("uid").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_connected_errored_and_disconnected_for_real_publishes() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = Node::start(
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        &["--webhook-allow-private", "--reconnect-window", "1"],
    );
    let rx = Receiver::start().await;
    let secret = set_webhook(&node, &rx.url()).await;
    // GET answers the same; a second PUT keeps the secret.
    assert_eq!(node.get("webhook").await["secret"], json!(secret));
    assert_eq!(set_webhook(&node, &rx.url()).await, secret);

    // A broadcast: connected, a second publisher refused (errored), the
    // end of the stream after the reconnect window (disconnected).
    let a = node.create_input("a").await;
    let mut first = go_live(&node, &a).await;
    let a_uid = uid(&a);
    rx.wait_for(&secret, 10, "connected", &node, |g| {
        has(g, &a_uid, "live_input.connected", "")
    })
    .await;
    let mut second = publish(&clip("testsrc2"), &rtmp_publish_url(&a));
    rx.wait_for(&secret, 10, "errored (busy)", &node, |g| {
        has(g, &a_uid, "live_input.errored", "ERR_ALREADY_PUBLISHING")
    })
    .await;
    second.stop().await;
    first.stop().await;
    let got = rx
        .wait_for(&secret, 15, "disconnected", &node, |g| {
            has(g, &a_uid, "live_input.disconnected", "")
        })
        .await;
    assert_eq!(
        events_of(&got, &a_uid),
        vec![
            pair("live_input.connected", ""),
            pair("live_input.errored", "ERR_ALREADY_PUBLISHING"),
            pair("live_input.disconnected", ""),
        ]
    );
    // Cloudflare's shape.
    let c = got
        .iter()
        .find(|v| v["data"]["input_id"] == json!(a_uid))
        .expect("an event");
    assert_eq!(c["data"]["notification_name"], json!("Stream Live Input"));
    assert!(c["data"]["updated_at"]
        .as_str()
        .expect("updated_at")
        .ends_with('Z'));
    assert!(c["ts"].as_i64().expect("ts") > 1_600_000_000);
    assert!(c["text"]
        .as_str()
        .expect("text")
        .contains(&format!("Input ID: {a_uid}")));

    // A disabled input: the publish is refused, errored names it.
    let b = node.create_input("b").await;
    let b_uid = uid(&b);
    let resp = http()
        .put(node.stream_api(&format!("live_inputs/{b_uid}")))
        .bearer_auth(node.token())
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("disable");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut refused = publish(&clip("testsrc2"), &rtmp_publish_url(&b));
    rx.wait_for(&secret, 10, "errored (disabled)", &node, |g| {
        has(g, &b_uid, "live_input.errored", "ERR_INPUT_DISABLED")
    })
    .await;
    refused.stop().await;

    // The same over SRT, refused in the handshake.
    let d = node.create_input("d").await;
    let d_uid = uid(&d);
    let resp = http()
        .put(node.stream_api(&format!("live_inputs/{d_uid}")))
        .bearer_auth(node.token())
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("disable");
    assert_eq!(resp.status(), StatusCode::OK);
    let srt_url = format!(
        "{}?streamid={}&passphrase={}",
        d["srt"]["url"].as_str().expect("srt.url"),
        d["srt"]["streamId"].as_str().expect("srt.streamId"),
        d["srt"]["passphrase"].as_str().expect("srt.passphrase")
    );
    let mut c = ffmpeg();
    c.args(["-re", "-i"])
        .arg(clip("testsrc2"))
        .args(["-c", "copy", "-f", "mpegts", &srt_url]);
    let mut srt_refused = Client::spawn(c);
    rx.wait_for(&secret, 10, "errored (disabled, SRT)", &node, |g| {
        has(g, &d_uid, "live_input.errored", "ERR_INPUT_DISABLED")
    })
    .await;
    srt_refused.stop().await;

    // A broken stream: a publisher accepted, then malformed chunks.
    let c = node.create_input("c").await;
    let c_uid = uid(&c);
    let rtmp = node.addr("rtmp");
    let key = c["rtmp"]["streamKey"].as_str().expect("streamKey");
    let mut tcp = TcpStream::connect(&rtmp).await.expect("connect");
    rtmp_handshake(&mut tcp).await;
    let answer = rtmp_publish(&mut tcp, &rtmp, key).await;
    assert!(
        answer.windows(23).any(|w| w == b"NetStream.Publish.Start"),
        "publish not accepted"
    );
    // A video message announcing 16 MiB.
    let mut bogus = chunk(4, 9, 1, &[0x17, 0, 0, 0, 0]);
    bogus[4..7].copy_from_slice(&[0xff, 0xff, 0xff]);
    let _ = tcp.write_all(&bogus).await;
    assert!(closed_within(&mut tcp, Duration::from_secs(5)).await);
    let got = rx
        .wait_for(&secret, 15, "broken stream", &node, |g| {
            has(g, &c_uid, "live_input.disconnected", "")
        })
        .await;
    assert_eq!(
        events_of(&got, &c_uid),
        vec![
            pair("live_input.connected", ""),
            pair("live_input.errored", "ERR_MALFORMED_STREAM"),
            pair("live_input.disconnected", ""),
        ]
    );
    // Nothing connected on the disabled input; everything counted.
    assert!(!has(&got, &b_uid, "live_input.connected", ""));
    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_webhook_deliveries_total",
            &["result=\"delivered\""]
        ) >= got.len() as f64,
        "deliveries not counted:\n{m}"
    );
    assert!(!m.contains(&a_uid), "a uid in the metrics");
    let log = node.log_text();
    assert!(!log.contains(&secret), "the webhook secret in the log");

    // DELETE: gone, and GET says so.
    let resp = http()
        .delete(node.stream_api("webhook"))
        .bearer_auth(node.token())
        .send()
        .await
        .expect("DELETE webhook");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http()
        .get(node.stream_api("webhook"))
        .bearer_auth(node.token())
        .send()
        .await
        .expect("GET webhook");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_webhook_targets_are_refused_without_the_flag() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = Node::start(&dir.path().join("data"), &dir.path().join("node.log"), &[]);
    let witness = Witness::start(&node, dir.path(), 6).await;
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    for (url, range) in [
        (rx.url(), "loopback"),
        (format!("http://localhost:{port}/hook"), "loopback"),
        ("http://[::1]/hook".to_string(), "loopback"),
        ("http://10.1.2.3/hook".to_string(), "private"),
        ("http://192.168.0.10:8080/".to_string(), "private"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        ("http://[fd00::1]/".to_string(), "unique-local"),
        ("http://[::ffff:127.0.0.1]/".to_string(), "loopback"),
        ("http://0.0.0.0:9/".to_string(), "unspecified"),
        ("ftp://example.com/".to_string(), "only http and https"),
        ("file:///etc/passwd".to_string(), "only http and https"),
    ] {
        let (status, v) = put_webhook(&node, &url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {v}");
        let message = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(range), "{url}: {message}");
    }
    // Nothing was stored and nothing was sent.
    let resp = http()
        .get(node.stream_api("webhook"))
        .bearer_auth(node.token())
        .send()
        .await
        .expect("GET webhook");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(rx.count(), 0);
    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_api_refused_total",
            &["limit=\"webhook_target\""]
        ) >= 9.0,
        "refusals not counted:\n{m}"
    );
    witness.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_target_is_refused_again_at_delivery() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let data = dir.path().join("data");
    let log = dir.path().join("node.log");
    let mut node = Node::start(&data, &log, &["--webhook-allow-private"]);
    let rx = Receiver::start().await;
    set_webhook(&node, &rx.url()).await;
    let input = node.create_input("a").await;
    node.kill();
    // The operator withdraws the permission: the stored target is refused
    // when the event is sent, after resolving it.
    let node = Node::start(&data, &log, &[]);
    // The listeners moved (port 0): the input's URLs as the node now has them.
    let input = node.get(&format!("live_inputs/{}", uid(&input))).await;
    let mut publisher = go_live(&node, &input).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = node.metrics().await;
        if counter(
            &m,
            "banyan_webhook_deliveries_total",
            &["result=\"refused\""],
        ) >= 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no refused delivery counted:\n{m}\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publisher.stop().await;
    assert_eq!(rx.count(), 0, "a private target got a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_the_events_once_back() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = Node::start(
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        &["--webhook-allow-private", "--reconnect-window", "1"],
    );
    let mut rx = Receiver::start().await;
    let secret = set_webhook(&node, &rx.url()).await;
    rx.down().await;
    let input = node.create_input("a").await;
    let a_uid = uid(&input);
    let mut publisher = go_live(&node, &input).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    publisher.stop().await;
    // Both events are queued, the first failing (the second waits behind
    // it: an account's events go in order).
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = node.metrics().await;
        if counter(
            &m,
            "banyan_webhook_deliveries_total",
            &["result=\"failed\""],
        ) >= 2.0
            && counter(&m, "banyan_webhook_queue_depth", &[]) >= 2.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no failed deliveries:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rx.count(), 0);
    rx.up().await;
    let got = rx
        .wait_for(&secret, 30, "events after the outage", &node, |g| {
            has(g, &a_uid, "live_input.disconnected", "")
        })
        .await;
    assert_eq!(
        events_of(&got, &a_uid),
        vec![
            pair("live_input.connected", ""),
            pair("live_input.disconnected", ""),
        ],
        "each once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_before_a_restart_are_delivered_after_it() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let data = dir.path().join("data");
    let log = dir.path().join("node.log");
    let flags = ["--webhook-allow-private", "--reconnect-window", "1"];
    let mut node = Node::start(&data, &log, &flags);
    let mut rx = Receiver::start().await;
    let secret = set_webhook(&node, &rx.url()).await;
    rx.down().await;
    let input = node.create_input("a").await;
    let a_uid = uid(&input);
    let mut publisher = go_live(&node, &input).await;
    // Queued (the receiver is down) ...
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = node.metrics().await;
        if counter(
            &m,
            "banyan_webhook_deliveries_total",
            &["result=\"failed\""],
        ) >= 1.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "nothing queued:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... when the node dies.
    node.kill();
    publisher.stop().await;
    rx.up().await;
    let node = Node::start(&data, &log, &flags);
    let got = rx
        .wait_for(
            &secret,
            20,
            "the event queued before the restart",
            &node,
            |g| has(g, &a_uid, "live_input.connected", ""),
        )
        .await;
    assert_eq!(
        events_of(&got, &a_uid),
        vec![pair("live_input.connected", "")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_verified_against_trusted_certificates() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let (rx, cert) = Receiver::start_tls().await;
    let ca = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca, &cert).expect("write CA");

    // Not trusted: the handshake fails and nothing is delivered.
    {
        let node = Node::start(
            &dir.path().join("untrusting"),
            &dir.path().join("untrusting.log"),
            &["--webhook-allow-private"],
        );
        set_webhook(&node, &rx.url()).await;
        let input = node.create_input("a").await;
        let mut publisher = go_live(&node, &input).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let m = node.metrics().await;
            if counter(
                &m,
                "banyan_webhook_deliveries_total",
                &["result=\"failed\""],
            ) >= 1.0
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no failed delivery:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        publisher.stop().await;
        assert_eq!(rx.count(), 0, "delivered over an untrusted certificate");
    }

    // Trusted through --webhook-ca-file: delivered over TLS, signed.
    let node = Node::start(
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        &[
            "--webhook-allow-private",
            "--webhook-ca-file",
            ca.to_str().expect("utf-8 path"),
        ],
    );
    let secret = set_webhook(&node, &rx.url()).await;
    let input = node.create_input("a").await;
    let a_uid = uid(&input);
    let mut publisher = go_live(&node, &input).await;
    rx.wait_for(&secret, 15, "connected over https", &node, |g| {
        has(g, &a_uid, "live_input.connected", "")
    })
    .await;
    publisher.stop().await;
}

/// A raw HTTP receiver counting connections: it reads a request and
/// writes `answer`, or (`None`) never answers and holds the connection.
async fn raw_receiver(answer: Option<String>) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
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

async fn wait_counter(node: &Node, labels: &[&str], at_least: f64, secs: u64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_a_silent_receiver_is_cut_off() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = Node::start(
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        &["--webhook-allow-private"],
    );
    let witness = Witness::start(&node, dir.path(), 8).await;
    // A target that redirects elsewhere: the redirect is a failed
    // delivery, and the place it points to gets nothing.
    let inner = Receiver::start().await;
    let (redirector, asked) = raw_receiver(Some(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
        inner.url()
    )))
    .await;
    set_webhook(&node, &format!("http://{redirector}/hook")).await;
    let input = node.create_input("a").await;
    let mut publisher = go_live(&node, &input).await;
    wait_counter(&node, &["result=\"failed\""], 1.0, 15).await;
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(inner.count(), 0, "a redirect was followed");
    // A target that never answers: cut off at the delivery timeout, and
    // the media goes on meanwhile (the witness).
    let (silent, held) = raw_receiver(None).await;
    set_webhook(&node, &format!("http://{silent}/hook")).await;
    let failed = counter(
        &node.metrics().await,
        "banyan_webhook_deliveries_total",
        &["result=\"failed\""],
    );
    wait_counter(&node, &["result=\"failed\""], failed + 1.0, 30).await;
    assert!(held.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    publisher.stop().await;
    witness.check().await;
}
