use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `banyan serve` with these flags.
fn serve(argv: &[&str]) -> anyhow::Result<Settings> {
    Settings::resolve(ServeArgs::parse_from(argv)?)
}

/// A config file with `text`, then `banyan serve --config FILE` + `argv`.
fn with_file(text: &str, argv: &[&str]) -> anyhow::Result<Settings> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(argv);
    serve(&all)
}

#[test]
fn defaults_parse() {
    // Every subsystem's `Default` is its flags' defaults.
    let o = Options::default();
    assert_eq!(o.general.data_dir, PathBuf::from("./banyan-data"));
    assert_eq!(o.net.rtmp, addr("127.0.0.1:1935"));
    assert!(o.tls.pair().is_none());
    assert_eq!(o.limits.idle_timeout, Duration::from_secs(30));
    assert_eq!(o.quotas.max_ingest_domains, 5);
    assert_eq!(o.hooks.webhook_retry_for, Duration::from_secs(3600));
    assert_eq!(o.observe.log_format, LogFormat::Plain);
    assert_eq!(o.acme.acme_challenge, crate::acme::Challenge::TlsAlpn01);
    assert_eq!(o.cluster.link, addr("127.0.0.1:7700"));
}

#[test]
fn flags_win_over_file_and_defaults_apply() {
    let s = with_file(
        "http = \"127.0.0.1:9000\"\nrtmps = \"127.0.0.1:9001\"\nreconnect_window = 3\n",
        &["--http", "127.0.0.1:0"],
    )
    .unwrap();
    assert_eq!(s.net.http, addr("127.0.0.1:0"));
    assert_eq!(s.net.rtmps, addr("127.0.0.1:9001"));
    assert_eq!(s.net.plain_rtmp(), Some(addr("127.0.0.1:1935")));
    assert_eq!(s.general.reconnect_window, Duration::from_secs(3));
    assert_eq!(s.quotas.max_ingest_domains, 5);
    assert_eq!(s.net.metrics, addr("127.0.0.1:9090"));
    assert_eq!(s.observe.metrics_per_stream, PerStream::Off);
    assert_eq!(s.quotas.max_inputs_per_account, 1000);
    assert_eq!(s.quotas.max_meta_bytes, 16384);
    assert_eq!((s.quotas.api_rate, s.quotas.api_burst), (50, 100));
}

#[test]
fn a_flag_at_its_default_value_still_wins_over_the_file() {
    // Given explicitly, a flag wins even when it equals the default.
    let s = with_file(
        "idle_timeout = 5\nno_rtmp = true\n",
        &["--idle-timeout", "30"],
    )
    .unwrap();
    assert_eq!(s.limits.idle_timeout, Duration::from_secs(30));
    assert_eq!(s.net.plain_rtmp(), None, "no_rtmp from the file");
    // A plain RTMP listener given by flag turns the file's no_rtmp off.
    let s = with_file("no_rtmp = true\n", &["--rtmp", "127.0.0.1:0"]).unwrap();
    assert_eq!(s.net.plain_rtmp(), Some(addr("127.0.0.1:0")));
}

