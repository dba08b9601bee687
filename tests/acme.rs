//! Custom domains with certificates from a real ACME server: Debian's
//! `pebble` with `pebble-challtestsrv` as its DNS (every name is 127.0.0.1
//! unless the test says otherwise), both on loopback ports of the test's
//! own, with a CA and TLS certificate for pebble made here. Pebble dials
//! the node's RTMPS listener for TLS-ALPN-01 and its HTTP listener for
//! HTTP-01. Real ffmpeg publishes and plays; `openssl s_client` looks at
//! what the node serves by SNI. The node and the clients resolve the test
//! names through a private hosts file (`unshare --mount`).

mod acme_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use acme_support::{in_namespace, served, spawn, Node, Pebble, Proc, HOST};

/// ffmpeg publishing a live test pattern (H.264 + AAC) to `url` from a
/// namespace resolving `names`.
fn publish(node: &Node, names: &[&str], url: &str, log: &str) -> Proc {
    spawn(
        in_namespace(node.dir.path(), names, "ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-re", "-f", "lavfi"])
            .args(["-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi"])
            .args(["-i", "sine=frequency=440:sample_rate=44100"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url,
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(node.dir.path().join(log)).unwrap()),
        "ffmpeg publisher",
    )
}

/// An ffmpeg player; each video packet's arrival time comes back.
fn player(url: &str, log: &Path) -> (Proc, mpsc::Receiver<Instant>) {
    let mut p = spawn(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-i", url, "-map", "0:v"])
            .args([
                "-c",
                "copy",
                "-flush_packets",
                "1",
                "-f",
                "framemd5",
                "pipe:1",
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap()),
        "ffmpeg player",
    );
    let out = p.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !line.starts_with('#') && tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    (p, rx)
}

/// TLS-ALPN-01 on the RTMPS listener: a domain added without a certificate
/// becomes active with pebble's chain, ffmpeg publishes to it, it is
/// renewed and hot-swapped while a player plays with no gap over 1 s; the
/// node's own name gets its certificate too (`--acme`); names are held
/// per account and the node's own name is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_orders_renews_and_serves_by_sni() {
    const NAME: &str = "live.a.example.test";
    let mut pebble = Pebble::prepare();
    let node = Node::start(&pebble, &[NAME], &["--acme"]);
    pebble
        .start(node.port("http"), node.port("rtmps"), 30, 0)
        .await;
    let a = node.account();
    let b = node.new_account("platform-b").await;

    // Reserved: the node's own name and names under it.
    for name in [HOST, "x.node.example.test"] {
        let (s, v) = b.add(json!({ "domain": name })).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{name}: {v}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("reserved"), "{msg}");
    }

    let started = Instant::now();
    let (s, v) = a.add(json!({ "domain": NAME })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["result"]["status"], "pending");
    // Held by A, even while pending: B cannot take it.
    let (s, v) = b.add(json!({ "domain": NAME })).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("another account"));

    let d = a.settled(&node, NAME, 60).await;
    assert_eq!(d["status"], "active", "{d}\n{}", node.log_text());
    eprintln!("issued in {:?}", started.elapsed());
    assert!(d["error"].is_null(), "{d}");
    let first_renewal = d["renewedAt"].as_str().unwrap().to_string();
    assert!(d["expiresOn"].is_string(), "{d}");
    assert!(node.log_text().contains("answered a TLS-ALPN-01 challenge"));

    let intermediate = pebble.intermediate_subject().await;
    let (issuer, serial) = served(&node, NAME);
    assert_eq!(issuer, intermediate, "the chain is pebble's");
    // The node's own name, ordered by --acme (its first tries may have
    // run before pebble was up, and were retried).
    let deadline = Instant::now() + Duration::from_secs(60);
    while served(&node, HOST).0 != intermediate {
        assert!(
            Instant::now() < deadline,
            "own name never issued:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A name nobody added gets the node's own certificate, not A's.
    let (_, own_serial) = served(&node, HOST);
    let (_, other_serial) = served(&node, "nobody.example.test");
    assert_eq!(other_serial, own_serial);
    assert_ne!(other_serial, serial);

    // Publish through the name; play from the node; renewal mid-stream.
    let (_, key, play) = a.input().await;
    let rtmps = node.port("rtmps");
    let _pubr = publish(
        &node,
        &[NAME],
        &format!("rtmps://{NAME}:{rtmps}/live/{key}"),
        "pub.log",
    );
    let play_url = format!("rtmps://127.0.0.1:{rtmps}/live/{play}");
    let mut arrivals = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (p, rx) = player(&play_url, &node.dir.path().join("play.log"));
        if let Ok(first) = rx.recv_timeout(Duration::from_secs(3)) {
            arrivals = Some((p, rx, first));
            break;
        }
    }
    let (_player, rx, mut last) =
        arrivals.unwrap_or_else(|| panic!("nothing played through {NAME}:\n{}", node.log_text()));
    let mut max_gap = Duration::ZERO;
    let mut packets = 0;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut renewed_at = None;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(t) => {
                max_gap = max_gap.max(t - last);
                last = t;
                packets += 1;
            }
            Err(_) => panic!("the player stopped:\n{}", node.log_text()),
        }
        if packets % 30 == 0 && renewed_at.is_none() {
            let d = a.domain(NAME).await;
            if d["renewedAt"].as_str() != Some(first_renewal.as_str()) {
                assert_eq!(d["status"], "active");
                renewed_at = Some(Instant::now());
            }
        }
        if renewed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
    }
    assert!(
        renewed_at.is_some(),
        "no renewal within the window:\n{}",
        node.log_text()
    );
    assert!(
        max_gap <= Duration::from_secs(1),
        "a gap of {max_gap:?} in {packets} packets"
    );
    let (issuer2, serial2) = served(&node, NAME);
    assert_eq!(issuer2, intermediate);
    assert_ne!(
        serial2, serial,
        "the renewed certificate is served without a restart"
    );
    eprintln!("renewed while playing: {packets} packets, largest gap {max_gap:?}");
}

