//! A running node: its shared state, its listeners, its lifetime.
//!
//! Start-up order: data dir (0700) → store → credentials → certificates →
//! bind every listener (port 0 allowed) → key table → serve → print the
//! ready line on stdout → wait for SIGTERM/Ctrl-C → stop accepting → exit.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use banyan_relay::access::KeyTable;
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig, StreamState};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::secret;
use crate::store::Store;
use crate::tls::{self, SniResolver};

pub use boot::credentials_path;
use boot::{bootstrap, prepare_data_dir, ready_line, wait_for_signal};

mod boot;
mod keysync;
mod status;

/// The addresses the node actually listens on (real ports, even when the
/// settings said port 0).
#[derive(Debug, Clone)]
pub struct Addrs {
    pub http: SocketAddr,
    pub rtmp: Option<SocketAddr>,
    pub rtmps: SocketAddr,
    pub srt: SocketAddr,
    /// The metrics listener.
    pub metrics: SocketAddr,
    /// The HTTPS listener, when on.
    pub https: Option<SocketAddr>,
    /// The WebRTC (WHEP) UDP socket.
    pub webrtc: SocketAddr,
}

/// `<data-dir>/credentials.json`, mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub account_id: String,
    pub api_token: String,
    pub admin_token: String,
    pub api: String,
}

/// The state every part of the node shares.
pub struct Node {
    pub settings: Settings,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub keys: Arc<KeyTable>,
    pub views: Arc<Views>,
    /// Caption channels present per stream and declared per input.
    pub captions: Arc<banyan_captions::Registry>,
    pub addrs: Addrs,
    pub tls: Arc<SniResolver>,
    pub tls_config: Arc<rustls::ServerConfig>,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
    pub auth_limiter: crate::api::AuthLimiter,
    /// Every live input as the key table has it (see `keysync`).
    access: Mutex<HashMap<String, keysync::Known>>,
    /// The domain list last loaded into the resolver.
    domains_stamp: Mutex<Option<Vec<(String, i64)>>>,
    /// Inputs seen connected since this node started (for `status`).
    seen_live: Mutex<HashSet<String>>,
    /// Per-stream series and how they are labelled (see `exposition`).
    pub exposition: crate::exposition::Exposition,
    /// The playback gate: inputs' signing requirements, public signing keys.
    pub playback: Arc<crate::playback::Gate>,
    /// Held while the key table changes; the marks of the shared-store
    /// refresh.
    rebuild: tokio::sync::Mutex<keysync::Marks>,
    /// Requests per second per API token.
    pub api_rate: crate::quota::RateLimiter,
    /// Live webhooks: ingest's events in, signed notifications out.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The simulcast outputs this node runs (see `outputs`).
    pub outputs: Arc<crate::outputs::Outputs>,
    /// Custom domains' certificates and proofs (see `acme`).
    pub acme: Arc<crate::acme::Acme>,
}

impl Node {
    /// The host written into URLs: `--public-host`, else the bound address.
    fn host(&self, addr: SocketAddr) -> String {
        if let Some(h) = &self.settings.general.public_host {
            return h.clone();
        }
        let ip = if addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    }

    /// `host:port` for a listener, as written into URLs.
    pub fn authority(&self, addr: SocketAddr) -> String {
        format!("{}:{}", self.host(addr), addr.port())
    }

    /// The base URL of the HTTP API (HTTPS when that listener is on).
    pub fn api_url(&self) -> String {
        match self.addrs.https {
            Some(a) => format!("https://{}", self.authority(a)),
            None => format!("http://{}", self.authority(self.addrs.http)),
        }
    }

    /// Reload the public playback signing keys into the gate.
    pub async fn reload_signing_keys(&self) -> anyhow::Result<()> {
        let keys = self
            .store
            .public_signing_keys()
            .await
            .context("loading signing keys")?;
        self.playback.set_keys(keys);
        Ok(())
    }

