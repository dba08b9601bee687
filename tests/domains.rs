//! Custom ingest domains end to end, and the limits on guessing keys.
//!
//! The real binary on port 0 everywhere; ffmpeg publishes and plays over
//! RTMPS to custom domain names resolved to 127.0.0.1 inside a private mount
//! namespace (`unshare --mount` with a bind-mounted hosts file), so the
//! machine's own /etc/hosts is never touched. What arrives is checked per
//! packet against the source (framemd5 of the video slices).

mod common;
mod domains_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::calls::call_as;
use common::node::{hosts_file, in_namespace};
use domains_support::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Two accounts, each with a custom domain: a key reaches its stream only
/// through its own account's domain (or the node's own name); the right one
/// publishes and plays with every packet intact; a domain added and one
/// removed while the stream is live do not disturb it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domains_admit_only_their_account_and_stay_live_across_changes() {
    let node = Node::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let a = Account::default_of(&node);
    let b = Account::create(&node, "platform-b").await;
    let (ca, ka) = self_signed("push.a.example.test");
    let (cb, kb) = self_signed("push.b.example.test");
    let (s, v) = a.add_domain(&node, "push.a.example.test", &ca, &ka).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = b.add_domain(&node, "push.b.example.test", &cb, &kb).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (input_a, input_b) = (a.input(&node).await, b.input(&node).await);
    let key = |i: &Value, which: &str| i[which]["streamKey"].as_str().unwrap().to_string();
    let port = node.port("rtmps");
    let hosts = hosts_file(
        tmp.path(),
        &[
            "push.a.example.test",
            "push.b.example.test",
            "push.c.example.test",
        ],
    );
    let url = |host: &str, k: &str| format!("rtmps://{host}:{port}/live/{k}");
    let log = |n: &str| tmp.path().join(format!("{n}.log"));

    // Another account's key through a custom domain: refused, both ways and
    // for playback keys too.
    expect_refused(
        &hosts,
        &url("push.b.example.test", &key(&input_a, "rtmps")),
        &log("cross-a"),
        "account A's key through B's domain",
    );
    expect_refused(
        &hosts,
        &url("push.a.example.test", &key(&input_b, "rtmps")),
        &log("cross-b"),
        "account B's key through A's domain",
    );
    let mut cross_play = Proc::spawn(
        in_namespace(&hosts, "ffprobe")
            .args(["-loglevel", "error"])
            .arg(url("push.b.example.test", &key(&input_a, "rtmpsPlayback")))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let st = cross_play.wait_for(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| !s.success()),
        "cross-account play: {st:?}"
    );
    let refused = node
        .counter(
            "banyan_rtmp_connections_refused_total",
            "reason=\"domain_account\"",
        )
        .await;
    assert!(refused >= 3.0, "domain_account refusals counted: {refused}");

    // The node's own name (no SNI) admits any account: B publishes there.
    let mut pub_b = publish(
        &hosts,
        &format!("rtmps://127.0.0.1:{port}/live/{}", key(&input_b, "rtmps")),
        &log("pub-b"),
    );
    // A publishes through its own domain and is played through it.
    let mut pub_a = publish(
        &hosts,
        &url("push.a.example.test", &key(&input_a, "rtmps")),
        &log("pub-a"),
    );
    let uid_a = input_a["uid"].as_str().unwrap();
    wait_live(&node, uid_a, true).await;
    wait_live(&node, input_b["uid"].as_str().unwrap(), true).await;
    assert!(pub_b.wait_for(Duration::ZERO).is_none(), "B publishes");
    drop(pub_b);
    let (mut play, rx) = player(
        &hosts,
        &url("push.a.example.test", &key(&input_a, "rtmpsPlayback")),
        &log("play-a"),
    );
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no video arrived:\n{}", node.log_text()));
    let start = first.0;
    let mut got = vec![first];

    // While it plays: a domain added to A, B's domain removed.
    let deadline = start + Duration::from_millis(1500);
    while let Ok(p) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        got.push(p);
        if Instant::now() >= deadline {
            break;
        }
    }
    let changed_at = Instant::now();
    let (cc, kc) = self_signed("push.c.example.test");
    let (s, v) = a.add_domain(&node, "push.c.example.test", &cc, &kc).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call_as(
        Method::DELETE,
        &b.url(&node, "ingest_domains/push.b.example.test"),
        &b.token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Until the publisher's clip ends (the player then leaves too).
    while let Ok(p) = rx.recv_timeout(Duration::from_secs(3)) {
        got.push(p);
        if got.len() > 400 {
            break;
        }
    }
    let _ = pub_a.wait_for(Duration::from_secs(5));
    let _ = play.wait_for(Duration::from_secs(5));

    let after = got.iter().filter(|(t, _)| *t > changed_at).count();
    assert!(after >= 60, "only {after} frames after the domain changes");
    let worst = got
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .max()
        .unwrap();
    assert!(
        worst <= Duration::from_secs(1),
        "a gap of {worst:?} in the player's video"
    );
    let hashes: Vec<String> = got.into_iter().map(|(_, h)| h).collect();
    let matched = check_in_order(&hashes, &source().1);
    assert!(matched >= 150, "only {matched} frames played");

    // The new domain admits A's key; B's removed one is the node's own
    // name again, admitting any account.
    let before = node
        .counter(
            "banyan_rtmp_connections_refused_total",
            "reason=\"domain_account\"",
        )
        .await;
    let mut again = publish(
        &hosts,
        &url("push.c.example.test", &key(&input_a, "rtmps")),
        &log("pub-a-c"),
    );
    let mut b_again = publish(
        &hosts,
        &url("push.b.example.test", &key(&input_a, "rtmpsPlayback")),
        &log("pub-b-removed"),
    );
    // (A playback key cannot publish: refused as a bad key, not for the domain.)
    let st = b_again.wait_for(Duration::from_secs(10));
    assert!(st.is_some_and(|s| !s.success()), "a playback key published");
    assert!(
        again.wait_for(Duration::from_secs(2)).is_none(),
        "publishing through the new domain:\n{}",
        std::fs::read_to_string(log("pub-a-c")).unwrap_or_default()
    );
    wait_live(&node, uid_a, true).await;
    let after_refused = node
        .counter(
            "banyan_rtmp_connections_refused_total",
            "reason=\"domain_account\"",
        )
        .await;
    assert_eq!(before, after_refused, "no domain refusal after the changes");

    let text = node.log_text();
    for i in [&input_a, &input_b] {
        for which in ["rtmps", "rtmpsPlayback"] {
            assert!(!text.contains(&key(i, which)), "a stream key in the log");
        }
    }
}

