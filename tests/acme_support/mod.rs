//! Pebble (Debian's ACME test server) with `pebble-challtestsrv` as its
//! DNS for the ACME end-to-end tests, a node resolving test names to
//! itself, its accounts, and what a TLS server shows.
#![allow(dead_code)]

// The test kit, included here so that every test binary using this module
// gets it without declaring it.
#[path = "../common/mod.rs"]
pub mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::calls::call_as;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_banyan");
/// The node's own name in these tests.
pub const HOST: &str = "node.example.test";

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(cmd: &mut Command, what: &str) -> Proc {
    Proc(cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}")))
}

pub use common::ports::free_port;

/// Pebble and its DNS, on ports of their own.
pub struct Pebble {
    _dns: Proc,
    pebble: Option<Proc>,
    pub dir: tempfile::TempDir,
    port: u16,
    mgmt: u16,
    dns_mgmt: u16,
    dns: u16,
}

impl Pebble {
    /// The DNS now; pebble itself once the node's ports are known.
    pub fn prepare() -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Banyan test root for pebble");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("pebble.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("pebble.key"), key.serialize_pem()).unwrap();
        let (dns, dns_mgmt) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("dns.log")).unwrap();
        let dns_proc = spawn(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
                .stdout(log.try_clone().unwrap())
                .stderr(log),
            "pebble-challtestsrv",
        );
        Pebble {
            _dns: dns_proc,
            pebble: None,
            dir,
            port: free_port(),
            mgmt: free_port(),
            dns_mgmt,
            dns,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// Start pebble validating against the node's ports, issuing
    /// certificates valid for `validity` seconds, rejecting `nonce_reject`
    /// percent of nonces.
    pub async fn start(&mut self, http: u16, tls: u16, validity: u64, nonce_reject: u32) {
        let cfg = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.mgmt),
            "certificate": self.dir.path().join("pebble.pem"),
            "privateKey": self.dir.path().join("pebble.key"),
            "httpPort": http,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        let path = self.dir.path().join("pebble.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        let log = std::fs::File::create(self.dir.path().join("pebble.log")).unwrap();
        self.pebble = Some(spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&path)
                .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
            "pebble",
        ));
        let client = self.client();
        for _ in 0..100 {
            if client.get(self.directory()).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pebble did not start:\n{}", self.log());
    }

    pub fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.ca()).unwrap()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The subject of pebble's issuing intermediate, as openssl prints it.
    pub async fn intermediate_subject(&self) -> String {
        let url = format!("https://127.0.0.1:{}/intermediates/0", self.mgmt);
        let pem = self
            .client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let path = self.dir.path().join("intermediate.pem");
        std::fs::write(&path, pem).unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("subject=")
            .trim()
            .to_string()
    }

    /// Pebble's root certificate (PEM), which issued its intermediate.
    pub async fn root_pem(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.mgmt);
        let pem = self
            .client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
        pem
    }

    /// Make the DNS answer `name` with `ip`.
    pub async fn add_a(&self, name: &str, ip: &str) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/add-a", self.dns_mgmt))
            .body(json!({"host": name, "addresses": [ip]}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "add-a: {}", r.status());
    }
}

/// The leaf certificate a TLS server at `addr` shows for `sni` (issuer and serial, as
/// openssl prints them).
pub fn served_at(addr: &str, sni: &str, dir: &Path) -> (String, String) {
    let mut s = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", sni])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(s.stdout.as_mut().unwrap(), &mut out).unwrap();
    let _ = s.wait();
    let pem_start = out
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let pem_end = out.find("-----END CERTIFICATE-----").unwrap() + 25;
    let pem = dir.join(format!("served-{}.pem", std::process::id()));
    std::fs::write(&pem, &out[pem_start..pem_end]).unwrap();
    let x = Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-serial", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&x.stdout).to_string();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    (field("issuer="), field("serial="))
}

