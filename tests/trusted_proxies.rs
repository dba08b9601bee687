//! Behind a trusted proxy (the test's own proxies: one adding
//! X-Forwarded-For on HTTP, others sending PROXY v1/v2 headers to RTMP),
//! failed tokens and keys count per forwarded client; a peer that is not
//! trusted cannot spoof its address; GraphQL and the cluster's admin
//! endpoints share the API's failed-attempt limiter, and a valid token is
//! never refused because others failed from the same address.
//!
//! Clients connect from 127.0.0.2 and up, the proxies from 127.0.0.1 (all
//! of 127/8 is loopback). A real ffmpeg stream (the witness) runs alongside.

mod cluster_node;
mod common;
mod limits_common;
mod pg;
mod reliab;

use std::time::Duration;

use limits_common::*;
use reliab::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    Node::start(&dir.join("data"), &dir.join("node.log"), extra)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_admin_endpoints_share_the_api_limiter() {
    let _one = SERIAL.lock().await;
    let pg = pg::Postgres::start();
    let dir = tempdir();
    let ca = cluster_node::cluster_ca(dir.path());
    let node = cluster_node::Node::start(
        dir.path(),
        "a",
        &pg.url(),
        &ca,
        2,
        &["--cluster-link", "127.0.0.1:0"],
    );
    let http = node.http();
    let admin = node.creds["adminToken"]
        .as_str()
        .expect("admin")
        .to_string();
    let token = node.creds["apiToken"].as_str().expect("token").to_string();
    let account = node.creds["accountId"]
        .as_str()
        .expect("account")
        .to_string();

    // The witness: published to and played from this node.
    let v: serde_json::Value = client_from("127.0.0.1")
        .post(format!(
            "{http}/client/v4/accounts/{account}/stream/live_inputs"
        ))
        .bearer_auth(&token)
        .json(&json!({"meta": {"name": "witness"}}))
        .send()
        .await
        .expect("create input")
        .json()
        .await
        .expect("JSON");
    let input = v["result"].clone();
    let publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&input));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = dir.path().join("witness.md5");
    let mut player = play(&rtmp_play_url(&input), &out, Some(8));

    let nodes = |from: &str, token: &str| {
        let c = client_from(from);
        let url = format!("{http}/cluster/nodes");
        let token = token.to_string();
        async move {
            c.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("cluster call")
                .status()
                .as_u16()
        }
    };
    for i in 0..30 {
        assert_eq!(
            nodes("127.0.0.2", &format!("bad{i}")).await,
            401,
            "guess {i}"
        );
    }
    assert_eq!(nodes("127.0.0.2", "bad-more").await, 429);
    let rest = client_from("127.0.0.2")
        .get(format!(
            "{http}/client/v4/accounts/{account}/stream/live_inputs"
        ))
        .bearer_auth("bad-rest")
        .send()
        .await
        .expect("REST call")
        .status()
        .as_u16();
    assert_eq!(rest, 429, "REST shares the cluster endpoints' limiter");
    assert_eq!(
        nodes("127.0.0.2", &admin).await,
        200,
        "the admin token from a limited address"
    );
    assert_eq!(nodes("127.0.0.2", &token).await, 403, "not an admin token");
    assert_eq!(nodes("127.0.0.3", "bad").await, 401, "another address");
    let m = client_from("127.0.0.1")
        .get(node.metrics_url())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        counter(
            &m,
            "banyan_auth_refused_total",
            &["api=\"cluster\"", "reason=\"limited\""]
        ) >= 1.0,
        "cluster refusals not counted:\n{m}"
    );

    let st = player.wait(25.0).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "the witness player did not finish: {st:?}\n{}",
        node.log_text()
    );
    assert_video_whole(&out, 8 * 30 * 9 / 10, 50, "witness player");
    drop(publisher);
}
