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
mod webhooks_support;

use std::time::Duration;

use reliab::*;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use webhooks_support::*;

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
