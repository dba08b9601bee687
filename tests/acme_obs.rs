//! OBS Studio itself (Debian's obs-studio, headless under Xvfb through
//! `tests/tools/obs-headless`, or `BANYAN_OBS_PUBLISH`) publishing over
//! RTMPS. OBS verifies the server's certificate: it refuses the node's
//! self-signed one, and publishes to a custom domain whose certificate
//! pebble issued, with pebble's root in the trust store of that run only
//! (a private mount namespace binds a CA directory over /etc/ssl/certs and
//! a hosts file over /etc/hosts; the machine's own files are untouched).

mod acme_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acme_support::{spawn, Node, Pebble};
use serde_json::{json, Value};

const NAME: &str = "obs.example.test";

/// The script: `BANYAN_OBS_PUBLISH`, or the repository's own
/// `tests/tools/obs-headless`.
fn obs_publish() -> PathBuf {
    match std::env::var_os("BANYAN_OBS_PUBLISH") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/obs-headless"),
    }
}

/// obs-headless SERVER KEY SECONDS in a namespace resolving `NAME` (and the
/// node's name) to 127.0.0.1 and trusting the certificates in `certs`.
fn obs(dir: &Path, certs: &Path, server: &str, key: &str, secs: u32) -> Command {
    let hosts = dir.join("obs-hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost {NAME} {}\n", acme_support::HOST),
    )
    .unwrap();
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/ssl/certs && shift && exec \"$@\"",
    ])
    .arg(&hosts)
    .arg(certs)
    .arg(obs_publish())
    .args([server, key, &secs.to_string()]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_publishes_over_rtmps_to_a_name_pebble_issued() {
    let mut pebble = Pebble::prepare();
    let node = Node::start(&pebble, &[NAME], &[]);
    pebble
        .start(node.port("http"), node.port("rtmps"), 3600, 0)
        .await;
    let a = node.account();
    let (s, v) = a.add(json!({ "domain": NAME })).await;
    assert_eq!(s.as_u16(), 202, "{v}");
    let d = a.settled(&node, NAME, 60).await;
    assert_eq!(d["status"], "active", "{d}");

    // The trust store of OBS's run: the system's bundle plus pebble's root.
    let certs = node.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let root = pebble.root_pem().await;
    std::fs::write(
        certs.join("ca-certificates.crt"),
        format!("{system}\n{root}"),
    )
    .unwrap();
    std::fs::write(certs.join("pebble-root.pem"), &root).unwrap();

    let (uid, key, _) = a.input().await;
    let rtmps = node.port("rtmps");

    // The node's own self-signed certificate: OBS refuses it.
    let refused = obs(
        node.dir.path(),
        &certs,
        &format!("rtmps://{}:{rtmps}/live/", acme_support::HOST),
        &key,
        12,
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&refused.stdout).to_string();
    assert!(
        !refused.status.success(),
        "OBS took a self-signed certificate: {said}"
    );
    eprintln!("the self-signed certificate, as OBS says it:\n{said}");
    assert!(
        said.contains("Cert"),
        "OBS refused for its certificate check: {said}"
    );

    // The issued one: OBS publishes and the input goes live.
    let out = node.dir.path().join("obs.out");
    let mut p = spawn(
        obs(
            node.dir.path(),
            &certs,
            &format!("rtmps://{NAME}:{rtmps}/live/"),
            &key,
            20,
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null()),
        "obs-publish",
    );
    let http = node.ready["http"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut live = false;
    while Instant::now() < deadline && !live {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v: Value = reqwest::get(format!("http://{http}/{uid}/lifecycle"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        live = v["live"] == json!(true);
        if p.0.try_wait().unwrap().is_some() {
            break;
        }
    }
    let status = p.0.wait().unwrap();
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        live,
        "OBS never went live through {NAME}: {said}\n{}",
        node.log_text()
    );
    assert!(status.success(), "obs-publish: {said}");
}
