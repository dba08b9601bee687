//! The node link end to end on loopback: what one hub publishes arrives in
//! another hub unchanged, along a chain, and nothing outside the cluster CA
//! gets in.

mod link_util;

use std::sync::Arc;
use std::time::Duration;

use banyan_relay::link::{ClusterCa, LinkClient, LinkError, PullEnd, ALPN};
use banyan_relay::{Frame, Hub, Item, MediaInfo, SubscribeOptions};
use link_util::*;

const GOP: u64 = 15;

/// What a subscriber saw: every info and frame in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Info(MediaInfo),
    Frame(Frame),
}

/// Push `count` video frames (and an audio frame after each) into `hub`,
/// switching the video configuration at frame `switch_at`; returns what a
/// subscriber from the start must see.
async fn publish(hub: &Arc<Hub>, count: u64, switch_at: u64) -> Vec<Seen> {
    let mut p = hub.publish("s1").unwrap();
    p.set_info(Some(video_config(1)), Some(audio_config()));
    let mut expect = vec![Seen::Info((*p.info()).clone())];
    for i in 0..count {
        if i == switch_at {
            p.set_info(Some(video_config(2)), Some(audio_config()));
            expect.push(Seen::Info((*p.info()).clone()));
        }
        let v = video_frame(i, GOP, 300 + i as usize);
        let a = audio_frame(i);
        p.push(v.clone());
        p.push(a.clone());
        expect.push(Seen::Frame(v));
        expect.push(Seen::Frame(a));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    expect
}

async fn collect(hub: Arc<Hub>, want: usize) -> Vec<Seen> {
    let mut sub = hub.subscribe("s1", SubscribeOptions::default());
    let mut seen = Vec::new();
    while seen.len() < want {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Item::Info(i)) => seen.push(Seen::Info((*i).clone())),
            Ok(Item::Frame(f)) => seen.push(Seen::Frame(f)),
            Ok(Item::End(_)) | Err(_) => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_stream_arrives_unchanged() {
    let ca = ClusterCa::generate().unwrap();
    let a = Node::start(&ca, "node-a");
    let b = Node::start(&ca, "node-b");
    // The stream is live on A before B asks for it.
    let mut first = a.hub.publish("s1").unwrap();
    first.set_info(Some(video_config(1)), Some(audio_config()));
    drop(first);

    let client = b.server.connect(a.addr, "node-a").await.unwrap();
    assert_eq!(client.peer_name(), "node-a");
    let mut pull = client.pull("s1", b.hub.clone()).await.unwrap();
    assert_eq!(a.downstream.peers("s1"), vec!["node-b".to_string()]);

    let count = 90;
    let watcher = tokio::spawn(collect(b.hub.clone(), 2 * count as usize + 2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let expect = publish(&a.hub, count, 45).await;
    let seen = watcher.await.unwrap();
    // Same frames (payload bytes, timestamps, flags) and the same info
    // sequence, versions included.
    assert_eq!(seen.len(), expect.len());
    assert_eq!(seen, expect);
    assert!(client.rtt() < Duration::from_millis(100));

    // The publisher left A and did not come back: the pull ends.
    let end = tokio::time::timeout(Duration::from_secs(5), pull.ended())
        .await
        .unwrap();
    assert_eq!(end, PullEnd::Finished);
    assert_eq!(pull.groups_cancelled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_chain_relays_every_frame() {
    let ca = ClusterCa::generate().unwrap();
    let a = Node::start(&ca, "a");
    let b = Node::start(&ca, "b");
    let c = Node::start(&ca, "c");
    let mut keep = a.hub.publish("s1").unwrap();
    keep.set_info(Some(video_config(1)), Some(audio_config()));
    drop(keep);

    let ab = b.server.connect(a.addr, "a").await.unwrap();
    let _pull_b = ab.pull("s1", b.hub.clone()).await.unwrap();
    let bc = c.server.connect(b.addr, "b").await.unwrap();
    let _pull_c = bc.pull("s1", c.hub.clone()).await.unwrap();
    assert_eq!(a.downstream.peers("s1"), vec!["b".to_string()]);
    assert_eq!(b.downstream.peers("s1"), vec!["c".to_string()]);

    let count = 60;
    let at_b = tokio::spawn(collect(b.hub.clone(), 2 * count as usize + 2));
    let at_c = tokio::spawn(collect(c.hub.clone(), 2 * count as usize + 2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let expect = publish(&a.hub, count, 30).await;
    assert_eq!(at_b.await.unwrap(), expect);
    assert_eq!(at_c.await.unwrap(), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_not_here_and_redirect() {
    use banyan_relay::link::{Admit, AdmitRequest, LinkServer};
    let ca = ClusterCa::generate().unwrap();
    let tls = ca.issue_node_cert("origin").unwrap();
    let hub = hub();
    let (server, addr) = LinkServer::bind(any_port(), &tls, hub.clone()).unwrap();
    let redirect_to: std::net::SocketAddr = "127.0.0.1:4999".parse().unwrap();
    let server = server.with_admission(Arc::new(move |req: &AdmitRequest<'_>| {
        if req.uid == "full" {
            Admit::Redirect {
                node: "child".into(),
                addr: redirect_to,
            }
        } else {
            banyan_relay::link::Admission::admit(&banyan_relay::link::LocalStreams, req)
        }
    }));
    let server = Arc::new(server);
    let s = server.clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        s.run(async {
            let _ = rx.await;
        })
        .await
    });
    let b = Node::start(&ca, "b");
    let client = b.server.connect(addr, "origin").await.unwrap();
    assert!(matches!(
        client.pull("nothing", b.hub.clone()).await,
        Err(LinkError::NotHere)
    ));
    match client.pull("full", b.hub.clone()).await {
        Err(LinkError::Redirect { node, addr }) => {
            assert_eq!(node, "child");
            assert_eq!(addr, "127.0.0.1:4999");
        }
        other => panic!("expected a redirect, got {:?}", other.err()),
    }
    // A refused pull leaves nothing in the local hub.
    assert_eq!(b.hub.state("full"), banyan_relay::StreamState::Idle);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
}

/// A node certificate signed by another CA, no certificate at all, and a
/// valid certificate used under another node's name are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_cannot_connect_or_pull() {
    let ca = ClusterCa::generate().unwrap();
    let a = Node::start(&ca, "a");
    let mut p = a.hub.publish("s1").unwrap();
    p.set_info(Some(video_config(1)), None);
    p.push(video_frame(0, GOP, 100));

    // Another CA: the handshake, or at the latest the first request, fails.
    let rogue_ca = ClusterCa::generate().unwrap();
    let mut rogue = rogue_ca.issue_node_cert("b").unwrap();
    rogue.ca_pem = ca.cert_pem.clone(); // it even trusts the real CA
    let hub_b = hub();
    let refused = match LinkClient::connect(any_port(), a.addr, "a", &rogue).await {
        Err(_) => true,
        Ok(c) => c.pull("s1", hub_b.clone()).await.is_err(),
    };
    assert!(refused, "a certificate of another CA was accepted");

    // No client certificate: a raw QUIC client that trusts the CA.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut ep = quinn::Endpoint::client(any_port()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    let got_data = async {
        let conn = ep.connect(a.addr, "a").ok()?.await.ok()?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let req = banyan_relay::link::framing::encode_to_bytes(
            &banyan_relay::link::framing::Message::Subscribe {
                sub: 1,
                from: "b".into(),
                uid: "s1".into(),
            },
        );
        send.write_all(&req).await.ok()?;
        let mut buf = [0u8; 16];
        recv.read(&mut buf).await.ok()?
    };
    let got = tokio::time::timeout(Duration::from_secs(3), got_data)
        .await
        .unwrap_or(None);
    assert_eq!(got, None, "a client without a certificate got an answer");

    // A cluster certificate used under another name is refused by the server.
    let mut liar = ca.issue_node_cert("b").unwrap();
    liar.node_name = "c".into();
    let c = LinkClient::connect(any_port(), a.addr, "a", &liar)
        .await
        .unwrap();
    assert!(matches!(
        c.pull("s1", hub_b.clone()).await,
        Err(LinkError::Refused(_))
    ));
    assert!(a.downstream.peers("s1").is_empty());

    // The same path with an honest certificate works, so the refusals above
    // are the certificates' doing.
    let honest = ca.issue_node_cert("b").unwrap();
    let c = LinkClient::connect(any_port(), a.addr, "a", &honest)
        .await
        .unwrap();
    let _pull = c.pull("s1", hub_b.clone()).await.unwrap();
    let mut sub = hub_b.subscribe("s1", SubscribeOptions::default());
    let f = next_frame(&mut sub, Duration::from_secs(3)).await.unwrap();
    assert_eq!(f, video_frame(0, GOP, 100));
}
