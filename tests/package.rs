//! The Debian package as an operator meets it: `scripts/deb.sh` packages the
//! binary this test run already built (no second build), `dpkg -i` installs
//! it, the service starts (with systemd when the machine runs it, else the
//! unit's `ExecStart` exactly as written, as the unit's user with the unit's
//! environment), ffmpeg publishes and ffprobe plays with the URLs the node's
//! first-run message printed, and `dpkg --purge` leaves nothing behind.
//!
//! Needs root (the CI machine is a root Debian 12); as another user it says
//! so and does nothing. It refuses (fails) to touch a machine where a
//! `banyan` package, user or directory already exists. Listener addresses are moved to port 0 on loopback
//! through the environment (flags and environment win over
//! /etc/banyan/banyan.toml, as an operator's `systemctl edit` would), so
//! the test never takes a fixed port.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const UNIT: &str = "/lib/systemd/system/banyan.service";
const DROP_IN: &str = "/etc/systemd/system/banyan.service.d";

/// Environment laid over the unit's: every listener on loopback, port 0.
const PORTS: [(&str, &str); 5] = [
    ("BANYAN_HTTP", "127.0.0.1:0"),
    ("BANYAN_RTMP", "127.0.0.1:0"),
    ("BANYAN_RTMPS", "127.0.0.1:0"),
    ("BANYAN_SRT", "127.0.0.1:0"),
    ("BANYAN_METRICS", "127.0.0.1:0"),
];

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn root() -> bool {
    let uid = String::from_utf8(run(Command::new("id").arg("-u")).stdout).unwrap_or_default();
    uid.trim() == "0"
}

/// What of Banyan is on this machine already, if anything.
fn leftovers() -> Option<String> {
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "banyan"]));
    if String::from_utf8_lossy(&status.stdout).contains("installed") {
        return Some("a banyan package is installed already".into());
    }
    for p in [
        "/var/lib/banyan",
        "/etc/banyan",
        UNIT,
        DROP_IN,
        "/usr/bin/banyan",
    ] {
        if Path::new(p).exists() {
            return Some(format!("{p} exists already"));
        }
    }
    if run(Command::new("getent").args(["passwd", "banyan"]))
        .status
        .success()
    {
        return Some("a user banyan exists already".into());
    }
    None
}

/// Whether systemd manages this machine (PID 1 and running).
fn systemd_running() -> bool {
    let out = run(Command::new("systemctl").arg("is-system-running"));
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    matches!(state.as_str(), "running" | "degraded" | "starting")
}

/// Undoes everything on drop: the service stopped, the drop-in removed, the
/// package purged.
struct Installed {
    child: Option<std::process::Child>,
    systemd: bool,
}

impl Installed {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM as systemd sends it, then wait (bounded) for the exit.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.systemd {
            let _ = run(Command::new("systemctl").args(["stop", "banyan.service"]));
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(DROP_IN);
        let _ = run(Command::new("dpkg").args(["--purge", "banyan"]));
        if self.systemd {
            let _ = run(Command::new("systemctl").arg("daemon-reload"));
        }
    }
}

/// `Key=value` lines of the unit's `[Service]` section (the last wins,
/// except `Environment`, which accumulates).
fn unit_service(text: &str) -> (HashMap<String, String>, Vec<(String, String)>) {
    let mut keys = HashMap::new();
    let mut env = Vec::new();
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[Service]" || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k == "Environment" {
                for pair in v.split_whitespace() {
                    if let Some((a, b)) = pair.split_once('=') {
                        env.push((a.to_string(), b.to_string()));
                    }
                }
            } else {
                keys.insert(k.to_string(), v.to_string());
            }
        }
    }
    (keys, env)
}

