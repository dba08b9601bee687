//! A cluster node process for the end-to-end cluster tests: started on
//! port 0 with a shared PostgreSQL and cluster CA, killed (-9) on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_banyan");

/// Kills the child on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster node.
pub struct Node {
    pub name: String,
    pub proc: Proc,
    pub ready: Value,
    pub creds: Value,
    pub log: PathBuf,
}

impl Node {
    /// Start node `name`; `extra` adds flags (link address, region, ...).
    pub fn start(
        dir: &Path,
        name: &str,
        db: &str,
        ca: &Path,
        fanout: usize,
        extra: &[&str],
    ) -> Node {
        let data = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir", data.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
            .args(["--rtmps", "127.0.0.1:0", "--srt", "127.0.0.1:0"])
            .args(["--database-url", db, "--cluster-node", name])
            .args(extra)
            .args(["--cluster-fanout", &fanout.to_string()])
            .arg("--cluster-ca-cert")
            .arg(ca.join("ca.pem"))
            .arg("--cluster-ca-key")
            .arg(ca.join("ca.key"))
            .env("RUST_LOG", "info,banyan::cluster=debug")
            .env_remove("BANYAN_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn banyan");
        let stdout = child.stdout.take().unwrap();
        let proc = Proc(Some(child));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "node {name} did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let ready: Value = serde_json::from_str(&line).unwrap();
        let creds: Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("credentials.json")).unwrap())
                .unwrap();
        Node {
            name: name.to_string(),
            proc,
            ready,
            creds,
            log,
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.ready["http"].as_str().unwrap())
    }

    pub fn rtmp(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.ready["rtmp"].as_str().unwrap())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub async fn get_json(url: &str, token: &str) -> (u16, Value) {
    let r = http().get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
