//! Limits on every listener against the real binary: request bodies
//! trickled in, clients that never read, idle keep-alive connections and
//! silent RTMP(S) handshakes are cut at their deadlines; one address is
//! capped in connections while another is served; behind a trusted proxy
//! (X-Forwarded-For on HTTP, the PROXY protocol on RTMP) failed tokens and
//! keys count per forwarded client, and a peer that is not trusted cannot
//! spoof its address; the API's failed-attempt limiter also guards
//! GraphQL; HTTPS serves the API and HLS, and its URLs are https.
//!
//! Attackers connect from 127.0.0.2 and up, legitimate clients from
//! 127.0.0.1 (all of 127/8 is loopback). A real ffmpeg stream (the witness)
//! runs alongside the attacks and must stay whole.

mod reliab;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reliab::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    Node::start(&dir.join("data"), &dir.join("node.log"), extra)
}

/// A TCP connection to `to` from the loopback address `from`, with a small
/// receive buffer when `small` (a reader that stops fills it quickly).
async fn connect_from(from: &str, to: &str, small: bool) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    if small {
        let _ = sock.set_recv_buffer_size(4096);
    }
    sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind source address");
    sock.connect(to.parse().expect("address"))
        .await
        .expect("connect")
}

/// An HTTP client whose connections come from `from`, one per request.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("ip"))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Read what arrives until EOF or `limit`; (bytes, whether EOF came).
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let until = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut b = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut b)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
        }
    }
}

/// Status of the answer to a list call on the API, from `from`.
async fn list_status(node: &Node, from: &str, token: &str) -> u16 {
    client_from(from)
        .get(node.stream_api("live_inputs"))
        .bearer_auth(token)
        .send()
        .await
        .expect("API call")
        .status()
        .as_u16()
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

/// An HTTP proxy on 127.0.0.1 that adds `X-Forwarded-For: <client>` to the
/// one request of each connection (the clients do not reuse connections).
async fn forwarding_proxy(upstream: String) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = l.local_addr().expect("proxy addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, peer)) = l.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let line_end = head.windows(2).position(|w| w == b"\r\n").expect("line");
                let mut out = head[..line_end + 2].to_vec();
                out.extend_from_slice(format!("X-Forwarded-For: {}\r\n", peer.ip()).as_bytes());
                out.extend_from_slice(&head[line_end + 2..]);
                let Ok(mut server) = connect_from_checked("127.0.0.1", &upstream).await else {
                    return;
                };
                if server.write_all(&out).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

async fn connect_from_checked(from: &str, to: &str) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))?;
    sock.connect(to.parse().expect("address")).await
}

/// Status of a list call through the proxy at `via`, from `from`.
async fn list_via(node: &Node, via: &str, from: &str, token: &str) -> u16 {
    let url = node
        .stream_api("live_inputs")
        .replace(&node.addr("http"), via);
    client_from(from)
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("API call through the proxy")
        .status()
        .as_u16()
}

/// Status of a GraphQL call (through `via`), from `from`, with `body`.
async fn graphql_via(via: &str, from: &str, token: &str, body: &str) -> u16 {
    client_from(from)
        .post(format!("http://{via}/client/v4/graphql"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("GraphQL call")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_failed_tokens_count_per_forwarded_client() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &["--trusted-proxies", "127.0.0.1"]);
    let witness = Witness::start(&node, dir.path(), 8).await;
    let proxy = forwarding_proxy(node.addr("http")).await;
    let token = node.token();

    // 127.0.0.2 guesses 30 tokens through the proxy: limited.
    for i in 0..30 {
        let s = list_via(&node, &proxy, "127.0.0.2", &format!("guess{i}")).await;
        assert_eq!(s, 401, "guess {i}");
    }
    assert_eq!(
        list_via(&node, &proxy, "127.0.0.2", "guess-more").await,
        429
    );
    assert_eq!(
        graphql_via(&proxy, "127.0.0.2", "guess-more", "{}").await,
        429,
        "GraphQL shares the limiter"
    );
    // Its valid token still works: a shared address is not locked out.
    assert_eq!(list_via(&node, &proxy, "127.0.0.2", &token).await, 200);
    // Another client behind the same proxy is not limited.
    assert_eq!(list_via(&node, &proxy, "127.0.0.3", "wrong").await, 401);
    assert_eq!(list_via(&node, &proxy, "127.0.0.3", &token).await, 200);

    // A peer that is not trusted cannot speak for 127.0.0.3: its header is
    // ignored and its failures count against itself.
    for _ in 0..31 {
        let s = client_from("127.0.0.4")
            .get(node.stream_api("live_inputs"))
            .bearer_auth("spoof")
            .header("x-forwarded-for", "127.0.0.3")
            .header("forwarded", "for=127.0.0.3")
            .send()
            .await
            .expect("spoof")
            .status()
            .as_u16();
        assert!(s == 401 || s == 429, "{s}");
    }
    assert_eq!(list_status(&node, "127.0.0.4", "spoof").await, 429);
    assert_eq!(
        list_via(&node, &proxy, "127.0.0.3", "wrong-again").await,
        401,
        "a spoofing peer locked out the client it named"
    );

    // GraphQL failures count too, and the token is checked before the body.
    let http = node.addr("http");
    for i in 0..30 {
        let s = graphql_via(&http, "127.0.0.5", &format!("g{i}"), "not json").await;
        assert_eq!(s, 401, "GraphQL guess {i}: the token comes before the body");
    }
    assert_eq!(list_status(&node, "127.0.0.5", "g-more").await, 429);
    let q = json!({"query": "{ __typename }"});
    let ok = graphql_via(&http, "127.0.0.5", &token, &q.to_string()).await;
    assert_ne!(ok, 401, "the valid token was refused on GraphQL");
    assert_ne!(ok, 429, "the valid token was refused on GraphQL");

    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_auth_refused_total",
            &["api=\"graphql\"", "reason=\"limited\""]
        ) >= 1.0,
        "GraphQL refusals not counted:\n{m}"
    );
    assert!(
        counter(
            &m,
            "banyan_auth_refused_total",
            &["api=\"rest\"", "reason=\"limited\""]
        ) >= 3.0,
        "REST refusals not counted:\n{m}"
    );
    witness.check().await;
}

