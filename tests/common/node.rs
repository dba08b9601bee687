//! The one way the end-to-end tests start `banyan serve`: a builder for
//! the flags, data dir, log file, log level, PostgreSQL URL and private
//! name resolution, and the running [`Node`] (ready line, credentials,
//! listener addresses, SIGTERM), killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{http, Client, Input, BIN};

/// The listeners every node gets on `127.0.0.1:0` unless the test names
/// that flag itself (or `--no-rtmp`).
const LISTENERS: [&str; 6] = [
    "--http",
    "--rtmp",
    "--rtmps",
    "--srt",
    "--webrtc",
    "--metrics",
];

/// How to start a node; [`Node::builder`].
pub struct NodeBuilder {
    args: Vec<String>,
    data: Option<PathBuf>,
    log: Option<PathBuf>,
    cwd: Option<PathBuf>,
    level: String,
    names: Vec<String>,
    env: Vec<(String, String)>,
    unset: Vec<String>,
    bare: bool,
}

impl NodeBuilder {
    /// One more command-line argument after the defaults.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// More command-line arguments after the defaults.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Run on this data dir (kept when the node is dropped) instead of a
    /// fresh one.
    pub fn data_dir(mut self, data: &Path) -> Self {
        self.data = Some(data.to_path_buf());
        self
    }

    /// Store in PostgreSQL at `url` (`--database-url`).
    pub fn database_url(self, url: &str) -> Self {
        self.args(&["--database-url", url])
    }

    /// Append the node's stderr to `log` instead of a file of its own.
    pub fn log_file(mut self, log: &Path) -> Self {
        self.log = Some(log.to_path_buf());
        self
    }

    /// The process's working directory.
    pub fn cwd(mut self, cwd: &Path) -> Self {
        self.cwd = Some(cwd.to_path_buf());
        self
    }

    /// `RUST_LOG` of the node (`info` unless set).
    pub fn log_level(mut self, level: &str) -> Self {
        self.level = level.to_string();
        self
    }

    /// The node resolves these names to 127.0.0.1: it runs in a private
    /// mount namespace (`unshare --mount`) with its own `/etc/hosts`.
    pub fn resolve(mut self, names: &[&str]) -> Self {
        self.names.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// An environment variable of the node.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Start the node without this environment variable (`RUST_LOG`
    /// included: then the node's own default applies); [`NodeBuilder::env`]
    /// still sets it.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.unset.push(key.to_string());
        self
    }

    /// No default flags at all (no `--data-dir`, no listeners): the test's
    /// arguments alone, e.g. a `--config` file naming the data dir given to
    /// [`NodeBuilder::data_dir`].
    pub fn bare(mut self) -> Self {
        self.bare = true;
        self
    }

    /// Start it and read its ready line; panics with the node's log if it
    /// does not get ready within 30 s.
    pub fn start(self) -> Node {
        match self.try_start() {
            Ok(n) => n,
            Err(log) => panic!("node did not start:\n{log}"),
        }
    }

    /// [`NodeBuilder::start`]; on failure, the node's log.
    pub fn try_start(self) -> Result<Node, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = self.data.clone().unwrap_or_else(|| dir.path().join("data"));
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| dir.path().join("node.log"));
        let mut args: Vec<String> = Vec::new();
        if !self.bare {
            args.extend(["serve".into(), "--data-dir".into()]);
            args.push(data.to_str().expect("utf-8 path").into());
            for flag in LISTENERS {
                let named = self.args.iter().any(|a| {
                    a == flag
                        || a.starts_with(&format!("{flag}="))
                        || (flag == "--rtmp" && a == "--no-rtmp")
                });
                if !named {
                    args.extend([flag.to_string(), "127.0.0.1:0".into()]);
                }
            }
        }
        args.extend(self.args.iter().cloned());
        let mut cmd = if self.names.is_empty() {
            std::process::Command::new(BIN)
        } else {
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            in_namespace(&hosts_file(dir.path(), &names), BIN)
        };
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        cmd.args(&args)
            .env("RUST_LOG", &self.level)
            .env_remove("BANYAN_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        for key in &self.unset {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("spawn banyan");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let mut node = Node {
            child: Some(child),
            ready: Value::Null,
            creds: Value::Null,
            log,
            data,
            _dir: dir,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                node.ready = serde_json::from_str(&line).expect("ready line is JSON");
                let creds = std::fs::read_to_string(node.data.join("credentials.json"))
                    .expect("credentials.json");
                node.creds = serde_json::from_str(&creds).expect("credentials are JSON");
                Ok(node)
            }
            Err(_) => {
                node.kill();
                Err(node.log_text())
            }
        }
    }
}