#[test]
fn per_stream_metrics_from_the_file() {
    let s = with_file(
        "metrics = \"127.0.0.1:9999\"\nmetrics_per_stream = \"hashed\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.net.metrics, addr("127.0.0.1:9999"));
    assert_eq!(s.observe.metrics_per_stream, PerStream::Hashed);
    assert_eq!(s.observe.log_format, LogFormat::Plain);
    let s = with_file("log_format = \"json\"\n", &[]).unwrap();
    assert_eq!(s.observe.log_format, LogFormat::Json);
}

#[test]
fn unknown_keys_and_public_plain_rtmp_are_refused() {
    let e = with_file("htp = \"127.0.0.1:9000\"\n", &[]).unwrap_err();
    assert!(format!("{e:#}").contains("unknown key `htp`"), "{e:#}");
    let e = with_file("[cluster]\nnode = \"a\"\nfanuot = 3\n", &[]).unwrap_err();
    assert!(format!("{e:#}").contains("fanuot"), "{e:#}");
    let e = with_file("reconnect_window = \"ten\"\n", &[]).unwrap_err();
    assert!(format!("{e:#}").contains("reconnect_window"), "{e:#}");
    assert!(serve(&["--rtmp", "0.0.0.0:1935"]).is_err());
    assert!(serve(&["--rtmp", "0.0.0.0:1935", "--allow-plain-rtmp-on-public"]).is_ok());
    assert!(with_file(
        "rtmp = \"0.0.0.0:1935\"\nallow_plain_rtmp_on_public = true\n",
        &[]
    )
    .is_ok());
}

#[test]
fn proxies_deadlines_caps_and_https() {
    let s = serve(&[]).unwrap();
    assert!(s.trusted_proxies.is_empty() && !s.net.proxy_protocol && s.net.https.is_none());
    assert_eq!(s.limits.http_body_timeout, Duration::from_secs(30));
    assert_eq!(s.limits.http_write_timeout, Duration::from_secs(30));
    assert_eq!(s.limits.max_connections_per_address, 64);
    let s = serve(&[
        "--trusted-proxies",
        "10.0.0.0/8, 127.0.0.1",
        "--proxy-protocol",
        "--https",
        "127.0.0.1:0",
    ])
    .unwrap();
    assert!(s.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
    assert!(s.net.proxy_protocol && s.net.https.is_some());
    assert!(serve(&["--trusted-proxies", "10.0.0.0/40"]).is_err());
    assert!(
        serve(&["--proxy-protocol"]).is_err(),
        "PROXY headers need trusted proxies"
    );
}

#[test]
fn values_are_kept_within_their_bounds() {
    let s = serve(&[
        "--idle-timeout",
        "0",
        "--max-connections",
        "0",
        "--analytics-flush",
        "99999",
        "--webhook-retry-for",
        "0",
        "--max-meta-bytes",
        "999999999",
    ])
    .unwrap();
    assert_eq!(s.limits.idle_timeout, Duration::from_secs(1));
    assert_eq!(s.limits.max_connections, 1);
    assert_eq!(s.observe.analytics_flush, Duration::from_secs(3600));
    assert_eq!(s.hooks.webhook_retry_for, Duration::from_secs(1));
    assert_eq!(s.quotas.max_meta_bytes, crate::api::MAX_BODY);
}

#[test]
fn tls_cluster_and_acme_are_checked() {
    let e = with_file("tls_cert = \"/c.pem\"\n", &[]).unwrap_err();
    assert!(format!("{e:#}").contains("together"), "{e:#}");
    assert!(
        serve(&["--tls-cert", "/c.pem"]).is_err(),
        "flags come in pairs"
    );
    let both = "tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n";
    let s = with_file(both, &[]).unwrap();
    assert_eq!(s.tls.pair(), Some(("/c.pem".into(), "/k.pem".into())));
    let s = with_file(both, &["--tls-cert", "/d.pem", "--tls-key", "/e.pem"]).unwrap();
    assert_eq!(s.tls.pair(), Some(("/d.pem".into(), "/e.pem".into())));

    let e = with_file("[cluster]\nregion = \"x\"\n", &[]).unwrap_err();
    assert!(format!("{e:#}").contains("needs `node"), "{e:#}");
    let pg = ["--database-url", "postgres://db/banyan"];
    let s = with_file(
        "[cluster]\nregion = \"eu\"\nfanout = 0\nca_cert = \"/ca.pem\"\nca_key = \"/ca.key\"\n",
        &[
            &["--cluster-node", "b", "--cluster-link", "127.0.0.1:0"][..],
            &pg,
        ]
        .concat(),
    )
    .unwrap();
    let c = s.cluster_cfg.unwrap();
    assert_eq!((c.node.as_str(), c.region.as_str()), ("b", "eu"));
    assert_eq!((c.link, c.fanout), (addr("127.0.0.1:0"), 1));
    assert!(serve(&["--cluster-node", "a"]).is_err(), "needs postgres");
    assert!(serve(&[&["--cluster-node", "a b"][..], &pg].concat()).is_err());
    assert!(serve(&[]).unwrap().cluster_cfg.is_none());

    assert!(serve(&["--acme"]).is_err(), "acme needs public_host");
    assert!(serve(&["--acme-directory", "http://ca.test/dir"]).is_err());
    assert!(serve(&["--acme-challenge", "dns-01"]).is_err());
    let s = with_file("acme_challenge = \"http-01\"\nmax_domain_orders = 0\n", &[]).unwrap();
    assert_eq!(s.acme.acme_challenge, crate::acme::Challenge::Http01);
    assert_eq!(s.acme.max_domain_orders, 1);
}

#[test]
fn every_flag_is_a_key_and_every_key_a_flag() {
    let cmd = ServeArgs::augment_args(Command::new("serve"));
    let mut flags: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config")
        .map(|l| {
            let k = l.replace('-', "_");
            match k.strip_prefix("cluster_") {
                Some(rest) => ("cluster".to_string(), rest.to_string()),
                None => (String::new(), k),
            }
        })
        .collect();
    let mut keys: Vec<(String, String)> = Options::file_keys()
        .into_iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect();
    flags.sort();
    keys.sort();
    assert!(keys.len() > 50, "{keys:?}");
    assert_eq!(flags, keys);
    // Each flag's env variable is BANYAN_ and its name.
    for a in cmd.get_arguments() {
        let long = a.get_long().unwrap();
        let env = format!("BANYAN_{}", long.replace('-', "_").to_uppercase());
        assert_eq!(a.get_env(), Some(std::ffi::OsStr::new(&env)), "--{long}");
    }
}
