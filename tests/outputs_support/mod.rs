//! Helpers of the simulcast output tests (tests/outputs.rs,
//! tests/outputs_cluster.rs): the outputs API, an nginx-rtmp destination
//! that can be killed and restarted, players writing frame hashes, looped
//! publishes and the checks of what arrived.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{ffmpeg, source, Client, Hashes, Node, FPS, FRAMEMD5_ARGS};
use serde_json::{json, Value};
use tokio::process::Command;

/// One test at a time: servers and several ffmpegs on a small machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub use crate::common::http;

/// The outputs API of one node's default account.
pub struct Api {
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn of(node: &Node) -> Api {
        Api::with(&node.api(), &node.creds)
    }

    /// The API at `http` with the credentials of a node.
    pub fn with(http: &str, creds: &Value) -> Api {
        Api {
            base: format!(
                "{http}/client/v4/accounts/{}/stream/live_inputs",
                creds["accountId"].as_str().expect("accountId")
            ),
            token: creds["apiToken"].as_str().expect("apiToken").into(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    pub async fn create(&self, input: &str, url: &str, key: &str) -> String {
        let (st, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/{input}/outputs"),
                Some(json!({"url": url, "streamKey": key})),
            )
            .await;
        assert_eq!(st, 200, "create output: {v}");
        assert_eq!(v["result"]["url"], json!(url));
        assert_eq!(v["result"]["enabled"], json!(true));
        v["result"]["uid"].as_str().expect("output uid").to_string()
    }

    pub async fn list(&self, input: &str) -> Vec<Value> {
        let (st, v) = self
            .call(reqwest::Method::GET, &format!("/{input}/outputs"), None)
            .await;
        assert_eq!(st, 200, "list outputs: {v}");
        v["result"].as_array().expect("array").clone()
    }

    pub async fn get(&self, input: &str, output: &str) -> Value {
        self.list(input)
            .await
            .into_iter()
            .find(|o| o["uid"] == json!(output))
            .unwrap_or_else(|| panic!("output {output} not listed"))
    }

    pub async fn set_enabled(&self, input: &str, output: &str, enabled: bool) -> Value {
        let (st, v) = self
            .call(
                reqwest::Method::PUT,
                &format!("/{input}/outputs/{output}"),
                Some(json!({ "enabled": enabled })),
            )
            .await;
        assert_eq!(st, 200, "update output: {v}");
        v["result"].clone()
    }

    /// Wait (bounded) until the output's `status` is `want`; the time it took.
    pub async fn wait_status(&self, input: &str, output: &str, want: Value, secs: u64) -> Duration {
        let t0 = Instant::now();
        let mut last = Value::Null;
        while t0.elapsed() < Duration::from_secs(secs) {
            last = self.get(input, output).await;
            if last["status"] == want {
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("output {output} never reached status {want} in {secs} s; last: {last}");
    }
}

/// A free TCP port on loopback (nothing listens on it afterwards).
pub fn free_tcp_port() -> u16 {
    crate::common::ports::free_port()
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    crate::common::ports::free_port()
}

/// nginx-rtmp on loopback with its own prefix: one process (no master), so
/// killing it frees the port at once.
pub struct Nginx {
    dir: PathBuf,
    pub port: u16,
    proc: Option<Client>,
}

impl Nginx {
    pub async fn start(dir: &Path) -> Nginx {
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let mut n = Nginx {
            dir,
            port: free_tcp_port(),
            proc: None,
        };
        let d = n.dir.display();
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             worker_processes 1; daemon off; master_process off;\n\
             pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{}; chunk_size 4096;\n\
             application live {{ live on; }} }} }}\n",
            n.port
        );
        std::fs::write(n.dir.join("nginx.conf"), conf).expect("nginx.conf");
        n.run().await;
        n
    }

    pub async fn run(&mut self) {
        let mut c = Command::new("nginx");
        c.arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.proc = Some(Client::spawn(c, "nginx"));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "nginx did not listen: {}",
            std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
        );
    }

    pub async fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop().await;
        }
    }

    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }
}

/// An ffmpeg player writing the normalised hashes of `url` to `out`.
pub fn player(url: &str, out: &Path, what: &str) -> Client {
    let mut c = ffmpeg();
    c.arg("-i").arg(url).args(FRAMEMD5_ARGS).arg(out);
    Client::spawn(c, what)
}

/// The source's hashes `n` times in a row (a looped publish).
pub fn looped(n: usize) -> Hashes {
    let s = &source().hashes;
    Hashes {
        video: std::iter::repeat_n(s.video.iter().cloned(), n)
            .flatten()
            .collect(),
        audio: std::iter::repeat_n(s.audio.iter().cloned(), n)
            .flatten()
            .collect(),
    }
}

/// What arrived must be a contiguous run of the source (video and audio),
/// starting at a keyframe, at least `min_secs` long.
pub fn check_run(played: &Hashes, reference: &Hashes, min_secs: usize, what: &str) {
    let start = crate::common::assert_run(&played.video, &reference.video, min_secs * FPS, what);
    assert!(
        source()
            .keyframes
            .contains(&(start % source().hashes.video.len())),
        "{what}: the first video packet (source packet {start}) is not a keyframe"
    );
    crate::common::assert_run(
        &played.audio,
        &reference.audio,
        min_secs * 40,
        &format!("{what} (audio)"),
    );
}

pub async fn wait_video(md5: &Path, frames: usize, secs: u64, what: &str) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if Hashes::read(md5).video.len() >= frames {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: only {} video frames after {secs} s",
        Hashes::read(md5).video.len()
    );
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
