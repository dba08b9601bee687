//! ACME in a cluster: three nodes on one PostgreSQL and pebble. One node
//! orders a name (under a lease in the database); the certificate and its
//! key (sealed with `--secret-key-file`) are stored once and every node
//! serves them; the CA's HTTP-01 request (or TLS-ALPN-01 handshake) goes
//! to a node other than the one ordering (a small TCP forwarder of the
//! test's own stands for a load balancer), which answers from the
//! database. Killing the node that
//! ordered does not stop renewal: another node renews and all survivors
//! serve the new certificate.

mod acme_support;
mod cluster_node;
mod pg;

// The kit cluster_node starts nodes with, as acme_support holds it.
use acme_support::common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acme_support::{served_at, Pebble};
use cluster_node::{cluster_ca, Node};
use pg::Postgres;
use serde_json::{json, Value};

const NAME: &str = "live.cluster.example.test";

/// How many orders and renewals a node's log shows started and finished.
fn jobs(log: &str) -> (usize, usize) {
    let started = log.matches("acme: starting").count();
    let ended = log.matches("acme: done").count()
        + log.matches("acme: will retry").count()
        + log.matches("acme: refused").count();
    (started, ended)
}

/// A forwarder from a loopback port to the port of a live node that
/// is not working on an order right now (read from the node logs).
fn forwarder(nodes: Arc<Mutex<Vec<(PathBuf, u16)>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let choices = nodes.lock().unwrap().clone();
            let target = choices
                .iter()
                .find(|(log, _)| {
                    let (s, e) = jobs(&std::fs::read_to_string(log).unwrap_or_default());
                    s == e
                })
                .or(choices.first())
                .map(|(_, p)| *p);
            let Some(port) = target else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

async fn domain(node: &Node) -> Value {
    let url = format!(
        "{}/client/v4/accounts/{}/stream/ingest_domains/{NAME}",
        node.http(),
        node.creds["accountId"].as_str().unwrap()
    );
    let (s, v) = cluster_node::get_json(&url, node.creds["apiToken"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{v}");
    v["result"].clone()
}

fn rtmps(node: &Node) -> String {
    node.ready["rtmps"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_orders_every_node_serves_and_another_renews_http01() {
    scenario("http-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_orders_every_node_serves_and_another_renews_tls_alpn01() {
    scenario("tls-alpn-01").await;
}

/// The CA reaches the nodes through the forwarder on the HTTP listeners
/// (`http-01`) or the RTMPS listeners (`tls-alpn-01`).
async fn scenario(challenge: &str) {
    let (listener, answered_line) = match challenge {
        "http-01" => ("http", "answered an HTTP-01 challenge"),
        _ => ("rtmps", "answered a TLS-ALPN-01 challenge"),
    };
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());
    let secret = tmp.path().join("secret.key");
    std::fs::write(&secret, "the cluster's domain key secret").unwrap();
    let mut pebble = Pebble::prepare();
    let (directory, acme_ca) = (pebble.directory(), pebble.ca());
    let flags = [
        "--cluster-link",
        "127.0.0.1:0",
        "--acme-challenge",
        challenge,
        "--acme-directory",
        &directory,
        "--acme-ca",
        acme_ca.to_str().unwrap(),
        "--secret-key-file",
        secret.to_str().unwrap(),
    ];
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(tmp.path(), n, &pg.url(), &ca, 2, &flags))
        .collect();
    let targets = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| {
                let a: std::net::SocketAddr = n.ready[listener].as_str().unwrap().parse().unwrap();
                (n.log.clone(), a.port())
            })
            .collect::<Vec<_>>(),
    ));
    let lb = forwarder(targets.clone());
    // Short certificates: a renewal every ~13 s.
    pebble.start(lb, lb, 20, 0).await;

    // The default account is the same on every node of the cluster.
    let a = &nodes[0];
    let url = format!(
        "{}/client/v4/accounts/{}/stream/ingest_domains",
        a.http(),
        a.creds["accountId"].as_str().unwrap()
    );
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(a.creds["apiToken"].as_str().unwrap())
        .json(&json!({ "domain": NAME }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    let deadline = Instant::now() + Duration::from_secs(90);
    let first = loop {
        let d = domain(&nodes[1]).await;
        if d["status"] == "active" {
            break d;
        }
        assert!(d["status"] == "pending", "{d}");
        assert!(
            Instant::now() < deadline,
            "never active: {d}\n{}",
            nodes[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Exactly one node ordered it; another answered the CA.
    let ordered: Vec<usize> = (0..3)
        .filter(|&i| nodes[i].log_text().contains("acme: done"))
        .collect();
    assert_eq!(ordered.len(), 1, "one node orders");
    let orderer = ordered[0];
    let answered: Vec<usize> = (0..3)
        .filter(|&i| nodes[i].log_text().contains(answered_line))
        .collect();
    assert!(
        !answered.is_empty() && !answered.contains(&orderer),
        "the challenge was answered by {answered:?}, the order ran on {orderer}"
    );

    // Stored once, key sealed.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url())
        .await
        .unwrap();
    let (rows, key): (i64, String) =
        sqlx::query_as("SELECT COUNT(*) OVER (), key_pem FROM ingest_domains WHERE domain = $1")
            .bind(NAME)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
    assert!(
        key.starts_with("sealed:v1:") && !key.contains("PRIVATE"),
        "{key:.40}"
    );

    // Every node serves it (they reload domains every 2 s).
    let issuer = pebble.intermediate_subject().await;
    let mut serial = String::new();
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (i, s) = served_at(&rtmps(n), NAME, tmp.path());
            if i == issuer {
                if serial.is_empty() {
                    serial = s.clone();
                }
                break;
            }
            assert!(Instant::now() < deadline, "{} does not serve it", n.name);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // Kill the node that ordered; another renews.
    nodes[orderer].proc.kill9();
    targets.lock().unwrap().remove(orderer);
    let dead = nodes.remove(orderer);
    let before = first["renewedAt"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewer = loop {
        let d = domain(&nodes[0]).await;
        if d["renewedAt"].as_str().is_some_and(|r| r > before.as_str()) {
            // The survivor that logged a renewal after the kill.
            let who = nodes
                .iter()
                .position(|n| n.log_text().contains("acme: done (Renew)"));
            if let Some(w) = who {
                break w;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no renewal after {} was killed: {d}\n{}",
            dead.name,
            nodes[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{challenge}: ordered on {}, answered by {answered:?}, renewed on {}",
        dead.name, nodes[renewer].name
    );
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while served_at(&rtmps(n), NAME, tmp.path()).1 == serial {
            assert!(
                Instant::now() < deadline,
                "{} still serves the old certificate",
                n.name
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