/// A proxy on 127.0.0.1 that opens each connection to `upstream` with the
/// PROXY header `header`, then relays both ways.
async fn proxy_protocol_proxy(upstream: String, header: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = l.local_addr().expect("proxy addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = l.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let header = header.clone();
            tokio::spawn(async move {
                let Ok(mut server) = connect_from_checked("127.0.0.1", &upstream).await else {
                    return;
                };
                if server.write_all(&header).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

/// Play `key` over raw RTMP through `addr`; the status strings the node
/// answered before closing (or 3 s).
async fn raw_play(addr: &str, key: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    rtmp_handshake(&mut tcp).await;
    rtmp_play(&mut tcp, addr, key).await;
    let (got, _) = read_to_close(&mut tcp, Duration::from_secs(3)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_addresses_count_for_rtmp_admission_and_only_trusted_proxies_may_send_them()
{
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(
        dir.path(),
        &[
            "--proxy-protocol",
            "--trusted-proxies",
            "127.0.0.1",
            "--auth-fail-max",
            "3",
        ],
    );
    let rtmp = node.addr("rtmp");
    let v1 = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 1935\r\n").into_bytes();
    let v2 = |client: &str| {
        banyan_ingest::proxy_protocol::v2_header(
            format!("{client}:40001").parse().expect("address"),
            rtmp.parse().expect("address"),
        )
    };
    let publisher_via = proxy_protocol_proxy(rtmp.clone(), v2("198.51.100.9")).await;
    let player_via = proxy_protocol_proxy(rtmp.clone(), v1("198.51.100.10")).await;
    let attacker_via = proxy_protocol_proxy(rtmp.clone(), v1("203.0.113.7")).await;

    // The witness, published (v2) and played (v1) through the proxies.
    let input = node.create_input("witness").await;
    let uid = input["uid"].as_str().expect("uid").to_string();
    let publish_url = rtmp_publish_url(&input).replace(&rtmp, &publisher_via);
    let publisher = publish(&clip("testsrc2"), &publish_url);
    node.wait_status(&uid, "connected", 15).await;
    let out = dir.path().join("witness.md5");
    let mut player = play(
        &rtmp_play_url(&input).replace(&rtmp, &player_via),
        &out,
        Some(8),
    );

    // The attacker's bad keys count against the address its proxy names.
    for i in 0..3 {
        let said = raw_play(&attacker_via, &format!("bad{i}")).await;
        assert!(said.contains("StreamNotFound"), "bad key {i}: {said}");
    }
    let key = play_key(&input);
    let said = raw_play(&attacker_via, &key).await;
    assert!(
        said.contains("Play.Failed") && !said.contains("Play.Start"),
        "the limited address was let in: {said}"
    );
    // Another client of the same proxy host is not limited.
    let said = raw_play(&player_via, &key).await;
    assert!(
        said.contains("Play.Start"),
        "another address was refused: {said}"
    );

    // A peer that is not a trusted proxy is refused at once, whatever it
    // sends; a trusted one without a header too.
    let mut stranger = connect_from("127.0.0.2", &rtmp, false).await;
    let _ = stranger.write_all(&v1("198.51.100.10")).await;
    assert!(closed_within(&mut stranger, Duration::from_secs(2)).await);
    let mut bare = TcpStream::connect(&rtmp).await.expect("connect");
    let _ = bare.write_all(&[3u8; 1537]).await;
    assert!(closed_within(&mut bare, Duration::from_secs(2)).await);

    let st = player.wait(25.0).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "the witness player did not finish: {st:?}\n{}",
        node.log_text()
    );
    assert_video_whole(&out, 8 * 30 * 9 / 10, 50, "witness player behind the proxy");
    drop(publisher);

    let m = node.metrics().await;
    for reason in ["proxy_untrusted", "proxy_header"] {
        assert!(
            counter(
                &m,
                "banyan_connections_refused_total",
                &[&format!("reason=\"{reason}\""), "listener=\"rtmp\""]
            ) >= 1.0,
            "{reason} not counted:\n{m}"
        );
    }
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
    let node = start(dir.path(), &["--https", "127.0.0.1:0"]);
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
    // deadline like a slow HTTP client (default 10 s: only checked open now).
    let mut silent = TcpStream::connect(&https).await.expect("connect");
    assert!(!closed_within(&mut silent, Duration::from_millis(300)).await);
}