/// `program args..` in a private mount namespace whose /etc/hosts (written
/// in `dir`) names `names` as 127.0.0.1.
pub fn in_namespace(dir: &Path, names: &[&str], program: &str) -> Command {
    common::node::in_namespace(&common::node::hosts_file(dir, names), program)
}

/// A node (the kit's) resolving `names` and [`HOST`] to itself, with a
/// scratch directory of the test's own; killed on drop.
pub struct Node {
    node: common::Node,
    /// Holds the node's data dir and log, and the test's files.
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Node {
    type Target = common::Node;
    fn deref(&self) -> &common::Node {
        &self.node
    }
}

impl Node {
    pub fn start(pebble: &Pebble, names: &[&str], extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (directory, ca) = (pebble.directory(), pebble.ca());
        let mut names = names.to_vec();
        names.push(HOST);
        let node = common::Node::builder()
            .data_dir(&dir.path().join("data"))
            .log_file(&dir.path().join("node.log"))
            .resolve(&names)
            .log_level("info,banyan=debug")
            .args(&["--no-rtmp", "--public-host", HOST])
            .args(&["--domain-verify-port", "0"])
            .args(&["--acme-directory", &directory])
            .args(&["--acme-ca", ca.to_str().unwrap()])
            .args(extra)
            .start();
        Node { node, dir }
    }

    pub fn port(&self, which: &str) -> u16 {
        let a: std::net::SocketAddr = self.ready[which].as_str().unwrap().parse().unwrap();
        a.port()
    }

    pub fn account(&self) -> Account {
        Account {
            base: self.base(self.creds["accountId"].as_str().unwrap()),
            token: self.creds["apiToken"].as_str().unwrap().into(),
        }
    }

    fn base(&self, id: &str) -> String {
        format!(
            "http://{}/client/v4/accounts/{id}/stream",
            self.ready["http"].as_str().unwrap()
        )
    }

    pub async fn new_account(&self, name: &str) -> Account {
        let url = format!(
            "http://{}/client/v4/accounts",
            self.ready["http"].as_str().unwrap()
        );
        let admin = self.creds["adminToken"].as_str().unwrap();
        let (s, v) = call_as(Method::POST, &url, admin, Some(json!({ "name": name }))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        Account {
            base: self.base(v["result"]["id"].as_str().unwrap()),
            token: v["result"]["apiToken"].as_str().unwrap().into(),
        }
    }
}

pub struct Account {
    pub base: String,
    pub token: String,
}

impl Account {
    pub async fn add(&self, body: Value) -> (StatusCode, Value) {
        call_as(
            Method::POST,
            &format!("{}/ingest_domains", self.base),
            &self.token,
            Some(body),
        )
        .await
    }

    pub async fn domain(&self, name: &str) -> Value {
        let url = format!("{}/ingest_domains/{name}", self.base);
        let (s, v) = call_as(Method::GET, &url, &self.token, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["result"].clone()
    }

    /// Poll until the domain's status is not `pending` (at most `secs`).
    pub async fn settled(&self, node: &Node, name: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let d = self.domain(name).await;
            if d["status"] != "pending" {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still pending: {d}\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A new live input's (uid, publish key, playback key).
    pub async fn input(&self) -> (String, String, String) {
        let url = format!("{}/live_inputs", self.base);
        let (s, v) = call_as(Method::POST, &url, &self.token, Some(json!({}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let r = &v["result"];
        (
            r["uid"].as_str().unwrap().into(),
            r["rtmps"]["streamKey"].as_str().unwrap().into(),
            r["rtmpsPlayback"]["streamKey"].as_str().unwrap().into(),
        )
    }
}

/// The leaf certificate the node shows for `sni` (issuer, serial).
pub fn served(node: &Node, sni: &str) -> (String, String) {
    let addr = format!("127.0.0.1:{}", node.port("rtmps"));
    served_at(&addr, sni, node.dir.path())
}
