//! Limits on every listener against the real binary: request bodies
//! trickled in, clients that never read, idle keep-alive connections and
//! silent RTMP(S) handshakes are cut at their deadlines; one address is
//! capped in connections while another is served; HTTPS serves the API and
//! HLS, and its URLs are https. (Trusted proxies: tests/trusted_proxies.rs.)
//!
//! Attackers connect from 127.0.0.2 and up, legitimate clients from
//! 127.0.0.1 (all of 127/8 is loopback). A real ffmpeg stream (the witness)
//! runs alongside the attacks and must stay whole.

mod common;
mod limits_common;
mod reliab;

use std::time::{Duration, Instant};

use limits_common::*;
use reliab::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    Node::start(&dir.join("data"), &dir.join("node.log"), extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_unread_answers_and_idle_handshakes_are_cut_at_their_deadlines() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(
        dir.path(),
        &[
            "--http-body-timeout",
            "2",
            "--http-write-timeout",
            "2",
            "--http-header-timeout",
            "3",
            "--handshake-timeout",
            "2",
        ],
    );
    let witness = Witness::start(&node, dir.path(), 10).await;
    let http = node.addr("http");
    let t0 = Instant::now();

    // A request body trickled a byte every 300 ms, from 127.0.0.2.
    let mut body = connect_from("127.0.0.2", &http, false).await;
    let head = format!(
        "POST /client/v4/accounts/{}/stream/live_inputs HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{",
        node.account(),
        node.token()
    );
    body.write_all(head.as_bytes()).await.expect("head");
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        let mut answer = Vec::new();
        let mut b = [0u8; 4096];
        for _ in 0..100 {
            match tokio::time::timeout(Duration::from_millis(300), body.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), answer),
                Ok(Ok(n)) => answer.extend_from_slice(&b[..n]),
                Err(_) => {
                    if body.write_all(b" ").await.is_err() {
                        return (Some(started.elapsed()), answer);
                    }
                }
            }
        }
        (None, answer)
    });

    // A client that pipelines many requests and reads none of the answers
    // (more than the socket buffers hold).
    const PIPELINED: usize = 60_000;
    let one = b"GET /no-such-page HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut sample = connect_from("127.0.0.1", &http, false).await;
    sample.write_all(one).await.expect("sample request");
    let (answer, _) = read_to_close(&mut sample, Duration::from_millis(500)).await;
    let answer_len = answer.len();
    assert!(answer.starts_with(b"HTTP/1.1 404") && answer_len > 50);
    let reader = connect_from("127.0.0.2", &http, true).await;
    let (mut rd, mut wr) = reader.into_split();
    let writer = tokio::spawn(async move {
        let all = one.repeat(PIPELINED);
        let _ = tokio::time::timeout(Duration::from_secs(30), wr.write_all(&all)).await;
        wr
    });

    // Three silent connections each on RTMP and RTMPS, from 127.0.0.2.
    let mut silent = Vec::new();
    for which in ["rtmp", "rtmps"] {
        for _ in 0..3 {
            silent.push((
                which,
                connect_from("127.0.0.2", &node.addr(which), false).await,
            ));
        }
    }
    // A kept-alive HTTP connection that goes idle after one request.
    let mut idle = connect_from("127.0.0.2", &http, false).await;
    idle.write_all(b"GET /no-such-page HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");

    // Meanwhile another address is served.
    assert_eq!(
        list_status(&node, "127.0.0.1", &node.token()).await,
        200,
        "a legitimate client was not served during the attack"
    );

    for (i, (which, s)) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(6)).await,
            "silent {which} connection {i} still open after 6 s"
        );
    }
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    let (idle_bytes, idle_closed) = read_to_close(&mut idle, Duration::from_secs(8)).await;
    assert!(
        idle_bytes.starts_with(b"HTTP/1.1 404"),
        "the idle connection's first answer: {:?}",
        String::from_utf8_lossy(&idle_bytes)
    );
    assert!(
        idle_closed,
        "an idle keep-alive connection outlived the 3 s deadline"
    );

    let (cut, answer) = trickler.await.expect("trickler");
    let cut = cut.expect("the trickled body was never cut");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(8),
        "the trickled body was cut after {cut:?} (deadline 2 s)"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "answer to the trickled body: {answer}"
    );

    // The reader that never read: once the node counted a write stall, its
    // connection is closed; reading now gets what was in flight, then EOF,
    // far less than all the answers.
    let until = Instant::now() + Duration::from_secs(40);
    while counter(
        &node.metrics().await,
        "banyan_http_timeouts_total",
        &["deadline=\"write\""],
    ) < 1.0
    {
        assert!(Instant::now() < until, "no write stall was detected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut got = 0usize;
    let mut b = vec![0u8; 64 << 10];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut b)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got += n,
        }
    };
    let _ = writer.await;
    assert!(closed, "the connection that never read is still open");
    assert!(
        got < answer_len * PIPELINED / 2,
        "the node wrote {got} bytes of {} to a client that did not read",
        answer_len * PIPELINED
    );

    let m = node.metrics().await;
    assert!(
        counter(&m, "banyan_http_timeouts_total", &["deadline=\"write\""]) >= 1.0,
        "write stall not counted:\n{m}"
    );
    assert!(
        counter(&m, "banyan_http_timeouts_total", &["deadline=\"body\""]) >= 1.0,
        "body deadline not counted:\n{m}"
    );
    assert!(
        counter(
            &m,
            "banyan_rtmp_connections_refused_total",
            &["reason=\"handshake\""]
        ) >= 6.0,
        "handshake refusals not counted:\n{m}"
    );
    witness.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_capped_and_another_is_served() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &["--max-connections-per-address", "4"]);
    let witness = Witness::start(&node, dir.path(), 8).await;

    for which in ["http", "rtmp", "rtmps"] {
        let addr = node.addr(which);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(connect_from("127.0.0.2", &addr, false).await);
        }
        // Give the node time to count them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut fifth = connect_from("127.0.0.2", &addr, false).await;
        let (answer, closed) = read_to_close(&mut fifth, Duration::from_secs(2)).await;
        assert!(
            closed,
            "{which}: a fifth connection from one address was kept"
        );
        if which == "http" {
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with("HTTP/1.1 503") && text.contains("per address"),
                "{which}: answer to the fifth connection: {text}"
            );
        }
        // Another address is not affected.
        let mut other = connect_from("127.0.0.3", &addr, false).await;
        match which {
            "http" => {
                other
                    .write_all(
                        b"GET /no-such-page HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                    )
                    .await
                    .expect("request");
                let (a, _) = read_to_close(&mut other, Duration::from_secs(5)).await;
                assert!(
                    a.starts_with(b"HTTP/1.1 404"),
                    "127.0.0.3 was not served: {:?}",
                    String::from_utf8_lossy(&a)
                );
            }
            "rtmp" => rtmp_handshake(&mut other).await,
            _ => {
                assert!(
                    !closed_within(&mut other, Duration::from_millis(500)).await,
                    "rtmps: 127.0.0.3 was refused"
                );
            }
        }
        drop(held);
        // The slots come back once the connections are gone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = connect_from("127.0.0.2", &addr, false).await;
        assert!(
            !closed_within(&mut again, Duration::from_millis(500)).await,
            "{which}: the address was still refused after its connections closed"
        );
    }
    assert_eq!(list_status(&node, "127.0.0.1", &node.token()).await, 200);
    let m = node.metrics().await;
    for which in ["http", "rtmp", "rtmps"] {
        assert!(
            counter(
                &m,
                "banyan_connections_refused_total",
                &["reason=\"per_address\"", &format!("listener=\"{which}\"")]
            ) >= 1.0,
            "{which}: per-address refusal not counted:\n{m}"
        );
    }
    witness.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_hold_no_buffers_between_requests_and_lose_nothing() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &[]);
    let addr = node.addr("http");
    let parks = |m: &str| counter(m, "banyan_http_idle_parks_total", &[]);
    let m = node.metrics().await;
    let before = parks(&m);
    let direct_before = counter(&m, "banyan_http_direct_total", &[]);
    let missing = b"GET /no-such-page HTTP/1.1\r\nhost: x\r\n\r\n";
    let asset = b"GET /watch-assets/hls.min.js HTTP/1.1\r\nhost: x\r\n\r\n";
    let whole = http()
        .get(format!("http://{addr}/watch-assets/hls.min.js"))
        .send()
        .await
        .expect("GET the script")
        .bytes()
        .await
        .expect("the script");
    assert!(whole.len() > 100_000, "the script: {} bytes", whole.len());

    // Requests one after another with pauses between them, on one
    // connection: each is answered.
    let mut c = Conn {
        tcp: connect_from("127.0.0.1", &addr, false).await,
        buf: Vec::new(),
    };
    for _ in 0..3 {
        c.send(missing).await;
        assert_eq!(c.response(false, None).await.0, 404);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A request head in two writes 300 ms apart.
    c.send(b"GET /no-such-page HTTP/1.1\r\nho").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(b"st: x\r\n\r\n").await;
    assert_eq!(c.response(false, None).await.0, 404);
    // Two requests in one write.
    c.send(&[&missing[..], &asset[..]].concat()).await;
    assert_eq!(c.response(false, None).await.0, 404);
    let (status, body) = c.response(false, None).await;
    assert_eq!((status, body.len()), (200, whole.len()));
    assert!(body == whole, "the pipelined script differs");
    // HEAD: an answer without a body, then the next request.
    c.send(b"HEAD /watch-assets/hls.min.js HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert_eq!(c.response(true, None).await.0, 200);
    c.send(missing).await;
    assert_eq!(c.response(false, None).await.0, 404);
    // A head longer than what the node reads before starting HTTP.
    let long = format!(
        "GET /no-such-page HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "p".repeat(3000)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(long.as_bytes()).await;
    assert_eq!(c.response(false, None).await.0, 404);
    // Players close a connection after a download: once the client closes
    // its side of an idle connection, the node closes its own at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.tcp.shutdown().await.expect("close the client's side");
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(5), c.tcp.read(&mut rest)).await;
    assert!(
        matches!(end, Ok(Ok(0))),
        "the node did not close an idle connection the client closed: {end:?}"
    );

    // A large answer to a reader with a small receive buffer that reads
    // slowly (the node's writes wait on it), then another request.
    let mut slow = Conn {
        tcp: connect_from("127.0.0.1", &addr, true).await,
        buf: Vec::new(),
    };
    for _ in 0..2 {
        slow.send(asset).await;
        let (status, body) = slow.response(false, Some(Duration::from_millis(2))).await;
        assert_eq!(status, 200);
        assert!(body == whole, "the slowly read script differs");
    }

    // Plain GETs read whole are answered past hyper; the rest (a head in
    // two writes, two heads in one write, a head longer than the
    // read-ahead) run hyper, which parks the connection after each.
    let m = node.metrics().await;
    let parked = parks(&m) - before;
    let direct = counter(&m, "banyan_http_direct_total", &[]) - direct_before;
    assert!(
        parked >= 3.0 && direct >= 6.0,
        "{parked} idle parks and {direct} answers past hyper counted for 10 answers"
    );
}

/// A plain GET is answered by the listener past hyper; the same request
/// sent through hyper (a `content-length: 0` makes it so) gets the same
/// answer: status, headers but `date`, body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_past_hyper_are_hypers_answers() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &[]);
    let addr = node.addr("http");
    let direct = |m: &str| counter(m, "banyan_http_direct_total", &[]);
    let before = direct(&node.metrics().await);
    let api = node.stream_api("live_inputs");
    let api = &api[api.find("/client/").expect("API path")..];
    let bearer = format!("authorization: Bearer {}\r\n", node.token());
    let asks: [(&str, &str, &str); 6] = [
        ("GET", "/watch-assets/hls.min.js", ""),
        ("HEAD", "/watch-assets/hls.min.js", ""),
        ("GET", "/no-such-page", ""),
        ("GET", api, ""),
        ("GET", api, &bearer),
        ("GET", "/no-such-page?x=1", "x-a: 1\r\nx-a: 2\r\n"),
    ];
    let mut c = Conn {
        tcp: connect_from("127.0.0.1", &addr, false).await,
        buf: Vec::new(),
    };
    let comparable = |head: &str| -> Vec<String> {
        let mut lines: Vec<String> = head
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("date:"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    for (method, path, extra) in asks {
        let plain = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n");
        let via_hyper =
            format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n{extra}\r\n");
        let head = method == "HEAD";
        c.send(plain.as_bytes()).await;
        let (ours, our_body) = c.response_whole(head, None).await;
        c.send(via_hyper.as_bytes()).await;
        let (theirs, their_body) = c.response_whole(head, None).await;
        assert!(
            ours.contains("\r\ndate: "),
            "{method} {path}: no date:\n{ours}"
        );
        assert_eq!(
            comparable(&ours),
            comparable(&theirs),
            "{method} {path}: heads differ"
        );
        assert!(our_body == their_body, "{method} {path}: bodies differ");
    }
    let answered = direct(&node.metrics().await) - before;
    assert!(
        answered >= 6.0,
        "{answered} answers past hyper, 6 asked for"
    );

    // `connection: close`: answered, then closed by the node.
    c.send(b"GET /no-such-page HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await;
    let (head, _) = c.response_whole(false, None).await;
    assert!(
        head.starts_with("http/1.1 404") && head.contains("connection: close"),
        "{head}"
    );
    let (rest, closed) = read_to_close(&mut c.tcp, Duration::from_secs(5)).await;
    assert!(
        closed && rest.is_empty(),
        "not closed after connection: close ({} bytes more)",
        rest.len()
    );
}

/// `curl -sk` the URL; (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_hls_and_its_urls_are_https() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(
        dir.path(),
        &["--https", "127.0.0.1:0", "--http-header-timeout", "3"],
    );
    let https = node.addr("https");
    let base = format!("https://{https}");
    assert_eq!(node.creds["api"], json!(base), "credentials.json api");
    assert_eq!(node.ready["api"], json!(base), "ready line api");

    let auth = format!("authorization: Bearer {}", node.token());
    let url = format!(
        "{base}/client/v4/accounts/{}/stream/live_inputs",
        node.account()
    );
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"meta":{"name":"tls"}}"#,
        &url,
    ]);
    assert_eq!(code, 200, "create over https: {body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let input = v["result"].clone();
    let hls = input["hls"]["url"].as_str().expect("hls url").to_string();
    assert!(hls.starts_with("https://"), "{hls}");
    assert!(
        input["watch"]["url"]
            .as_str()
            .is_some_and(|w| w.starts_with("https://")),
        "{input}"
    );
    let (code, _) = curl(&["-o", "/dev/null", &url]);
    assert_eq!(code, 401, "no token over https");
    // One TLS connection, kept alive across answers and idle pauses.
    let direct = |m: &str| counter(m, "banyan_http_direct_total", &[]);
    let before = direct(&node.metrics().await);
    let asset = format!("{base}/watch-assets/hls.min.js");
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", "--rate", "4/s"])
        .args(["-w", "%{http_code} %{size_download} %{num_connects}\\n"])
        .args(["-o", "/dev/null", &asset, "-o", "/dev/null", &url])
        .args(["-o", "/dev/null", &asset])
        .output()
        .expect("curl");
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let got: Vec<Vec<u64>> = lines
        .lines()
        .map(|l| l.split(' ').map(|v| v.parse().unwrap_or(0)).collect())
        .collect();
    assert_eq!(got.len(), 3, "curl: {lines}");
    assert!(got[0][0] == 200 && got[0][1] > 100_000, "curl: {lines}");
    assert_eq!(got[1][0], 401, "curl: {lines}");
    assert_eq!(got[2][..2], got[0][..2], "curl: {lines}");
    assert_eq!(
        got[1][2] + got[2][2],
        0,
        "curl opened new connections: {lines}"
    );
    // Each plain GET, read ahead through TLS, was answered past hyper.
    let answered = direct(&node.metrics().await) - before;
    assert!(
        answered >= 3.0,
        "{answered} answers past hyper over TLS, 3 asked for"
    );

    // Publish over RTMP; ffmpeg plays the HLS over https.
    let uid = input["uid"].as_str().expect("uid").to_string();
    let publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&input));
    node.wait_status(&uid, "connected", 15).await;
    let out = dir.path().join("hls.md5");
    let mut c = ffmpeg();
    c.args(["-rw_timeout", "15000000", "-tls_verify", "0", "-i", &hls])
        .args(["-t", "4"])
        .args(FRAMEMD5)
        .arg("-y")
        .arg(&out);
    let mut player = Client::spawn(c);
    let st = player.wait(40.0).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "ffmpeg did not play HLS over https: {st:?}\n{}",
        node.log_text()
    );
    let frames = packets(&out).iter().filter(|p| p.stream == 0).count();
    assert!(frames >= 90, "{frames} video frames over https");
    drop(publisher);

    // A client that never finishes its TLS handshake is cut at the header
    // deadline, like a slow HTTP client.
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(&https).await.expect("connect");
    let _ = silent.write_all(&[0x16, 0x03, 0x01]).await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(8)).await,
        "a silent TLS client outlived the 3 s header deadline"
    );
    assert!(t0.elapsed() >= Duration::from_millis(2500));
    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_connections_refused_total",
            &["reason=\"handshake\"", "listener=\"https\""]
        ) >= 1.0,
        "TLS handshake timeout not counted:\n{m}"
    );
}