    /// Reload the active custom ingest domains (and the node's own ACME
    /// certificate) into the certificate resolver, only when the stored
    /// list changed. A domain that is not `active` is not served by SNI
    /// and binds no keys.
    pub async fn reload_domains(&self) -> anyhow::Result<()> {
        let rows = self.store.list_domains(None).await?;
        let mut stamp: Vec<(String, i64)> = rows
            .iter()
            .filter(|d| d.status == crate::acme::plan::ACTIVE)
            .map(|d| (d.domain.clone(), d.modified.max(d.created)))
            .collect();
        stamp.sort();
        {
            let mut last = self.domains_stamp.lock();
            if last.as_ref() == Some(&stamp) {
                return Ok(());
            }
            *last = Some(stamp);
        }
        let mut map = HashMap::new();
        for d in rows {
            if d.status != crate::acme::plan::ACTIVE || d.cert_pem.is_empty() {
                continue;
            }
            let key = match self.acme.sealer.open(&d.key_pem) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(domain = %d.domain, "unusable stored key: {e:#}");
                    continue;
                }
            };
            match tls::certified_key(d.cert_pem.as_bytes(), key.as_bytes()) {
                Ok(ck) if d.account_id == crate::acme::OWN => {
                    if self.settings.acme.acme {
                        self.tls.set_own(ck);
                    }
                }
                Ok(ck) => {
                    map.insert(d.domain.to_ascii_lowercase(), (d.account_id, Arc::new(ck)));
                }
                Err(e) => tracing::warn!(domain = %d.domain, "unusable stored certificate: {e:#}"),
            }
        }
        self.tls.set_domains(map);
        Ok(())
    }

    /// On a store shared with other nodes, pick up their changes.
    async fn refresh_shared(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // In an outage the keys and domains last loaded stay in force.
            let r = match self.refresh_keys().await {
                Ok(()) => self.reload_domains().await,
                Err(e) => Err(e),
            };
            let r = match r {
                Ok(()) => crate::acme::sync_challenges(&self).await,
                Err(e) => Err(e),
            };
            let r = match r {
                Ok(()) => self.reload_signing_keys().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => self.store.note_ok(),
                Err(e) => self.store.note_failure("refreshing keys and domains", &e),
            }
        }
    }

    /// The uids of every live input (from the last rebuild).
    pub fn input_uids(&self) -> Vec<String> {
        self.access.lock().keys().cloned().collect()
    }

    /// Whether `uid` is a live input.
    pub fn is_input(&self, uid: &str) -> bool {
        self.access.lock().contains_key(uid)
    }

    /// The `status` field of a live input.
    pub fn status(&self, uid: &str) -> Option<&'static str> {
        match self.hub.state(uid) {
            StreamState::Live => {
                self.seen_live.lock().insert(uid.to_string());
                Some("connected")
            }
            StreamState::Reconnecting => {
                self.seen_live.lock().insert(uid.to_string());
                Some("reconnecting")
            }
            StreamState::Idle => self
                .seen_live
                .lock()
                .contains(uid)
                .then_some("client_disconnect"),
        }
    }

    /// Forget an input's connection history (deletion).
    pub fn forget(&self, uid: &str) {
        self.seen_live.lock().remove(uid);
    }

    /// Note which inputs have been connected, so a short session between two
    /// API calls still shows as `client_disconnect` afterwards.
    async fn watch_status(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recorded = status::Recorded::default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let uids: Vec<String> = self.access.lock().keys().cloned().collect();
            for uid in uids {
                if self.hub.state(&uid) != StreamState::Idle {
                    self.seen_live.lock().insert(uid);
                }
            }
            recorded.record(&self).await;
        }
    }
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