/// Uploads that cannot serve the domain get a 400 that says why; a chain
/// from a CA covering the name by wildcard is accepted and served by SNI.
#[tokio::test]
async fn bad_certificates_are_refused_with_the_reason() {
    use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, KeyPair};
    let node = Node::start(&[]);
    let a = Account::default_of(&node);
    let name = "push.live.example.test";
    let key = KeyPair::generate().unwrap();
    let dated = |from: (i32, u8, u8), to: (i32, u8, u8)| {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.not_before = date_time_ymd(from.0, from.1, from.2);
        p.not_after = date_time_ymd(to.0, to.1, to.2);
        p.self_signed(&key).unwrap().pem()
    };
    let expired = dated((2020, 1, 1), (2021, 1, 1));
    let future = dated((2099, 1, 1), (2100, 1, 1));
    let (good, good_key) = self_signed(name);
    let (_, other_key) = self_signed(name);
    // A leaf signed by a CA, uploaded without the CA: nothing to verify
    // its signature against.
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Banyan test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["*.live.example.test".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "*.live.example.test");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let kp = key.serialize_pem();
    let lk = leaf_key.serialize_pem();
    for (domain, cert, pkey, why) in [
        (name, expired.as_str(), kp.as_str(), "expired"),
        (name, future.as_str(), kp.as_str(), "not valid yet"),
        (name, good.as_str(), other_key.as_str(), "does not fit"),
        (
            "other.example.test",
            good.as_str(),
            good_key.as_str(),
            "does not cover",
        ),
        (
            name,
            leaf.pem().as_str(),
            lk.as_str(),
            "chain is incomplete",
        ),
        (
            name,
            good.as_str(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "key",
        ),
    ] {
        let (s, v) = a.add_domain(&node, domain, cert, pkey).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{why}: {v}");
        assert_eq!(v["success"], json!(false));
        let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{msg:?} should say {why:?}");
        assert!(!msg.contains("PRIVATE KEY"), "the key is not echoed: {msg}");
    }
    let (s, v) = call_as(Method::GET, &a.url(&node, "ingest_domains"), &a.token, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"], json!([]), "nothing refused was stored");

    // The CA's chain (leaf, CA) covers the name by wildcard.
    let chain = format!("{}{}", leaf.pem(), ca.pem());
    let (s, v) = a.add_domain(&node, name, &chain, &lk).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A TLS client trusting the CA verifies the node for that name.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let addr = node.ready["rtmps"].as_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let sni = rustls::pki_types::ServerName::try_from(name).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), sni).unwrap();
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).expect("a verified handshake");
        }
    })
    .await
    .unwrap();
}

