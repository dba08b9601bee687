//! Regions: four real nodes on one PostgreSQL, with delays between
//! "regions" put on the QUIC links by UDP proxies of the test's own (the
//! kernel here has no netem). Each node advertises its proxy's address
//! (`--cluster-advertise`), so every datagram a peer sends it crosses the
//! proxy, which holds it for the one-way delay between the two regions (in
//! both directions).
//!
//! Node o (region eu) is the origin, x (us) and z (ap) fill its fan-out of
//! 2, then y (us) joins: o redirects it to its child nearest to y by
//! measured RTT, x. Players on o, x, z and y receive the same packets; each
//! one's delay behind the player on the origin is the path's delay plus a
//! small overhead.

mod cluster_node;
mod common;
mod pg;

use cluster_node::{
    cluster_ca, input_everywhere, publisher, wait_members, wait_until, Input, Node,
};
use pg::Postgres;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::UdpSocket;

/// One-way delay between two different regions.
const FAR: Duration = Duration::from_millis(40);

/// Kills the child on drop.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct NodeSpec<'a> {
    name: &'a str,
    region: &'a str,
    link: SocketAddr,
    advertise: SocketAddr,
}

fn start_node(dir: &Path, spec: &NodeSpec, db: &str, ca: &Path, fanout: usize) -> Node {
    let (link, advertise) = (spec.link.to_string(), spec.advertise.to_string());
    let extra = [
        "--cluster-region",
        spec.region,
        "--cluster-link",
        &link,
        "--cluster-advertise",
        &advertise,
    ];
    Node::start(dir, spec.name, db, ca, fanout, &extra)
}

/// A free UDP port on loopback.
fn free_udp() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], pg::ports::free_port()))
}

/// Send `data` to `to` from `sock` at `due`: one FIFO queue per direction
/// (the delay is constant, so order is kept).
type Queue = tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>;

fn sender(sock: Arc<UdpSocket>, to: SocketAddr) -> Queue {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = sock.send_to(&data, to).await;
        }
    });
    tx
}

/// A UDP proxy in front of one node's link: datagrams from a known peer
/// (by its link address) go to `target` from a socket of that peer's own,
/// and the answers back, each held for the one-way delay between the two
/// nodes' regions. Datagrams from unknown sources are dropped. It runs
/// until the test's runtime stops.
async fn proxy(listen: UdpSocket, target: SocketAddr, delays: HashMap<SocketAddr, Duration>) {
    let listen = Arc::new(listen);
    let mut sessions: HashMap<SocketAddr, (Duration, Queue)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, src)) = listen.recv_from(&mut buf).await else {
            return;
        };
        let Some(&delay) = delays.get(&src) else {
            continue;
        };
        let (delay, up) = sessions.entry(src).or_insert_with(|| {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_nonblocking(true).unwrap();
            let sock = Arc::new(UdpSocket::from_std(sock).unwrap());
            let back = sender(listen.clone(), src);
            let from = sock.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, _)) = from.recv_from(&mut buf).await {
                    let due = tokio::time::Instant::now() + delay;
                    if back.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            });
            (delay, sender(sock, target))
        });
        let due = tokio::time::Instant::now() + *delay;
        let _ = up.send((due, buf[..n].to_vec()));
    }
}

