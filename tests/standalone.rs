//! The binary as an operator runs it: started outside the checkout it serves
//! a whole watch page (hls.js embedded at build time); its logs are plain
//! text without terminal escapes when written to a file, or one JSON object
//! a line with `--log-format json`; it says on first start where the
//! credentials are and which URLs to give publishers and players.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Node;
use reqwest::StatusCode;
use serde_json::Value;

/// A working directory with nothing of the checkout in it or above it.
fn outside() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temp dir");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        !d.path().starts_with(manifest),
        "temp dir inside the checkout"
    );
    d
}

#[tokio::test]
async fn watch_page_and_hls_js_from_any_directory() {
    let cwd = outside();
    let node = Node::start_in(Some(cwd.path()), &[]);
    let input = node.create_input().await;
    let http = reqwest::Client::new();

    let page = http
        .get(format!("{}/{}/watch", node.api(), input.uid()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("/watch-assets/hls.min.js"), "{page}");
    assert!(page.contains(input.uid()), "the page names its input");

    let js = http
        .get(format!("{}/watch-assets/hls.min.js", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let ctype = js.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/javascript"), "{ctype}");
    let js = js.bytes().await.unwrap();
    let vendored = include_bytes!("../web/vendor/hls.min.js");
    assert_eq!(
        js.len(),
        vendored.len(),
        "served hls.js is the vendored file"
    );
    assert!(js == vendored[..], "served hls.js differs from web/vendor");
    let text = std::str::from_utf8(&js).unwrap();
    // The UMD bundle of hls.js 1.x: exports the Hls class with isSupported.
    assert!(text.contains("module.exports") && text.contains(".Hls="));
    assert!(text.contains("isSupported") && text.contains("lowLatencyMode"));

    let lic = http
        .get(format!("{}/watch-assets/hls.js.LICENSE", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(lic.status(), StatusCode::OK);
    assert!(lic
        .text()
        .await
        .unwrap()
        .contains("Apache License, Version 2.0"));

    let none = http
        .get(format!("{}/watch-assets/hls.js", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    assert!(
        !node.log_text().contains("hls.js not found"),
        "{}",
        node.log_text()
    );
}

/// Start `banyan serve` (the kit's node, without `RUST_LOG` or a log
/// format from the environment) on `data` with every listener on port 0 and
/// stderr into a fresh `log`; return the ready line and the node (killed on
/// drop).
fn serve(data: &std::path::Path, log: &std::path::Path, extra: &[&str]) -> (Value, Node) {
    serve_env(data, log, extra, &[])
}

/// [`serve`] with more environment variables.
fn serve_env(
    data: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> (Value, Node) {
    // Emptied, not replaced: a test names the file's inode.
    std::fs::File::create(log).unwrap();
    let mut b = Node::builder()
        .data_dir(data)
        .log_file(log)
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("BANYAN_LOG_FORMAT")
        .env_remove("JOURNAL_STREAM");
    for (k, v) in env {
        b = b.env(k, v);
    }
    let node = b.start();
    (node.ready.clone(), node)
}

/// The log once it holds `what` (at most 10 s).
fn log_with(log: &std::path::Path, what: &str) -> String {
    for _ in 0..100 {
        let t = std::fs::read_to_string(log).unwrap_or_default();
        if t.contains(what) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "log never said {what:?}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn plain_logs_in_a_file_have_no_escapes_and_the_first_run_says_where_things_are() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("first.log");
    let (ready, child) = serve(&data, &log, &[]);
    let text = log_with(&log, "Banyan is ready");
    drop(child);
    let bytes = std::fs::read(&log).unwrap();
    assert!(!bytes.contains(&0x1b), "ESC in a log file:\n{text}");
    let creds = ready["credentials"].as_str().unwrap();
    let rtmps = ready["rtmps"].as_str().unwrap();
    let srt = ready["srt"].as_str().unwrap();
    let api = ready["api"].as_str().unwrap();
    for want in [
        "first start".to_string(),
        creds.to_string(),
        format!("rtmps://{rtmps}/live/<rtmps.streamKey>"),
        format!("srt://{srt}?streamid=<srt.streamId>&passphrase=<srt.passphrase>"),
        format!("rtmps://{rtmps}/live/<rtmpsPlayback.streamKey>"),
        format!("srt://{srt}?streamid=<srtPlayback.streamId>&passphrase=<srtPlayback.passphrase>"),
        format!("{api}/<uid>/manifest/video.m3u8"),
        format!("{api}/<uid>/watch"),
        format!("{api}/openapi.json"),
    ] {
        assert!(
            text.contains(&want),
            "the first-run message lacks {want}:\n{text}"
        );
    }
    let lines = text.lines().count();
    assert!(
        lines < 60,
        "the first-run log is more than a screen: {lines} lines"
    );

    // A second start on the same data dir: the short reminder only.
    let log2 = dir.path().join("second.log");
    let (_, child) = serve(&data, &log2, &[]);
    let text = log_with(&log2, "Banyan is ready");
    drop(child);
    assert!(!text.contains("first start"), "{text}");
    assert!(
        text.contains(creds) && text.contains("<rtmps.streamKey>"),
        "{text}"
    );
    let stamped = |t: &str| t.lines().next().is_some_and(|l| l.starts_with("20"));
    assert!(stamped(&text), "lines in a file carry timestamps:\n{text}");

    // Under journald (JOURNAL_STREAM names stderr's device and inode) the
    // journal stamps lines itself: none from the node.
    use std::os::unix::fs::MetadataExt as _;
    let log3 = dir.path().join("journal.log");
    std::fs::File::create(&log3).unwrap();
    let m = std::fs::metadata(&log3).unwrap();
    let journal = ("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    let (_, child) = serve_env(&data, &log3, &[], &[journal]);
    let text = log_with(&log3, "Banyan is ready");
    drop(child);
    assert!(!stamped(&text), "timestamps under journald:\n{text}");
    assert!(text.trim_start().starts_with("INFO"), "{text}");
    // A JOURNAL_STREAM inherited from elsewhere does not count.
    let log4 = dir.path().join("inherited.log");
    let other = ("JOURNAL_STREAM", "1:1".to_string());
    let (_, child) = serve_env(&data, &log4, &[], &[other]);
    let text = log_with(&log4, "Banyan is ready");
    drop(child);
    assert!(stamped(&text), "{text}");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("node.log");
    let (_, child) = serve(&data, &log, &["--log-format", "json"]);
    log_with(&log, "Banyan is ready");
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{text}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("first start") && m.contains("<uid>/watch")),
        "the first-run message is one JSON event: {messages:?}"
    );
    assert!(!text.as_bytes().contains(&0x1b), "ESC in JSON logs");
}

/// The `(table, key)` pairs of a config file's key lines, commented or not,
/// and the file with the first line of each uncommented (and `[cluster]`).
fn config_keys(text: &str) -> (Vec<(String, String)>, String) {
    let mut table = String::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut live = String::new();
    for line in text.lines() {
        let bare = line.trim_start_matches('#').trim();
        if bare.starts_with('[') && bare.ends_with(']') {
            table = bare.trim_matches(|c| c == '[' || c == ']').to_string();
            live.push_str(bare);
            live.push('\n');
            continue;
        }
        let Some((k, _)) = bare.split_once(" = ") else {
            continue;
        };
        if k.is_empty()
            || !k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            || toml::from_str::<toml::Table>(bare).is_err()
        {
            continue; // prose that happens to hold " = "
        }
        let pair = (table.clone(), k.to_string());
        if !keys.contains(&pair) {
            keys.push(pair);
            live.push_str(bare);
            live.push('\n');
        }
    }
    (keys, live)
}

/// Every option of `banyan serve`, as `(table, key)` of the config file.
fn options() -> Vec<(String, String)> {
    use clap::Args as _;
    let cmd = banyan::config::ServeArgs::augment_args(clap::Command::new("serve"));
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config")
        .map(|l| {
            let k = l.replace('-', "_");
            match k.strip_prefix("cluster_") {
                Some(rest) => ("cluster".to_string(), rest.to_string()),
                None => (String::new(), k),
            }
        })
        .collect()
}

/// Parse a config file's text as the node does (unknown keys refused).
fn parse_config(text: &str, what: &str) {
    if let Err(e) = banyan::config::Options::from_toml(text) {
        panic!("{what}: {e:#}\n{text}");
    }
}

#[test]
fn the_packaged_config_names_every_option_and_the_samples_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let packaged = std::fs::read_to_string(root.join("packaging/banyan.toml")).unwrap();
    let (keys, live) = config_keys(&packaged);
    let opts = options();
    assert!(opts.len() > 40, "options found: {opts:?}");
    for o in &opts {
        assert!(
            keys.contains(o),
            "packaging/banyan.toml does not name option {o:?}"
        );
    }
    for k in &keys {
        assert!(
            opts.contains(k),
            "packaging/banyan.toml names {k:?}, not an option"
        );
    }
    parse_config(&packaged, "packaging/banyan.toml as shipped");
    parse_config(&live, "packaging/banyan.toml with every line uncommented");

    let sample = std::fs::read_to_string(root.join("samples/banyan.toml")).unwrap();
    let (keys, live) = config_keys(&sample);
    for k in &keys {
        assert!(
            opts.contains(k),
            "samples/banyan.toml names {k:?}, not an option"
        );
    }
    parse_config(&sample, "samples/banyan.toml");
    parse_config(&live, "samples/banyan.toml uncommented");
}

/// `banyan doctor` with the listeners of `ready` and `extra` flags: exit
/// status and output.
fn doctor(data: &std::path::Path, ready: &Value, extra: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("doctor").arg("--data-dir").arg(data);
    for l in ["http", "rtmp", "rtmps", "srt", "metrics"] {
        cmd.arg(format!("--{l}"))
            .arg(ready[l].as_str().expect("listener address"));
    }
    let out = cmd
        .args(extra)
        .env_remove("BANYAN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run banyan doctor");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn doctor_passes_a_good_node_and_names_what_to_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ready, child) = serve(&data, &dir.path().join("node.log"), &[]);

    let (ok, text) = doctor(&data, &ready, &[]);
    assert!(ok, "doctor on a good node:\n{text}");
    for want in [
        "credentials",
        "HTTP API",
        "database is reachable",
        "RTMPS",
        "TLS handshake",
        "SRT",
        "plain RTMP",
        "metrics",
        "clock",
        "database schema up to date",
        "0 problems",
    ] {
        assert!(text.contains(want), "doctor did not check {want}:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");

    // A loosened credentials file: reported with its fix, exit status 1.
    let creds = data.join("credentials.json");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text) = doctor(&data, &ready, &["--quiet"]);
    assert!(!ok, "doctor exits non-zero on a problem:\n{text}");
    assert!(
        text.contains("open to other users (mode 644)")
            && text.contains(&format!("fix: chmod 600 {}", creds.display())),
        "{text}"
    );
    assert!(
        !text.contains("ok  "),
        "--quiet prints only problems:\n{text}"
    );
    assert!(text.contains("1 problem, 0 warnings"), "{text}");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The node gone: every listener is reported.
    drop(child);
    let (ok, text) = doctor(&data, &ready, &[]);
    assert!(!ok, "{text}");
    for want in ["HTTP", "RTMPS", "SRT", "metrics"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("FAIL") && l.contains(want)),
            "{want} not reported for a stopped node:\n{text}"
        );
    }
}

#[test]
fn doctor_warns_of_a_certificate_about_to_expire_and_a_wrong_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(5) + time::Duration::hours(12);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = [
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (ready, _child) = serve(&data, &dir.path().join("node.log"), &tls);

    let (ok, text) = doctor(&data, &ready, &tls);
    assert!(ok, "a warning alone exits 0:\n{text}");
    assert!(
        text.contains("WARN  certificate expires in 5 days"),
        "expiry not seen:\n{text}"
    );
    assert!(
        text.contains("TLS handshake with the certificate on disk"),
        "{text}"
    );

    // Clients told to use another name than the certificate's.
    let mut named = tls.to_vec();
    named.extend(["--public-host", "live.example.test"]);
    let (ok, text) = doctor(&data, &ready, &named);
    assert!(!ok, "{text}");
    assert!(text.contains("does not name live.example.test"), "{text}");
}

/// The Dockerfile cannot be built here without a container tool; what it
/// says about the node is checked instead: every `BANYAN_*` variable it
/// sets is an option, its listeners are the defaults' ports on every
/// interface, and it exposes exactly the public ones.
#[test]
fn the_dockerfile_sets_real_options_and_exposes_its_listeners() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let envs: Vec<String> = {
        use clap::Args as _;
        let cmd = banyan::config::ServeArgs::augment_args(clap::Command::new("serve"));
        cmd.get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    };
    let mut set = std::collections::HashMap::new();
    for word in text.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            if k.starts_with("BANYAN_") {
                assert!(
                    envs.iter().any(|e| e == k),
                    "Dockerfile sets {k}, not an option"
                );
                set.insert(k.to_string(), v.to_string());
            }
        }
    }
    let expose: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("an EXPOSE line")
        .split_whitespace()
        .collect();
    for (var, port) in [
        ("BANYAN_RTMPS", "1936/tcp"),
        ("BANYAN_SRT", "8890/udp"),
        ("BANYAN_HTTP", "8080/tcp"),
        ("BANYAN_WEBRTC", "8443/udp"),
    ] {
        let num = port.split('/').next().unwrap();
        assert_eq!(
            set.get(var).map(String::as_str),
            Some(&*format!("0.0.0.0:{num}"))
        );
        assert!(expose.contains(&port), "{port} not exposed: {expose:?}");
    }
    assert_eq!(expose.len(), 4, "only the public listeners: {expose:?}");
    assert_eq!(set.get("BANYAN_NO_RTMP").map(String::as_str), Some("true"));
    assert_eq!(
        set.get("BANYAN_DATA_DIR").map(String::as_str),
        Some("/var/lib/banyan")
    );
    assert!(text.contains("VOLUME /var/lib/banyan") && text.contains("USER banyan"));
    assert!(text.contains("COPY --chown=root:banyan --chmod=0640 packaging/banyan.toml"));
}
