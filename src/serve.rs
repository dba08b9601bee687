//! The composition root: `banyan serve` builds every part of a node and
//! wires them, here and nowhere else.
//!
//! Start-up order: data dir (0700) → store → credentials → certificates →
//! bind every listener (port 0 allowed) → the shared parts → key table →
//! each subsystem's context → serve → print the ready line on stdout →
//! wait for SIGTERM/Ctrl-C → stop accepting → exit.
//!
//! Only this module knows every part. Each subsystem gets a context with
//! what it uses and nothing else (`api::Context`, `analytics::Context`,
//! `cluster::Context`, ...), as ingest gets `banyan_ingest::Context`; no
//! subsystem reaches a sibling through a shared node object.
//!
//! Adding a subsystem: build its context in [`serve`] from [`Parts`], spawn
//! its tasks into `tasks`, bind its listener with the others (so the ready
//! line has its real address) and merge its routes into `app` if it
//! answers HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::node::{Addrs, Urls};
use crate::secret;
use crate::store::Store;
use crate::tls::{self, SniResolver};
use boot::{bootstrap, prepare_data_dir, ready_line, wait_for_signal};

mod boot;
mod parts;
#[cfg(test)]
pub(crate) mod testkit;

pub use parts::Parts;

/// The plain (`tls = None`) or TLS RTMP listener.
async fn serve_rtmp(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    ctx: banyan_ingest::Context,
    shutdown: CancellationToken,
    limits: banyan_ingest::rtmp::Limits,
) {
    let which = if tls.is_some() { "RTMPS" } else { "RTMP" };
    if let Err(e) = banyan_ingest::rtmp::serve_with(listener, tls, ctx, shutdown, limits).await {
        tracing::error!("{which} listener stopped: {e}");
    }
}

/// The HTTPS server config: the RTMPS certificates (the node's own, custom
/// domains by SNI), offering HTTP/1.1.
fn https_config(resolver: &Arc<SniResolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = (*tls::server_config(resolver.clone())?).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// How often the metrics recorder folds histogram samples into summaries.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Install the global metrics recorder, with its upkeep task.
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples wait in the recorder until an upkeep folds them into
    // their summaries; without one they pile up between scrapes (or forever
    // when nothing scrapes), so memory would grow with the traffic.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(metrics)
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} {addr}"))
}

/// On a store shared with other nodes, pick up their changes: input keys,
/// domains, challenge certificates, signing keys.
async fn refresh_shared(p: Parts, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = p.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // In an outage the keys and domains last loaded stay in force.
        let r = match p.inputs.refresh_keys().await {
            Ok(()) => p.domains.reload().await,
            Err(e) => Err(e),
        };
        let r = match r {
            Ok(()) => crate::acme::sync_challenges(&p.store, &p.tls).await,
            Err(e) => Err(e),
        };
        let r = match r {
            Ok(()) => p.playback.reload(&p.store).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => p.store.note_ok(),
            Err(e) => p.store.note_failure("refreshing keys and domains", &e),
        }
    }
}

