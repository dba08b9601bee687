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
use banyan_relay::access::KeyTable;
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::acme::{Acme, Domains};
use crate::auth::Auth;
use crate::config::Settings;
use crate::inputs::Inputs;
use crate::node::{bootstrap, prepare_data_dir, ready_line, wait_for_signal, Addrs, Urls};
use crate::secret;
use crate::store::Store;
use crate::tls::{self, SniResolver};

/// The parts more than one subsystem shares, built once.
#[derive(Clone)]
pub struct Parts {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub keys: Arc<KeyTable>,
    pub views: Arc<Views>,
    /// Caption channels present per stream and declared per input.
    pub captions: Arc<banyan_captions::Registry>,
    /// The playback gate: inputs' signing requirements, public signing keys.
    pub playback: Arc<crate::playback::Gate>,
    /// Live webhooks: ingest's events in, signed notifications out.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The simulcast outputs this node runs.
    pub outputs: Arc<crate::outputs::Outputs>,
    /// Custom domains' certificates and proofs.
    pub acme: Arc<Acme>,
    /// Stored certificates into the SNI resolver.
    pub domains: Arc<Domains>,
    /// The certificates of RTMPS and HTTPS (the node's own, custom domains
    /// by SNI, ACME challenges).
    pub tls: Arc<SniResolver>,
    /// The live inputs: key table and statuses.
    pub inputs: Arc<Inputs>,
    /// The one token check of REST, GraphQL and the cluster's endpoints.
    pub auth: Arc<Auth>,
    /// Per-stream series and how they are labelled.
    pub exposition: Arc<crate::exposition::Exposition>,
    pub shutdown: CancellationToken,
}

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
    let hub = Hub::new(HubConfig {
        reconnect_window: settings.general.reconnect_window,
        ..HubConfig::default()
    });
    let webhooks = crate::webhooks::Webhooks::new();
    crate::webhooks::set_roots(
        &webhooks,
        crate::webhooks::load_roots(settings.hooks.webhook_ca_file.as_deref())
            .context("loading the CA certificates for webhooks")?,
    );
    let acme = Acme::new(settings.acme.clone())?;
    let shutdown = CancellationToken::new();
    let keys = Arc::new(KeyTable::new());
    let captions = banyan_captions::Registry::new();
    let playback = Arc::new(crate::playback::Gate::default());
    let inputs = Inputs::new(crate::inputs::Parts {
        store: store.clone(),
        hub: hub.clone(),
        keys: keys.clone(),
        playback: playback.clone(),
        captions: captions.clone(),
        webhooks: webhooks.clone(),
        clustered,
    });
    let parts = Parts {
        outputs: crate::outputs::Outputs::new(
            banyan_egress::push::PushConfig {
                roots: Arc::new(
                    crate::outputs::roots(settings.hooks.outputs_ca.as_deref())
                        .context("loading the trusted roots of outputs")?,
                ),
                allow_private: settings.hooks.outputs_allow_private,
                ..Default::default()
            },
            clustered,
        ),
        domains: Domains::new(store.clone(), resolver.clone(), acme.clone()),
        auth: Auth::new(
            store.clone(),
            crate::quota::RateLimiter::new(settings.quotas.api_rate, settings.quotas.api_burst),
        ),
        exposition: Arc::new(crate::exposition::Exposition::new(
            settings.observe.metrics_per_stream,
            crate::exposition::load_key(&data_dir)?,
        )),
        store,
        hub,
        keys,
        views: Views::new(),
        captions,
        playback,
        webhooks,
        acme,
        tls: resolver,
        inputs,
        shutdown: shutdown.clone(),
    };

    // ---- ingest (RTMP, RTMPS, SRT)
    let ingest = banyan_ingest::Context {
        hub: parts.hub.clone(),
        keys: parts.keys.clone(),
        views: parts.views.clone(),
        captions: parts.captions.clone(),
        admission: banyan_ingest::admission::Admission::new(
            {
                // Ingest learns a custom domain's account from the resolver.
                let resolver = parts.tls.clone();
                Arc::new(move |name: &str| resolver.account_of(name))
            },
            banyan_ingest::admission::FailLimit {
                max: settings.limits.auth_fail_max,
                window: settings.limits.auth_fail_window,
            },
        ),
        events: parts.webhooks.ingest_events(),
    };
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
    let urls = Urls {
        addrs: Addrs {
            http: http.local_addr()?,
            rtmp: rtmp.as_ref().map(|l| l.local_addr()).transpose()?,
            rtmps: rtmps.local_addr()?,
            srt,
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
        ingest,
        shutdown.clone(),
        banyan_ingest::rtmp::Limits {
            acme_tls: Some(tls::challenge_config(parts.tls.clone())?),
            ..limits
        },
    ));

    // ---- background subsystems
    tasks.spawn(crate::acme::run(Arc::new(crate::acme::Context {
        store: parts.store.clone(),
        acme: parts.acme.clone(),
        tls: parts.tls.clone(),
        domains: parts.domains.clone(),
        shared: shared_store,
        public_host: s.general.public_host.clone(),
        http: urls.addrs.http,
        shutdown: shutdown.clone(),
    })));
    tasks.spawn(parts.inputs.clone().watch_status(shutdown.clone()));
    if shared_store {
        tasks.spawn(refresh_shared(parts.clone(), crate::acme::SHARED_REFRESH));
    }
    let analytics = Arc::new(crate::analytics::Context {
        store: parts.store.clone(),
        views: parts.views.clone(),
        auth: parts.auth.clone(),
        flush: s.observe.analytics_flush,
        shutdown: shutdown.clone(),
    });
    tasks.spawn(crate::analytics::run(analytics.clone()));
    tasks.spawn(crate::webhooks::run(Arc::new(crate::webhooks::Context {
        store: parts.store.clone(),
        webhooks: parts.webhooks.clone(),
        hub: parts.hub.clone(),
        hooks: s.hooks.clone(),
        shared: shared_store,
        shutdown: shutdown.clone(),
    })));
    tasks.spawn(crate::analytics::ingest_stats::run(Arc::new(
        crate::analytics::ingest_stats::Context {
            inputs: parts.inputs.clone(),
            hub: parts.hub.clone(),
            exposition: parts.exposition.clone(),
            shutdown: shutdown.clone(),
        },
    )));
    let cluster = match s.cluster_cfg.clone() {
        Some(cfg) => Some(
            crate::cluster::Cluster::start(
                crate::cluster::Context {
                    store: parts.store.clone(),
                    hub: parts.hub.clone(),
                    views: parts.views.clone(),
                    inputs: parts.inputs.clone(),
                    auth: parts.auth.clone(),
                    http: urls.addrs.http,
                    shutdown: shutdown.clone(),
                },
                cfg,
            )
            .await?,
        ),
        None => None,
    };
    if let Some(c) = &cluster {
        parts.outputs.set_origin_check(c.origin_check());
    }
    tasks.spawn(parts.outputs.clone().run(crate::outputs::Context {
        store: parts.store.clone(),
        inputs: parts.inputs.clone(),
        hub: parts.hub.clone(),
        shutdown: shutdown.clone(),
    }));

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
    let metrics_page = Arc::new(crate::exposition::Context {
        metrics,
        exposition: parts.exposition.clone(),
        inputs: parts.inputs.clone(),
    });
    let api = Arc::new(crate::api::Context {
        store: parts.store.clone(),
        auth: parts.auth.clone(),
        inputs: parts.inputs.clone(),
        urls: urls.clone(),
        hub: parts.hub.clone(),
        views: parts.views.clone(),
        captions: parts.captions.clone(),
        playback: parts.playback.clone(),
        outputs: parts.outputs.clone(),
        acme: parts.acme.clone(),
        domains: parts.domains.clone(),
        quotas: s.quotas.clone(),
        hooks: s.hooks.clone(),
        data_dir: s.general.data_dir.clone(),
        metrics: metrics_page.clone(),
        analytics,
    });
    let signing = Arc::new(crate::playback::api::Context {
        store: parts.store.clone(),
        auth: parts.auth.clone(),
        playback: parts.playback.clone(),
    });
    let mut app = crate::api::router(api)
        .merge(crate::playback::api::router(signing))
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
    tracing::info!(http = %a.http, rtmp = ?a.rtmp, rtmps = %a.rtmps, srt = %a.srt, metrics = %a.metrics, "listening");
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