/// HTTP-01 on the HTTP listener with pebble rejecting 30 % of nonces: the
/// order still completes; a name the CA resolves elsewhere ends `failed`
/// with the CA's reason; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_with_nonce_rejections_and_a_failed_challenge() {
    const GOOD: &str = "push.b.example.test";
    const BAD: &str = "elsewhere.example.test";
    let mut pebble = Pebble::prepare();
    let node = Node::start(&pebble, &[], &["--acme-challenge", "http-01"]);
    pebble
        .start(node.port("http"), node.port("rtmps"), 300, 30)
        .await;
    // Nothing listens on 127.0.0.2: the CA cannot reach the node there.
    pebble.add_a(BAD, "127.0.0.2").await;
    let a = node.account();
    let (s, v) = a.add(json!({ "domain": GOOD })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = a.add(json!({ "domain": BAD })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    let bad = a.settled(&node, BAD, 120).await;
    assert_eq!(bad["status"], "failed", "{bad}");
    let reason = bad["error"].as_str().unwrap();
    assert!(reason.contains("the CA refused"), "{reason}");
    assert!(reason.contains("127.0.0.2"), "the CA's own words: {reason}");

    let good = a.settled(&node, GOOD, 180).await;
    assert_eq!(good["status"], "active", "{good}\n{}", node.log_text());
    let (issuer, _) = served(&node, GOOD);
    assert_eq!(issuer, pebble.intermediate_subject().await);
    assert!(pebble.log().contains("badNonce") || pebble.log().contains("nonce"));

    // `banyan doctor` reads the domains' ACME state from the database: the
    // failed name with the CA's reason, and the active one as near expiry
    // (pebble issues 300 s certificates here).
    let mut doctor = std::process::Command::new(acme_support::BIN);
    doctor
        .arg("doctor")
        .arg("--data-dir")
        .arg(node.dir.path().join("data"))
        .arg("--no-rtmp");
    for l in ["http", "rtmps", "srt", "metrics"] {
        doctor
            .arg(format!("--{l}"))
            .arg(node.ready[l].as_str().unwrap());
    }
    let out = doctor
        .env_remove("BANYAN_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains(&format!("WARN  domain {BAD}: failed (")) && said.contains("127.0.0.2"),
        "doctor names the failed domain and the CA's reason:\n{said}"
    );
    assert!(
        said.contains(&format!(
            "WARN  domain {GOOD}: the certificate expires in 0 days"
        )),
        "{said}"
    );

    // A failed name can be added again (and here fails again).
    let (s, v) = a.add(json!({ "domain": BAD })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}

/// Uploaded certificates: refused in plain words when unproven (not
/// served, no keys bound); OpenSSL's usual self-signed CA:TRUE certificate
/// accepted for a name that resolves to the node, and ffmpeg publishes to
/// it; additions over the per-account limit get 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_need_a_proven_name() {
    const PROVEN: &str = "push.c.example.test";
    const UNPROVEN: &str = "squat.example.test";
    let pebble = Pebble::prepare();
    let node = Node::start(&pebble, &[PROVEN], &["--max-domain-orders", "3"]);
    let a = node.account();
    let openssl_cert = |name: &str| {
        let (c, k) = (
            node.dir.path().join(format!("{name}.crt")),
            node.dir.path().join(format!("{name}.key")),
        );
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-keyout",
            ])
            .arg(&k)
            .arg("-out")
            .arg(&c)
            .args([
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &format!("subjectAltName=DNS:{name}"),
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        (
            std::fs::read_to_string(c).unwrap(),
            std::fs::read_to_string(k).unwrap(),
        )
    };
    let (c, k) = openssl_cert(UNPROVEN);
    assert!(c.contains("BEGIN CERTIFICATE"));
    let (s, v) = a
        .add(json!({"domain": UNPROVEN, "certificate": c, "privateKey": k}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let r = &v["result"];
    assert_eq!(r["status"], "pending", "{v}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("not proven") && err.contains("point"), "{err}");
    assert!(r["verification"]["http"]["url"]
        .as_str()
        .unwrap()
        .contains("/.well-known/banyan-domain/"));
    let (issuer, _) = served(&node, UNPROVEN);
    assert!(
        !issuer.contains(UNPROVEN),
        "an unproven name is not served: {issuer}"
    );

    let (c, k) = openssl_cert(PROVEN);
    let (s, v) = a
        .add(json!({"domain": PROVEN, "certificate": c, "privateKey": k}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["status"], "active");
    let (issuer, _) = served(&node, PROVEN);
    assert!(issuer.contains(PROVEN), "{issuer}");
    let (uid, key, _) = a.input().await;
    let rtmps = node.port("rtmps");
    let mut p = publish(
        &node,
        &[PROVEN],
        &format!("rtmps://{PROVEN}:{rtmps}/live/{key}"),
        "c.log",
    );
    let http = node.ready["http"].as_str().unwrap().to_string();
    let mut live = false;
    for _ in 0..100 {
        let v: Value = reqwest::get(format!("http://{http}/{uid}/lifecycle"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["live"] == json!(true) {
            live = true;
            break;
        }
        assert!(
            p.0.try_wait().unwrap().is_none(),
            "ffmpeg exited:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(live, "never live through {PROVEN}:\n{}", node.log_text());

    // The third addition this hour is the limit; the fourth is refused.
    let (s, _) = a.add(json!({"domain": "third.example.test"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = a.add(json!({"domain": "fourth.example.test"})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("per hour"));
}
