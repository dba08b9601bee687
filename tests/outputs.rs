//! Simulcast outputs end to end: ffmpeg publishes to a node whose live input
//! has outputs to real servers -- nginx-rtmp (RTMP), a second Banyan node
//! (RTMPS, its self-signed certificate trusted with `--outputs-ca`) and an
//! srt-live-transmit listener (SRT caller) -- and what each destination
//! received is compared frame by frame with what was published. A
//! destination killed and restarted mid-stream is rejoined by itself; a
//! dead destination disturbs neither the others nor a viewer; toggling
//! `enabled` while live stops and starts the push.

mod common;
mod outputs_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{publish, publish_looped, Client, Hashes, Node, Proto, FPS, FRAMEMD5_ARGS};
use outputs_support::*;
use serde_json::{json, Value};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_outputs_deliver_every_frame_to_nginx_banyan_over_rtmps_and_srt() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let nginx = Nginx::start(dir.path()).await;
    let node2 = Node::start(&["--reconnect-window", "1"]);
    let input2 = node2.create_input().await;
    let cert = Path::new(node2.ready["dataDir"].as_str().expect("dataDir")).join("tls/cert.pem");
    let node = Node::start(&[
        "--reconnect-window",
        "1",
        "--outputs-allow-private",
        "--outputs-ca",
        cert.to_str().expect("utf-8"),
    ]);
    let input = node.create_input().await;
    let api = Api::of(&node);

    // The SRT listener (encrypted) writes the transport stream it receives
    // to a file.
    let srt_port = free_udp_port();
    let srt_ts = dir.path().join("srt.ts");
    let mut slt = Command::new("srt-live-transmit");
    slt.arg(format!(
        "srt://127.0.0.1:{srt_port}?mode=listener&latency=120&passphrase=simulcast-passphrase"
    ))
    .arg("file://con")
    .stdout(std::fs::File::create(&srt_ts).expect("srt.ts"))
    .stderr(Stdio::null());
    let mut slt = Client::spawn(slt, "srt-live-transmit");

    let o_nginx = api.create(input.uid(), &nginx.url(), "simulcast").await;
    let rtmps_url = input2.0["rtmps"]["url"].as_str().expect("rtmps url");
    assert!(rtmps_url.starts_with("rtmps://"), "{rtmps_url}");
    let o_banyan = api
        .create(
            input.uid(),
            rtmps_url,
            input2.0["rtmps"]["streamKey"].as_str().expect("key"),
        )
        .await;
    let o_srt = api
        .create(
            input.uid(),
            &format!(
                "srt://127.0.0.1:{srt_port}?streamid=simulcast&passphrase=simulcast-passphrase"
            ),
            "",
        )
        .await;
    assert_eq!(api.list(input.uid()).await.len(), 3);
    // Not live yet: nothing runs.
    assert_eq!(api.get(input.uid(), &o_nginx).await["status"], Value::Null);

    // nginx-rtmp lets a player wait for the publisher.
    let nginx_md5 = dir.path().join("nginx.md5");
    let mut p_nginx = player(
        &format!("{}/simulcast", nginx.url()),
        &nginx_md5,
        "nginx player",
    );
    let mut publisher = publish(&input, Proto::Rtmp);
    for o in [&o_nginx, &o_banyan, &o_srt] {
        api.wait_status(input.uid(), o, json!("connected"), 15)
            .await;
    }
    // The second node sees its input live through the RTMPS push.
    for _ in 0..50 {
        if node2.status(input2.uid()).await == json!("connected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node2.status(input2.uid()).await, json!("connected"));
    let banyan_md5 = dir.path().join("banyan.md5");
    let mut p_banyan = player(&input2.play_url(Proto::Rtmp), &banyan_md5, "node 2 player");

    assert!(
        publisher.wait(40.0).await.is_some_and(|s| s.success()),
        "publisher failed: {}",
        publisher.stderr().await
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    for c in [&mut p_nginx, &mut p_banyan, &mut slt] {
        c.stop().await;
    }
    let srt_md5 = dir.path().join("srt.md5");
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&srt_ts)
        .args(FRAMEMD5_ARGS)
        .arg(&srt_md5)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "hashing what srt-live-transmit received");

    let src = looped(1);
    check_run(
        &Hashes::read(&nginx_md5),
        &src,
        8,
        "nginx-rtmp (RTMP output)",
    );
    check_run(
        &Hashes::read(&srt_md5),
        &src,
        8,
        "srt-live-transmit (SRT output)",
    );
    check_run(
        &Hashes::read(&banyan_md5),
        &src,
        6,
        "second node (RTMPS output)",
    );

    let m = http()
        .get(node.metrics_url())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for proto in ["rtmp", "rtmps", "srt"] {
        let bytes = metric(
            &m,
            &format!("banyan_output_bytes_total{{protocol=\"{proto}\"}}"),
        );
        assert!(bytes > 100_000.0, "{proto} output bytes: {bytes}");
    }
    // The stream ended: every output stopped by itself.
    for o in [&o_nginx, &o_banyan, &o_srt] {
        api.wait_status(input.uid(), o, Value::Null, 15).await;
    }
    // Stream keys and passphrases are never logged.
    let log = node.log_text();
    let key2 = input2.0["rtmps"]["streamKey"].as_str().expect("key");
    assert!(!log.contains(key2), "an output's stream key is in the log");
    assert!(
        !log.contains("simulcast"),
        "an output's stream key is in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_destination_is_rejoined_and_a_dead_one_disturbs_no_one() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nginx = Nginx::start(dir.path()).await;
    let node = Node::start(&["--reconnect-window", "1", "--outputs-allow-private"]);
    let input = node.create_input().await;
    let api = Api::of(&node);
    let o_nginx = api.create(input.uid(), &nginx.url(), "rejoin").await;
    let dead_rtmp = api
        .create(
            input.uid(),
            &format!("rtmp://127.0.0.1:{}/live", free_tcp_port()),
            "nobody",
        )
        .await;
    let dead_srt = api
        .create(
            input.uid(),
            &format!("srt://127.0.0.1:{}?streamid=nobody", free_udp_port()),
            "",
        )
        .await;

    // A black hole: accepts connections and never answers or reads.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_port = hole.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let black_hole = api
        .create(
            input.uid(),
            &format!("rtmp://127.0.0.1:{hole_port}/live"),
            "void",
        )
        .await;

    let mut publisher = publish_looped(&input, 2);
    node.wait_connected(input.uid(), &mut publisher).await;
    api.wait_status(input.uid(), &o_nginx, json!("connected"), 15)
        .await;
    // The witness: a viewer of the node itself, for the whole test.
    let viewer_md5 = dir.path().join("viewer.md5");
    let mut viewer = player(&input.play_url(Proto::Rtmp), &viewer_md5, "viewer");
    let watching = Instant::now();
    wait_video(&viewer_md5, 2 * FPS, 15, "viewer").await;

    // Kill the destination mid-stream: the output notices and retries.
    nginx.kill().await;
    api.wait_status(input.uid(), &o_nginx, json!("reconnecting"), 15)
        .await;
    let o = api.get(input.uid(), &o_nginx).await;
    assert!(o["lastError"].is_string(), "the failure is shown: {o}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    nginx.run().await;
    let restarted = Instant::now();
    let md5 = dir.path().join("rejoined.md5");
    let mut p = player(&format!("{}/rejoin", nginx.url()), &md5, "nginx player");
    api.wait_status(input.uid(), &o_nginx, json!("connected"), 15)
        .await;
    let took = restarted.elapsed();
    println!("the output rejoined {took:?} after the destination came back");
    assert!(
        took <= Duration::from_secs(8),
        "rejoined {took:?} after the destination came back"
    );
    wait_video(&md5, 4 * FPS, 20, "the restarted destination").await;
    p.stop().await;
    check_run(&Hashes::read(&md5), &looped(3), 4, "restarted nginx-rtmp");

    // The black hole never gets past connecting.
    let v = api.get(input.uid(), &black_hole).await;
    assert!(
        v["status"] == json!("connecting") || v["status"] == json!("reconnecting"),
        "black hole: {v}"
    );
    holder.abort();
    // The dead destinations keep failing, visibly, and touch nothing else.
    for o in [&dead_rtmp, &dead_srt] {
        let mut v = api.get(input.uid(), o).await;
        for _ in 0..100 {
            if v["lastError"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            v = api.get(input.uid(), o).await;
        }
        assert!(
            v["status"] == json!("reconnecting") || v["status"] == json!("connecting"),
            "dead output: {v}"
        );
        assert!(v["lastError"].is_string(), "dead output's error: {v}");
    }
    let m = http()
        .get(node.metrics_url())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metric(&m, "banyan_output_reconnects_total") >= 3.0, "{m}");
    assert_eq!(
        metric(&m, "banyan_outputs{state=\"connected\"}"),
        1.0,
        "one output connected"
    );
    assert!(!m.contains(input.uid()), "no uid in the outputs' metrics");

    publisher.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    viewer.stop().await;
    // Every frame from its join to the end, with a few seconds' slack for
    // its start and the publisher's stop.
    let secs = (watching.elapsed().as_secs() as usize)
        .saturating_sub(5)
        .max(4);
    let seen = Hashes::read(&viewer_md5);
    check_run(&seen, &looped(3), secs, "viewer beside the outputs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggling_enabled_while_live_stops_and_starts_the_push() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let nginx = Nginx::start(dir.path()).await;
    let node = Node::start(&["--reconnect-window", "1", "--outputs-allow-private"]);
    let input = node.create_input().await;
    let api = Api::of(&node);

    // Validation names the field; the per-input cap is a named 409.
    let spare = node.create_input().await;
    for (body, field) in [
        (
            json!({"url": "http://127.0.0.1/live", "streamKey": "k"}),
            "url",
        ),
        (json!({"streamKey": "k"}), "url"),
        (json!({"url": "rtmp://127.0.0.1/live"}), "streamKey"),
    ] {
        let (st, v) = api
            .call(
                reqwest::Method::POST,
                &format!("/{}/outputs", spare.uid()),
                Some(body),
            )
            .await;
        assert_eq!(st, 400, "{v}");
        let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{msg}");
    }
    let mut first = String::new();
    for i in 0..50 {
        let o = api
            .create(spare.uid(), "rtmp://127.0.0.1:9/live", &format!("k{i}"))
            .await;
        if i == 0 {
            first = o;
        }
    }
    // Only `enabled` changes: the destination repeated as it is passes, a
    // new one is refused, naming the fields.
    let path = format!("/{}/outputs/{first}", spare.uid());
    let put = |body: Value| api.call(reqwest::Method::PUT, &path, Some(body));
    let (st, v) =
        put(json!({"enabled": false, "url": "rtmp://127.0.0.1:9/live", "streamKey": "k0"})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["enabled"], json!(false));
    let (st, v) = put(json!({"enabled": true, "url": "rtmp://127.0.0.1:9/elsewhere"})).await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("url, streamKey"), "{v}");
    let (st, v) = put(json!({"url": "rtmp://127.0.0.1:9/live"})).await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("enabled"), "{v}");
    // The same through the client subcommand.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .arg("outputs")
            .args(args)
            .args(["--api", &node.api()])
            .args(["--account", node.creds["accountId"].as_str().expect("id")])
            .args(["--token", node.creds["apiToken"].as_str().expect("token")])
            .output()
            .expect("banyan outputs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let listed = cli(&["list", spare.uid()]);
    assert_eq!(listed.as_array().map(Vec::len), Some(50));
    let v = cli(&["enable", spare.uid(), &first]);
    assert_eq!(v["enabled"], json!(true));

    let (st, v) = api
        .call(
            reqwest::Method::POST,
            &format!("/{}/outputs", spare.uid()),
            Some(json!({"url": "rtmp://127.0.0.1:9/live", "streamKey": "k"})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(v.to_string().contains("max_outputs_per_input (50)"), "{v}");
    cli(&["delete", spare.uid(), &first]);
    assert_eq!(api.list(spare.uid()).await.len(), 49);
    let (st, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("/{}/outputs/{}", spare.uid(), "0".repeat(32)),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(st, 404);

    let o = api.create(input.uid(), &nginx.url(), "toggle").await;
    let mut publisher = publish_looped(&input, 2);
    node.wait_connected(input.uid(), &mut publisher).await;
    api.wait_status(input.uid(), &o, json!("connected"), 15)
        .await;
    let first = dir.path().join("first.md5");
    let mut p1 = player(&format!("{}/toggle", nginx.url()), &first, "player 1");
    wait_video(&first, FPS, 15, "before disabling").await;

    // Off while live: the push stops at once and nginx gets nothing more.
    let v = api.set_enabled(input.uid(), &o, false).await;
    assert_eq!(v["enabled"], json!(false));
    api.wait_status(input.uid(), &o, Value::Null, 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = Hashes::read(&first).video.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        Hashes::read(&first).video.len(),
        frozen,
        "frames still arrive at a disabled output's destination"
    );
    p1.stop().await;
    let second = dir.path().join("second.md5");
    let mut p2 = player(&format!("{}/toggle", nginx.url()), &second, "player 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        Hashes::read(&second).video.is_empty(),
        "a disabled output still pushes"
    );

    // On again: it reconnects at once and the destination plays again.
    let v = api.set_enabled(input.uid(), &o, true).await;
    assert_eq!(v["enabled"], json!(true));
    api.wait_status(input.uid(), &o, json!("connected"), 5)
        .await;
    wait_video(&second, 2 * FPS, 15, "after enabling again").await;
    p2.stop().await;
    check_run(&Hashes::read(&second), &looped(3), 2, "re-enabled output");

    // Deleted while live: gone from the list, and the push stops.
    let (st, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/{}/outputs/{o}", input.uid()),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(api.list(input.uid()).await.is_empty());
    let m = async {
        http()
            .get(node.metrics_url())
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = m.await;
    assert_eq!(
        metric(&m, "banyan_outputs{state=\"connected\"}"),
        0.0,
        "{m}"
    );
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_unless_the_operator_allows_them() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(&["--reconnect-window", "1"]);
    let input = node.create_input().await;
    let api = Api::of(&node);
    // An internal service the outputs must not reach.
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = internal.local_addr().expect("addr").port();
    for url in [
        format!("rtmp://127.0.0.1:{port}/live"),
        "rtmp://169.254.169.254/latest".to_string(),
        "rtmps://[::1]:443/live".to_string(),
        "srt://10.0.0.1:9000?streamid=x".to_string(),
    ] {
        let (st, v) = api
            .call(
                reqwest::Method::POST,
                &format!("/{}/outputs", input.uid()),
                Some(json!({"url": url, "streamKey": "k"})),
            )
            .await;
        assert_eq!(st, 400, "{url}: {v}");
        let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("url:") && msg.contains("--outputs-allow-private"),
            "{msg}"
        );
    }
    // A name that resolves to loopback passes the API and is refused when
    // it is resolved, before any connection.
    let o = api
        .create(input.uid(), &format!("rtmp://localhost:{port}/live"), "k")
        .await;
    let mut publisher = publish(&input, Proto::Rtmp);
    node.wait_connected(input.uid(), &mut publisher).await;
    let viewer_md5 = dir.path().join("viewer.md5");
    let mut viewer = player(&input.play_url(Proto::Rtmp), &viewer_md5, "viewer");
    let mut v = api.get(input.uid(), &o).await;
    for _ in 0..100 {
        if v["lastError"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        v = api.get(input.uid(), &o).await;
    }
    let err = v["lastError"].as_str().unwrap_or_default();
    assert!(err.contains("--outputs-allow-private"), "{v}");
    let probe = tokio::time::timeout(Duration::from_secs(3), internal.accept()).await;
    assert!(probe.is_err(), "the output connected to a loopback service");
    // The witness viewer played on undisturbed.
    wait_video(&viewer_md5, 3 * FPS, 15, "viewer").await;
    viewer.stop().await;
    publisher.stop().await;
    check_run(&Hashes::read(&viewer_md5), &looped(1), 3, "viewer");
}