/// Run `banyan serve` until SIGTERM or Ctrl-C.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    prepare_data_dir(&settings.general.data_dir)?;
    let data_dir = settings.general.data_dir.canonicalize()?;
    let store = match &settings.general.database_url {
        Some(url) => Store::open(url).await?,
        None => Store::open_sqlite(&data_dir).await?,
    };
    let shared_store = settings.general.database_url.is_some();
    let clustered = settings.cluster_cfg.is_some();
    let creds_path = crate::node::credentials_path(&data_dir);
    let first_run = !creds_path.exists();
    let mut creds = bootstrap(&store, &creds_path, clustered).await?;

    let (cert, key) = tls::node_cert_files(
        &data_dir,
        settings.tls.pair().as_ref(),
        settings.general.public_host.as_deref(),
    )?;
    let node_key = tls::certified_key(
        &std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?,
        &std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?,
    )?;
    let resolver = SniResolver::new(node_key);
    let tls_config = tls::server_config(resolver.clone())?;

    // ---- listeners (SRT binds below, with its context)
    let net = &settings.net;
    let http = bind(net.http, "HTTP").await?;
    let rtmp = match net.plain_rtmp() {
        Some(a) => Some(bind(a, "RTMP").await?),
        None => None,
    };
    let rtmps = bind(net.rtmps, "RTMPS").await?;
    let metrics_listener = bind(net.metrics, "metrics").await?;
    let https = match net.https {
        Some(a) => Some(bind(a, "HTTPS").await?),
        None => None,
    };

    // ---- the shared parts
    let shutdown = CancellationToken::new();
    let parts = Parts::build(&settings, store, &data_dir, resolver, shutdown.clone())?;

    // ---- ingest (RTMP, RTMPS, SRT)
    let ingest = parts.ingest_context(&settings);
    // Binds now (port 0 allowed) and serves in the background. The key
    // table is empty until the rebuild below: until then SRT refuses.
    let srt = banyan_ingest::srt::serve(
        net.srt,
        banyan_ingest::srt::SrtConfig {
            max_connections: settings.limits.max_connections,
            max_per_address: settings.limits.max_connections_per_address,
            ..Default::default()
        },
        ingest.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("binding SRT {}", net.srt))?;
    // ---- WebRTC (WHEP): one UDP socket for every session
    let webrtc = banyan_webrtc::WebRtc::bind(crate::webrtc::config(&settings))
        .await
        .with_context(|| format!("binding WebRTC {}", net.webrtc))?;
    let urls = Urls {
        addrs: Addrs {
            http: http.local_addr()?,
            rtmp: rtmp.as_ref().map(|l| l.local_addr()).transpose()?,
            rtmps: rtmps.local_addr()?,
            srt,
            webrtc: webrtc.local_addr(),
            metrics: metrics_listener.local_addr()?,
            https: https.as_ref().map(|l| l.local_addr()).transpose()?,
        },
        public_host: settings.general.public_host.clone(),
    };

    parts.inputs.rebuild_keys().await?;
    parts.domains.reload().await?;
    parts.playback.reload(&parts.store).await?;
    // HLS session ids are signed with a secret of the whole cluster, so a
    // viewer's session is the same on every node.
    let session_secret = parts
        .store
        .cluster_secret("hls_session", &secret::new_secret())
        .await
        .context("reading the HLS session secret")?;

    creds.api = urls.api_url();
    tls::write_private(
        &creds_path,
        serde_json::to_string_pretty(&creds)?.as_bytes(),
    )
    .context("writing credentials.json")?;
    tracing::info!(path = %creds_path.display(), "credentials (account id, API and admin tokens)");

    let mut tasks = tokio::task::JoinSet::new();
    let s = &settings;
    let limits = banyan_ingest::rtmp::Limits {
        handshake_timeout: s.limits.handshake_timeout,
        idle_timeout: s.limits.idle_timeout,
        max_connections: s.limits.max_connections,
        max_per_address: s.limits.max_connections_per_address,
        proxy_protocol: s.net.proxy_protocol,
        trusted_proxies: s.trusted_proxies.clone(),
        acme_tls: None,
    };
    if let Some(l) = rtmp {
        tasks.spawn(serve_rtmp(
            l,
            None,
            ingest.clone(),
            shutdown.clone(),
            limits.clone(),
        ));
    }
    tasks.spawn(serve_rtmp(
        rtmps,
        Some(tls_config),
        ingest.clone(),
        shutdown.clone(),
        banyan_ingest::rtmp::Limits {
            acme_tls: Some(tls::challenge_config(parts.tls.clone())?),
            ..limits
        },
    ));

    // ---- background subsystems
    tasks.spawn(crate::acme::run(Arc::new(parts.acme_context(s, &urls))));
    tasks.spawn(parts.inputs.clone().watch_status(shutdown.clone()));
    if shared_store {
        tasks.spawn(refresh_shared(parts.clone(), crate::acme::SHARED_REFRESH));
    }
    let analytics = Arc::new(parts.analytics_context(s));
    tasks.spawn(crate::analytics::run(analytics.clone()));
    tasks.spawn(crate::webhooks::run(Arc::new(parts.webhooks_context(s))));
    tasks.spawn(crate::analytics::ingest_stats::run(Arc::new(
        parts.ingest_stats_context(),
    )));
    tasks.spawn(crate::heap::trim_periodically(shutdown.clone()));
    let cluster = match s.cluster_cfg.clone() {
        Some(cfg) => Some(crate::cluster::Cluster::start(parts.cluster_context(&urls), cfg).await?),
        None => None,
    };
    if let Some(c) = &cluster {
        parts.outputs.set_origin_check(c.origin_check());
    }
    tasks.spawn(parts.outputs.clone().run(parts.outputs_context()));

    // ---- HTTP: one router for the HTTP and HTTPS listeners
    let hls = banyan_egress::hls::HlsService::new(
        parts.hub.clone(),
        parts.views.clone(),
        banyan_egress::hls::HlsConfig {
            fetchable: cluster.as_ref().map(|c| c.fetchable()),
            captions: Arc::new(banyan_egress::hls::RegistryCaptions::new(
                parts.captions.clone(),
            )),
            access: parts.playback.clone(),
            session_secret: Some(Arc::from(session_secret.as_bytes())),
            sessions_per_address: s.limits.hls_sessions_per_address,
            ..banyan_egress::hls::HlsConfig::default()
        },
    );
    let metrics_page = Arc::new(parts.metrics_context(metrics));
    let api = Arc::new(parts.api_context(s, &urls, metrics_page.clone(), analytics));
    let signing = Arc::new(parts.signing_context());
    let webrtc =
        webrtc.start(parts.webrtc_context(cluster.as_ref().map(|c| c.fetchable()), ingest.clone()));
    let mut app = crate::api::router(api)
        .merge(crate::api::signing::router(signing))
        .merge(webrtc.router())
        .merge(hls.router())
        .merge(crate::openapi::router());
    if let Some(c) = &cluster {
        app = app.merge(c.router());
    }
    let http_limits = crate::httpd::HttpLimits {
        header_timeout: s.limits.http_header_timeout,
        max_connections: s.limits.max_connections,
        body_timeout: s.limits.http_body_timeout,
        write_timeout: s.limits.http_write_timeout,
        max_per_address: s.limits.max_connections_per_address,
        trusted_proxies: s.trusted_proxies.clone(),
    };
    let metrics_limits = crate::httpd::HttpLimits {
        max_connections: s.limits.max_connections.min(64),
        ..http_limits.clone()
    };
    if let Some(l) = https {
        tasks.spawn(crate::httpd::serve_with(
            l,
            app.clone(),
            http_limits.clone(),
            Some(https_config(&parts.tls)?),
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::httpd::serve(
        http,
        app,
        http_limits,
        shutdown.clone(),
    ));
    // Scrapers are few: a small cap keeps this listener from being a way
    // around the public one's limit.
    tasks.spawn(crate::httpd::serve(
        metrics_listener,
        crate::exposition::router(metrics_page),
        metrics_limits,
        shutdown.clone(),
    ));

    let a = &urls.addrs;
    tracing::info!(http = %a.http, rtmp = ?a.rtmp, rtmps = %a.rtmps, srt = %a.srt, webrtc = %a.webrtc, metrics = %a.metrics, "listening");
    ready_line(&urls, &s.general.data_dir, &creds_path);
    tracing::info!(
        "{}",
        crate::welcome::text(&urls, &settings, &creds_path, first_run)
    );

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections");
    shutdown.cancel();
    if let Some(c) = &cluster {
        c.leave().await;
    }
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some sessions did not end within 5 s; leaving anyway");
    }
    parts.store.close().await;
    Ok(())
}