/// Run `banyan serve` until SIGTERM or Ctrl-C.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
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
    prepare_data_dir(&settings.general.data_dir)?;
    let data_dir = settings.general.data_dir.canonicalize()?;
    let store = match &settings.general.database_url {
        Some(url) => Store::open(url).await?,
        None => Store::open_sqlite(&data_dir).await?,
    };
    let creds_path = data_dir.join("credentials.json");
    let first_run = !creds_path.exists();
    let mut creds = bootstrap(&store, &creds_path, settings.cluster_cfg.is_some()).await?;

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

    let http = TcpListener::bind(settings.net.http)
        .await
        .with_context(|| format!("binding HTTP {}", settings.net.http))?;
    let rtmp = match settings.net.plain_rtmp() {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding RTMP {a}"))?,
        ),
        None => None,
    };
    let rtmps = TcpListener::bind(settings.net.rtmps)
        .await
        .with_context(|| format!("binding RTMPS {}", settings.net.rtmps))?;
    let metrics_listener = TcpListener::bind(settings.net.metrics)
        .await
        .with_context(|| format!("binding metrics {}", settings.net.metrics))?;
    let exposition = crate::exposition::Exposition::new(
        settings.observe.metrics_per_stream,
        crate::exposition::load_key(&data_dir)?,
    );
    let https = match settings.net.https {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding HTTPS {a}"))?,
        ),
        None => None,
    };
    let outputs = crate::outputs::Outputs::new(
        banyan_egress::push::PushConfig {
            roots: Arc::new(
                crate::outputs::roots(settings.hooks.outputs_ca.as_deref())
                    .context("loading the trusted roots of outputs")?,
            ),
            allow_private: settings.hooks.outputs_allow_private,
            ..Default::default()
        },
        settings.cluster_cfg.is_some(),
    );
    let hub = Hub::new(HubConfig {
        reconnect_window: settings.general.reconnect_window,
        ..HubConfig::default()
    });
    let keys = Arc::new(KeyTable::new());
    let views = Views::new();
    let captions = banyan_captions::Registry::new();
    let webhooks = crate::webhooks::Webhooks::new();
    crate::webhooks::set_roots(
        &webhooks,
        crate::webhooks::load_roots(settings.hooks.webhook_ca_file.as_deref())
            .context("loading the CA certificates for webhooks")?,
    );
    let ctx = banyan_ingest::Context {
        hub: hub.clone(),
        keys: keys.clone(),
        views: views.clone(),
        captions: captions.clone(),
        admission: banyan_ingest::admission::Admission::new(
            {
                // Ingest learns a custom domain's account from the resolver.
                let resolver = resolver.clone();
                Arc::new(move |name: &str| resolver.account_of(name))
            },
            banyan_ingest::admission::FailLimit {
                max: settings.limits.auth_fail_max,
                window: settings.limits.auth_fail_window,
            },
        ),
        events: webhooks.ingest_events(),
    };
    let shutdown = CancellationToken::new();
    // Binds now (port 0 allowed) and serves in the background. The key
    // table is empty until the rebuild below: until then SRT refuses.
    let srt = banyan_ingest::srt::serve(
        settings.net.srt,
        banyan_ingest::srt::SrtConfig {
            max_connections: settings.limits.max_connections,
            max_per_address: settings.limits.max_connections_per_address,
            ..Default::default()
        },
        ctx.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("binding SRT {}", settings.net.srt))?;
    let webrtc = banyan_webrtc::WebRtc::bind(crate::webrtc::config(&settings))
        .await
        .with_context(|| format!("binding WebRTC {}", settings.net.webrtc))?;
    let addrs = Addrs {
        webrtc: webrtc.local_addr(),
        http: http.local_addr()?,
        rtmp: rtmp.as_ref().map(|l| l.local_addr()).transpose()?,
        rtmps: rtmps.local_addr()?,
        srt,
        metrics: metrics_listener.local_addr()?,
        https: https.as_ref().map(|l| l.local_addr()).transpose()?,
    };
    let settings_rate = (settings.quotas.api_rate, settings.quotas.api_burst);
    let acme = crate::acme::Acme::new(settings.acme.clone())?;
    let node = Arc::new(Node {
        settings,
        store,
        hub,
        keys,
        views,
        captions,
        addrs,
        tls: resolver,
        tls_config,
        metrics,
        shutdown: shutdown.clone(),
        auth_limiter: crate::api::AuthLimiter::default(),
        access: Mutex::new(HashMap::new()),
        domains_stamp: Mutex::new(None),
        seen_live: Mutex::new(HashSet::new()),
        exposition,
        playback: Arc::new(crate::playback::Gate::default()),
        rebuild: tokio::sync::Mutex::new(keysync::Marks::default()),
        api_rate: crate::quota::RateLimiter::new(settings_rate.0, settings_rate.1),
        webhooks,
        outputs,
        acme,
    });
    node.rebuild_keys().await?;
    node.reload_domains().await?;
    node.reload_signing_keys().await?;
    // HLS session ids are signed with a secret of the whole cluster, so a
    // viewer's session is the same on every node.
    let session_secret = node
        .store
        .cluster_secret("hls_session", &secret::new_secret())
        .await
        .context("reading the HLS session secret")?;

    creds.api = node.api_url();
    tls::write_private(
        &creds_path,
        serde_json::to_string_pretty(&creds)?.as_bytes(),
    )
    .context("writing credentials.json")?;
    tracing::info!(path = %creds_path.display(), "credentials (account id, API and admin tokens)");

    let mut tasks = tokio::task::JoinSet::new();
    let s = &node.settings;
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
            ctx.clone(),
            shutdown.clone(),
            limits.clone(),
        ));
    }
    tasks.spawn(serve_rtmp(
        rtmps,
        Some(node.tls_config.clone()),
        ctx.clone(),
        shutdown.clone(),
        banyan_ingest::rtmp::Limits {
            acme_tls: Some(tls::challenge_config(node.tls.clone())?),
            ..limits
        },
    ));
    tasks.spawn(crate::acme::run(node.clone()));
    tasks.spawn(node.clone().watch_status());
    if node.settings.general.database_url.is_some() {
        tasks.spawn(node.clone().refresh_shared(crate::acme::SHARED_REFRESH));
    }
    tasks.spawn(crate::analytics::run(node.clone()));
    tasks.spawn(crate::webhooks::run(node.clone()));
    tasks.spawn(crate::analytics::ingest_stats::run(node.clone()));
    let cluster = match node.settings.cluster_cfg.clone() {
        Some(cfg) => Some(crate::cluster::Cluster::start(node.clone(), cfg).await?),
        None => None,
    };
    if let Some(c) = &cluster {
        node.outputs.set_origin_check(c.origin_check());
    }
    tasks.spawn(node.outputs.clone().run(node.clone()));
    let hls = banyan_egress::hls::HlsService::new(
        node.hub.clone(),
        node.views.clone(),
        banyan_egress::hls::HlsConfig {
            fetchable: cluster.as_ref().map(|c| c.fetchable()),
            captions: Arc::new(banyan_egress::hls::RegistryCaptions::new(
                node.captions.clone(),
            )),
            access: node.playback.clone(),
            session_secret: Some(Arc::from(session_secret.as_bytes())),
            sessions_per_address: node.settings.limits.hls_sessions_per_address,
            ..banyan_egress::hls::HlsConfig::default()
        },
    );
    let webrtc = webrtc.start(crate::webrtc::context(&node));
    let mut app = crate::api::router(node.clone())
        .merge(webrtc.router())
        .merge(crate::playback::api::router(node.clone()))
        .merge(hls.router())
        .merge(crate::openapi::router());
    if let Some(c) = &cluster {
        app = app.merge(c.router());
    }
    let http_limits = crate::httpd::HttpLimits {
        header_timeout: node.settings.limits.http_header_timeout,
        max_connections: node.settings.limits.max_connections,
        body_timeout: node.settings.limits.http_body_timeout,
        write_timeout: node.settings.limits.http_write_timeout,
        max_per_address: node.settings.limits.max_connections_per_address,
        trusted_proxies: node.settings.trusted_proxies.clone(),
    };
    let metrics_limits = crate::httpd::HttpLimits {
        max_connections: node.settings.limits.max_connections.min(64),
        ..http_limits.clone()
    };
    if let Some(l) = https {
        tasks.spawn(crate::httpd::serve_with(
            l,
            app.clone(),
            http_limits.clone(),
            Some(https_config(&node.tls)?),
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
        crate::exposition::router(node.clone()),
        metrics_limits,
        shutdown.clone(),
    ));

    let a = &node.addrs;
    tracing::info!(http = %a.http, rtmp = ?a.rtmp, rtmps = %a.rtmps, srt = %a.srt, webrtc = %a.webrtc, metrics = %a.metrics, "listening");
    ready_line(&node, &creds_path);
    tracing::info!("{}", crate::welcome::text(&node, &creds_path, first_run));

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
    node.store.close().await;
    Ok(())
}