/// An ffmpeg player printing one framemd5 line per video packet, flushed
/// per packet; each packet's hash is kept with its arrival time.
struct Player {
    _proc: Proc,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Player {
    fn start(url: &str) -> Player {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(["-fflags", "nobuffer", "-rw_timeout", "15000000", "-i", url])
            .args(["-map", "0:v", "-c", "copy", "-flush_packets", "1"])
            .args(["-f", "framemd5", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg player");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if l.starts_with('#') {
                    continue;
                }
                if let Some(h) = l.rsplit(',').next() {
                    sink.lock()
                        .unwrap()
                        .push((Instant::now(), h.trim().to_string()));
                }
            }
        });
        Player {
            _proc: Proc(Some(child)),
            lines,
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Median of (arrival here - arrival at `reference`) over the packets
    /// both got after `since` (the same hash, the nearest arrival within
    /// 2 s: the looped clip repeats its packets every 8 s); and how many.
    fn behind(&self, reference: &Player, since: Instant) -> (Duration, f64, usize) {
        let mut at_ref: HashMap<String, Vec<Instant>> = HashMap::new();
        for (t, h) in reference.lines.lock().unwrap().iter() {
            at_ref.entry(h.clone()).or_default().push(*t);
        }
        let mut diffs: Vec<f64> = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t > since)
            .filter_map(|(t, h)| {
                at_ref
                    .get(h)?
                    .iter()
                    .map(|r| {
                        t.duration_since(*r).as_secs_f64() - r.duration_since(*t).as_secs_f64()
                    })
                    .filter(|d| d.abs() < 2.0)
                    .min_by(|a, b| a.abs().total_cmp(&b.abs()))
            })
            .collect();
        assert!(!diffs.is_empty(), "no packet in common");
        diffs.sort_by(|a, b| a.total_cmp(b));
        let median = diffs[diffs.len() / 2];
        let p90 = diffs[diffs.len() * 9 / 10];
        (
            Duration::from_secs_f64(median.max(0.0)),
            p90 * 1000.0,
            diffs.len(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_attaches_to_its_nearest_node_and_latency_follows_the_path() {
    let t0 = Instant::now();
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());

    // A 320x240 clip, one keyframe per second.
    let clip = tmp.path().join("clip.flv");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-t", "8", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-g", "25", "-bf", "0", "-f", "flv"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success());

    // The nodes, their regions, their link ports and their proxies.
    let plan = [("o", "eu"), ("x", "us"), ("z", "ap"), ("y", "us")];
    let mut specs = Vec::new();
    let mut listeners = Vec::new();
    for (name, region) in plan {
        let l = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let advertise = l.local_addr().unwrap();
        listeners.push(l);
        specs.push(NodeSpec {
            name,
            region,
            link: free_udp(),
            advertise,
        });
    }
    for (i, l) in listeners.into_iter().enumerate() {
        let delays: HashMap<SocketAddr, Duration> = specs
            .iter()
            .filter(|s| s.name != specs[i].name)
            .map(|s| {
                let d = if s.region == specs[i].region {
                    Duration::ZERO
                } else {
                    FAR
                };
                (s.link, d)
            })
            .collect();
        tokio::spawn(proxy(l, specs[i].link, delays));
    }
    let nodes: Vec<Node> = specs
        .iter()
        .map(|s| start_node(tmp.path(), s, &pg.url(), &ca, 2))
        .collect();
    let by_name = |n: &str| &nodes[specs.iter().position(|s| s.name == n).unwrap()];
    let (o, x, z, y) = (by_name("o"), by_name("x"), by_name("z"), by_name("y"));
    let admin = o.creds["adminToken"].as_str().unwrap().to_string();

    // Every node knows the four, at their proxies' addresses.
    wait_members(&nodes, &admin, 4).await;
    let v = get_json_value(&format!("{}/cluster/nodes", y.http()), &admin).await;
    for n in v["nodes"].as_array().unwrap() {
        let s = specs.iter().find(|s| n["name"] == s.name).unwrap();
        assert_eq!(n["link"], s.advertise.to_string(), "{v}");
        assert_eq!(n["region"], s.region, "{v}");
    }

    // The RTTs measured over the proxies, as stored for the planner.
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let mut rtts: HashMap<(String, String), f64> = HashMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && rtts.len() < 12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT a, b, rtt_us FROM cluster_rtt")
                .fetch_all(&db)
                .await
                .unwrap();
        rtts = rows
            .into_iter()
            .map(|(a, b, us)| ((a, b), us as f64 / 1000.0))
            .collect();
    }
    let mut shown: Vec<_> = rtts.iter().collect();
    shown.sort_by(|a, b| a.0.cmp(b.0));
    eprintln!("rtt (ms): {shown:?}");
    let rtt = |a: &str, b: &str| rtts.get(&(a.to_string(), b.to_string())).copied();
    let far_rtt = 2.0 * FAR.as_secs_f64() * 1000.0;
    for (a, b) in [("y", "o"), ("y", "z"), ("o", "x"), ("o", "z")] {
        let r = rtt(a, b).unwrap_or_else(|| panic!("no rtt {a}->{b}: {shown:?}"));
        assert!(r >= far_rtt - 5.0 && r < far_rtt + 60.0, "{a}->{b} {r} ms");
    }
    let r = rtt("y", "x").expect("rtt y->x");
    assert!(r < 20.0, "y->x {r} ms");

    // A live input, published to o.
    let Input { uid, key, pkey } = input_everywhere(o, &nodes, "regions").await;
    let _publisher = publisher(&clip, &o.rtmp(&key), 60);
    let stream = |n: &Node| format!("{}/cluster/streams/{uid}", n.http());
    for n in &nodes {
        let url = stream(n);
        wait_until(Duration::from_secs(8), "every node knows origin o", || {
            let (url, admin) = (url.clone(), admin.clone());
            async move { get_json_value(&url, &admin).await["origin"] == "o" }
        })
        .await;
    }

    // x and z join first and fill o's fan-out; then y.
    let mut players: Vec<(&str, Player)> = Vec::new();
    for (name, node) in [("x", x), ("z", z)] {
        players.push((name, Player::start(&node.rtmp(&pkey))));
        let url = stream(node);
        wait_until(Duration::from_secs(8), "a first joiner under o", || {
            let (url, admin) = (url.clone(), admin.clone());
            async move { get_json_value(&url, &admin).await["parent"] == "o" }
        })
        .await;
    }
    players.push(("y", Player::start(&y.rtmp(&pkey))));
    let url = stream(y);
    wait_until(Duration::from_secs(8), "y joins", || {
        let (url, admin) = (url.clone(), admin.clone());
        async move { get_json_value(&url, &admin).await["parent"].is_string() }
    })
    .await;
    let tree = get_json_value(&stream(o), &admin).await;
    eprintln!("tree: {tree}");
    let y_parent = get_json_value(&stream(y), &admin).await["parent"].clone();
    assert_eq!(y_parent, "x", "y attaches under its nearest node: {tree}");
    let mut kids: Vec<&str> = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    kids.sort();
    assert_eq!(kids, ["x", "z"], "{tree}");

    // The reference player on the origin; then 6 s of packets.
    let reference = Player::start(&o.rtmp(&pkey));
    wait_until(Duration::from_secs(10), "every player plays", || {
        let ok = reference.count() >= 25 && players.iter().all(|(_, p)| p.count() >= 25);
        async move { ok }
    })
    .await;
    let since = Instant::now() + Duration::from_secs(1);
    tokio::time::sleep(Duration::from_secs(7)).await;

    // Each player's delay behind the origin's: its path's delay plus a
    // small overhead (the hops over the links).
    let mut failures = Vec::new();
    for (name, p) in &players {
        let (median, p90, n) = p.behind(&reference, since);
        let path = FAR; // o->x, o->z, and o->x->y (x to y: same region)
        let extra = median.as_secs_f64() * 1000.0 - path.as_secs_f64() * 1000.0;
        eprintln!(
            "player on {name}: {n} packets, median {:.1} ms behind the origin's \
             (p90 {p90:.1} ms), path {path:?}, overhead {extra:.1} ms",
            median.as_secs_f64() * 1000.0
        );
        if !(n >= 100 && extra > -10.0 && extra < 30.0) {
            failures.push(format!("{name}: {n} packets, overhead {extra:.1} ms"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    let tree = get_json_value(&stream(o), &admin).await;
    eprintln!("tree: {tree}");
    let edges: Vec<(&str, &str)> = tree["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["child"].as_str()?, e["parent"].as_str()?)))
        .collect();
    assert_eq!(edges, [("x", "o"), ("y", "x"), ("z", "o")], "{tree}");
    eprintln!("took {:?}", t0.elapsed());
}

async fn get_json_value(url: &str, token: &str) -> Value {
    cluster_node::get_json(url, token).await.1
}
