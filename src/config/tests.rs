use super::*;

#[test]
fn flags_win_over_file_and_defaults_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "http = \"127.0.0.1:9000\"\nrtmps = \"127.0.0.1:9001\"\nreconnect_window = 3\n",
    )
    .unwrap();
    let s = Settings::resolve(ServeArgs {
        config: Some(path),
        http: Some(addr("127.0.0.1:0")),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.http, addr("127.0.0.1:0"));
    assert_eq!(s.rtmps, addr("127.0.0.1:9001"));
    assert_eq!(s.rtmp, Some(addr("127.0.0.1:1935")));
    assert_eq!(s.reconnect_window, Duration::from_secs(3));
    assert_eq!(s.max_ingest_domains, 5);
    assert_eq!(s.metrics, addr("127.0.0.1:9090"));
    assert_eq!(s.metrics_per_stream, PerStream::Off);
    assert_eq!(s.max_inputs_per_account, 1000);
    assert_eq!(s.max_meta_bytes, 16384);
    assert_eq!((s.api_rate, s.api_burst), (50, 100));
}

#[test]
fn per_stream_metrics_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "metrics = \"127.0.0.1:9999\"\nmetrics_per_stream = \"hashed\"\n",
    )
    .unwrap();
    let s = Settings::resolve(ServeArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.metrics, addr("127.0.0.1:9999"));
    assert_eq!(s.metrics_per_stream, PerStream::Hashed);
    assert_eq!(s.log_format, LogFormat::Plain);
    let json = dir.path().join("json.toml");
    std::fs::write(&json, "log_format = \"json\"\n").unwrap();
    let s = Settings::resolve(ServeArgs {
        config: Some(json),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.log_format, LogFormat::Json);
}

#[test]
fn unknown_keys_and_public_plain_rtmp_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "htp = \"127.0.0.1:9000\"\n").unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    assert!(Settings::resolve(args).is_err());
    let public = ServeArgs {
        rtmp: Some(addr("0.0.0.0:1935")),
        ..Default::default()
    };
    assert!(Settings::resolve(public.clone()).is_err());
    let allowed = ServeArgs {
        allow_plain_rtmp_on_public: true,
        ..public
    };
    assert!(Settings::resolve(allowed).is_ok());
}

#[test]
fn proxies_deadlines_caps_and_https() {
    let s = Settings::resolve(ServeArgs::default()).unwrap();
    assert!(s.trusted_proxies.is_empty() && !s.proxy_protocol && s.https.is_none());
    assert_eq!(s.http_body_timeout, Duration::from_secs(30));
    assert_eq!(s.http_write_timeout, Duration::from_secs(30));
    assert_eq!(s.max_connections_per_address, 64);
    let s = Settings::resolve(ServeArgs {
        trusted_proxies: Some("10.0.0.0/8, 127.0.0.1".into()),
        proxy_protocol: true,
        https: Some(addr("127.0.0.1:0")),
        ..Default::default()
    })
    .unwrap();
    assert!(s.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
    assert!(s.proxy_protocol && s.https.is_some());
    let bad = ServeArgs {
        trusted_proxies: Some("10.0.0.0/40".into()),
        ..Default::default()
    };
    assert!(Settings::resolve(bad).is_err());
    let alone = ServeArgs {
        proxy_protocol: true,
        ..Default::default()
    };
    assert!(
        Settings::resolve(alone).is_err(),
        "PROXY headers need trusted proxies"
    );
}