/// Repeated wrong keys from one address (RTMP plays, an SRT passphrase)
/// get that address refused, good keys included and on every protocol,
/// until the window ends; then the good key works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_keys_limit_the_address_for_the_window() {
    const WINDOW: Duration = Duration::from_secs(8);
    let node = Node::start(&[
        "--rtmp",
        "127.0.0.1:0",
        "--auth-fail-max",
        "5",
        "--auth-fail-window",
        "8",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let a = Account::default_of(&node);
    let input = a.input(&node).await;
    let uid = input["uid"].as_str().unwrap();
    let rtmp = node.port("rtmp");
    let srt = node.port("srt");
    let good = format!(
        "rtmp://127.0.0.1:{rtmp}/live/{}",
        input["rtmp"]["streamKey"].as_str().unwrap()
    );
    let hosts = hosts_file(tmp.path(), &[]);
    let started = Instant::now();

    // Four wrong playback keys over RTMP...
    for i in 0..4 {
        let mut p = Proc::spawn(
            Command::new("rtmpdump")
                .args(["-q", "--live", "-m", "5", "-o", "/dev/null", "-r"])
                .arg(format!("rtmp://127.0.0.1:{rtmp}/live/wrong-key-{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            p.wait_for(Duration::from_secs(8)).is_some(),
            "rtmpdump {i} hung"
        );
    }
    // ...and a wrong SRT passphrase make five failures.
    let srt_url = |pass: &str| format!("srt://127.0.0.1:{srt}?streamid={uid}&passphrase={pass}");
    let mut p = Proc::spawn(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=30")
            .args([
                "-t",
                "1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-f",
                "mpegts",
            ])
            .arg(srt_url("wrong-passphrase-0000"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let st = p.wait_for(Duration::from_secs(10));
    assert!(st.is_some_and(|s| !s.success()), "wrong passphrase: {st:?}");
    assert_eq!(
        node.counter("banyan_auth_rate_limited_total", "").await,
        0.0,
        "nothing limited yet"
    );

    // The good key is refused now, over RTMP and over SRT.
    expect_refused(
        &hosts,
        &good,
        &tmp.path().join("limited.log"),
        "while limited",
    );
    let mut p = Proc::spawn(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=30")
            .args([
                "-t",
                "1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-f",
                "mpegts",
            ])
            .arg(srt_url(input["srt"]["passphrase"].as_str().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let st = p.wait_for(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| !s.success()),
        "srt while limited: {st:?}"
    );
    assert!(
        started.elapsed() < WINDOW,
        "the limited attempts took longer than the window; the test proves nothing"
    );
    let rtmp_limited = node
        .counter("banyan_auth_rate_limited_total", "protocol=\"rtmp\"")
        .await;
    let srt_limited = node
        .counter("banyan_auth_rate_limited_total", "protocol=\"srt\"")
        .await;
    assert!(
        rtmp_limited >= 1.0 && srt_limited >= 1.0,
        "rtmp {rtmp_limited}, srt {srt_limited}"
    );

    // After the window, the good key publishes again.
    let rest =
        (started + WINDOW + Duration::from_millis(500)).saturating_duration_since(Instant::now());
    tokio::time::sleep(rest).await;
    let mut ok = publish(&hosts, &good, &tmp.path().join("after.log"));
    wait_live(&node, uid, true).await;
    assert!(ok.wait_for(Duration::from_millis(200)).is_none());
    let text = node.log_text();
    assert!(!text.contains(input["srt"]["passphrase"].as_str().unwrap()));
    assert!(!text.contains(input["rtmp"]["streamKey"].as_str().unwrap()));
}