/// The log text of the service once it holds the ready message.
fn wait_ready(log: &dyn Fn() -> String) -> String {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let text = log();
        if text.contains("Banyan is ready") && text.contains("<uid>/watch") {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the service never logged its ready message:\n{}", log());
}

/// The URL on a line of the first-run message that holds `placeholder`.
fn printed_url(text: &str, scheme: &str, placeholder: &str) -> String {
    text.lines()
        .flat_map(str::split_whitespace)
        .find(|w| w.starts_with(scheme) && w.contains(placeholder))
        .unwrap_or_else(|| panic!("no {scheme} URL with {placeholder} in:\n{text}"))
        .to_string()
}

/// Fill `<a.b>` and `<uid>` placeholders from a live input.
fn fill(url: &str, input: &Value) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('>').expect("closing >") + i;
        let path = &rest[i + 1..j];
        let v = path.split('.').fold(input, |v, k| &v[k]);
        out.push_str(v.as_str().unwrap_or_else(|| panic!("input has no {path}")));
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

/// ffprobe's streams of `url` (codec names), within `secs`.
fn probe(url: &str, secs: u64) -> Vec<String> {
    let out = run(Command::new("timeout")
        .arg(secs.to_string())
        .args([
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
        ])
        .args(["-of", "json", url]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["codec_name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn package_installs_serves_and_purges() {
    if !root() {
        eprintln!("package test skipped: installing a package needs root");
        return;
    }
    for p in ["dpkg", "dpkg-deb", "ffmpeg", "ffprobe", "adduser"] {
        assert!(
            has(p),
            "{p} is not installed (scripts/setup.sh installs it)"
        );
    }
    if let Some(what) = leftovers() {
        panic!(
            "{what}: this test installs and purges the banyan package and will not touch \
             a machine that has one (dpkg --purge banyan removes it, with its data)"
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    // The package of the binary this run built (debug info stripped).
    let deb = ok(Command::new(root.join("scripts/deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_banyan"), "--out"])
        .arg(out.path()));
    let deb = PathBuf::from(deb.trim());
    assert!(deb.is_file(), "{}", deb.display());
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/banyan",
        "./lib/systemd/system/banyan.service",
        "./etc/banyan/banyan.toml",
        "./usr/share/doc/banyan/copyright",
    ] {
        assert!(contents.contains(f), "{f} not in the package:\n{contents}");
    }

    let systemd = systemd_running();
    let mut guard = Installed {
        child: None,
        systemd,
    };
    ok(Command::new("dpkg").arg("-i").arg(&deb));

    // What the package put on the machine.
    let pw = ok(Command::new("getent").args(["passwd", "banyan"]));
    let fields: Vec<&str> = pw.trim().split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert!(uid < 1000, "banyan is a system user: {pw}");
    assert!(
        fields[6].ends_with("nologin") || fields[6].ends_with("false"),
        "{pw}"
    );
    let data = std::fs::metadata("/var/lib/banyan").unwrap();
    assert_eq!(
        (data.uid(), data.permissions().mode() & 0o777),
        (uid, 0o700)
    );
    let conf = std::fs::metadata("/etc/banyan/banyan.toml").unwrap();
    assert_eq!((conf.uid(), conf.gid()), (0, gid), "root:banyan");
    assert_eq!(conf.permissions().mode() & 0o777, 0o640);

    let unit = std::fs::read_to_string(UNIT).unwrap();
    let (service, env) = unit_service(&unit);
    for (k, v) in [
        ("User", "banyan"),
        ("StateDirectory", "banyan"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
    ] {
        assert_eq!(
            service.get(k).map(String::as_str),
            Some(v),
            "{k} in the unit"
        );
    }
    if has("systemd-analyze") {
        let v = run(Command::new("systemd-analyze").args(["verify", UNIT]));
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(
            v.status.success() && !err.contains("banyan.service"),
            "{err}"
        );
    }

    // Start it.
    let started = Instant::now();
    let log_path = out.path().join("service.log");
    let log: Box<dyn Fn() -> String> = if systemd {
        std::fs::create_dir_all(DROP_IN).unwrap();
        let lines: String = PORTS
            .iter()
            .map(|(k, v)| format!("Environment={k}={v}\n"))
            .collect();
        std::fs::write(
            format!("{DROP_IN}/test-ports.conf"),
            format!("[Service]\n{lines}"),
        )
        .unwrap();
        ok(Command::new("systemctl").arg("daemon-reload"));
        let since = format!(
            "@{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        );
        ok(Command::new("systemctl").args(["start", "banyan.service"]));
        Box::new(move || {
            let out = run(Command::new("journalctl")
                .args(["-u", "banyan.service", "-o", "cat", "--no-pager", "--since"])
                .arg(&since));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    } else {
        let exec = service.get("ExecStart").expect("ExecStart");
        let argv: Vec<&str> = exec.split_whitespace().collect();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(PORTS)
            .current_dir(service.get("WorkingDirectory").expect("WorkingDirectory"))
            .uid(uid)
            .gid(gid);
        // stdout and stderr into one log, as journald gets them.
        let file = std::fs::File::create(&log_path).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        guard.child = Some(cmd.spawn().expect("start ExecStart"));
        let p = log_path.clone();
        Box::new(move || std::fs::read_to_string(&p).unwrap_or_default())
    };
    let text = wait_ready(&log);
    eprintln!("started in {:?}", started.elapsed());
    assert!(text.contains("first start"), "{text}");
    assert!(text.contains("/var/lib/banyan/credentials.json"), "{text}");
    assert!(
        !text.as_bytes().contains(&0x1b),
        "colour codes in the service log"
    );
    let creds = std::fs::metadata("/var/lib/banyan/credentials.json").unwrap();
    assert_eq!(
        (creds.uid(), creds.permissions().mode() & 0o777),
        (uid, 0o600)
    );

    // banyan doctor as the message says, with the listeners the ready line
    // names (the test moved them to port 0).
    let ready: Value = text
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(|v| v["ready"] == true)
        })
        .unwrap_or_else(|| panic!("no ready line in the service log:\n{text}"));
    let mut doctor = Command::new("/usr/bin/banyan");
    doctor.args(["doctor", "--config", "/etc/banyan/banyan.toml"]);
    doctor.args(["--data-dir", "/var/lib/banyan"]);
    for l in ["http", "rtmp", "rtmps", "srt", "metrics"] {
        doctor.arg(format!("--{l}")).arg(ready[l].as_str().unwrap());
    }
    let report = ok(&mut doctor);
    assert!(report.contains("0 problems"), "{report}");
    assert!(
        report.contains("config /etc/banyan/banyan.toml"),
        "{report}"
    );

    // A live input, made as the message says.
    let created = ok(Command::new("/usr/bin/banyan")
        .args(["inputs", "create", "--data-dir", "/var/lib/banyan"])
        .args(["--name", "package test"]));
    let input: Value = serde_json::from_str(&created).expect("inputs create prints JSON");
    let input = if input["result"].is_object() {
        input["result"].clone()
    } else {
        input
    };

    let publish = fill(&printed_url(&text, "rtmps://", "<rtmps.streamKey>"), &input);
    let rtmps_play = fill(
        &printed_url(&text, "rtmps://", "<rtmpsPlayback.streamKey>"),
        &input,
    );
    let srt_play = fill(
        &printed_url(&text, "srt://", "<srtPlayback.passphrase>"),
        &input,
    );
    let hls = fill(
        &printed_url(&text, "http://", "/manifest/video.m3u8"),
        &input,
    );

    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", "40", "-c:v", "libx264", "-preset", "ultrafast"])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-bf",
            "0",
            "-c:a",
            "aac",
        ])
        .args(["-f", "flv", &publish])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let publisher = Kill(&mut ffmpeg);
    std::thread::sleep(Duration::from_secs(2));
    for (what, url) in [("RTMPS", &rtmps_play), ("SRT", &srt_play), ("HLS", &hls)] {
        let mut codecs = Vec::new();
        for _ in 0..5 {
            codecs = probe(url, 15);
            if codecs.contains(&"h264".to_string()) && codecs.contains(&"aac".to_string()) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        assert!(
            codecs.contains(&"h264".to_string()) && codecs.contains(&"aac".to_string()),
            "{what} play of {url} found {codecs:?}\n{}",
            log()
        );
        eprintln!("{what}: {codecs:?}");
    }
    drop(publisher);

    // Stop, purge, and check nothing is left.
    guard.stop();
    ok(Command::new("dpkg").args(["--purge", "banyan"]));
    let _ = std::fs::remove_dir_all(DROP_IN);
    for p in ["/usr/bin/banyan", UNIT, "/etc/banyan", "/var/lib/banyan"] {
        assert!(!Path::new(p).exists(), "{p} is left after purge");
    }
    assert!(!run(Command::new("getent").args(["passwd", "banyan"]))
        .status
        .success());
    assert!(!run(Command::new("getent").args(["group", "banyan"]))
        .status
        .success());
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "banyan"]));
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains(" installed"),
        "dpkg still lists banyan"
    );
    assert!(
        leftovers().is_none(),
        "the machine is changed: {:?}",
        leftovers()
    );
}