/// A running `banyan serve`; killed on drop.
pub struct Node {
    pub child: Option<std::process::Child>,
    /// The ready line.
    pub ready: Value,
    /// `credentials.json` of its data dir.
    pub creds: Value,
    pub log: PathBuf,
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A node on a fresh data dir, every listener on port 0, `RUST_LOG=info`.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            args: Vec::new(),
            data: None,
            log: None,
            cwd: None,
            level: "info".into(),
            names: Vec::new(),
            env: Vec::new(),
            unset: Vec::new(),
            bare: false,
        }
    }

    /// Start a node on a fresh data dir with every listener on port 0.
    pub fn start(extra: &[&str]) -> Node {
        Node::builder().args(extra).start()
    }

    /// [`Node::start`] with the process's working directory set to `cwd`.
    pub fn start_in(cwd: Option<&Path>, extra: &[&str]) -> Node {
        let b = Node::builder().args(extra);
        match cwd {
            Some(cwd) => b.cwd(cwd).start(),
            None => b.start(),
        }
    }

    /// A node on an existing data dir `data` (kept when the node is
    /// dropped), every listener on port 0.
    pub fn start_on(data: &Path, extra: &[&str]) -> Node {
        Node::builder().data_dir(data).args(extra).start()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A listener's address from the ready line (`http`, `rtmps`, ...).
    pub fn addr(&self, which: &str) -> String {
        self.ready[which]
            .as_str()
            .unwrap_or_else(|| panic!("{which} in {}", self.ready))
            .to_string()
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.addr("http"))
    }

    /// `/metrics` on the node's metrics listener (no token).
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr("metrics"))
    }

    pub fn account(&self) -> &str {
        self.creds["accountId"].as_str().expect("accountId")
    }

    pub fn token(&self) -> &str {
        self.creds["apiToken"].as_str().expect("apiToken")
    }

    pub fn admin(&self) -> &str {
        self.creds["adminToken"].as_str().expect("adminToken")
    }

    /// `rest` under `account`'s stream API.
    pub fn stream(&self, account: &str, rest: &str) -> String {
        format!("{}/client/v4/accounts/{account}/stream/{rest}", self.api())
    }

    /// `rest` under this node's account's stream API.
    pub fn stream_api(&self, rest: &str) -> String {
        self.stream(self.account(), rest)
    }

    /// The live inputs collection, then `rest` (`""`, `/{uid}`, ...).
    pub fn inputs(&self, rest: &str) -> String {
        self.stream_api(&format!("live_inputs{rest}"))
    }

    /// Create a live input; returns the API's `result`.
    pub async fn create_input(&self) -> Input {
        let resp = http()
            .post(self.inputs(""))
            .bearer_auth(self.token())
            .header("content-type", "application/json")
            .body(json!({"meta": {"name": "matrix"}}).to_string())
            .send()
            .await
            .expect("create input");
        let v: Value = resp.json().await.expect("JSON answer");
        assert_eq!(v["success"], json!(true), "create input: {v}");
        Input(v["result"].clone())
    }

    /// The live input's `status` field.
    pub async fn status(&self, uid: &str) -> Value {
        let resp = http()
            .get(self.inputs(&format!("/{uid}")))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("get input");
        let v: Value = resp.json().await.expect("JSON answer");
        v["result"]["status"].clone()
    }

    /// Wait (bounded) until the input is `connected`.
    pub async fn wait_connected(&self, uid: &str, publisher: &mut Client) {
        for _ in 0..150 {
            if self.status(uid).await == json!("connected") {
                return;
            }
            if let Ok(Some(st)) = publisher.child.try_wait() {
                let err = publisher.stderr().await;
                panic!("publisher exited with {st} before going live: {err}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "input {uid} never connected; node log:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, then the exit code (killed after 10 s: None).
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(s)) = child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A hosts file in `dir` naming `names` as 127.0.0.1, for [`in_namespace`].
pub fn hosts_file(dir: &Path, names: &[&str]) -> PathBuf {
    let p = dir.join("hosts");
    std::fs::write(&p, format!("127.0.0.1 localhost {}\n", names.join(" "))).expect("hosts file");
    p
}

/// `program args..` in a private mount namespace whose /etc/hosts is
/// `hosts` (the process itself is the program after the two execs), so
/// the machine's own /etc/hosts is never touched.
pub fn in_namespace(hosts: &Path, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("unshare");
    c.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(hosts)
    .arg(program);
    c
}
