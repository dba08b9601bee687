//! The parts of a node that more than one subsystem shares, and the
//! context each subsystem is handed: what it uses, taken from the parts.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use banyan_relay::access::KeyTable;
use banyan_relay::views::Views;
use banyan_relay::{Hub, HubConfig};
use tokio_util::sync::CancellationToken;

use crate::acme::{Acme, Domains};
use crate::auth::Auth;
use crate::config::Settings;
use crate::inputs::Inputs;
use crate::node::Urls;
use crate::store::Store;
use crate::tls::SniResolver;

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

impl Parts {
    /// Build the shared parts over an open store and the node's resolver.
    pub fn build(
        settings: &Settings,
        store: Store,
        data_dir: &Path,
        tls: Arc<SniResolver>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Parts> {
        let clustered = settings.cluster_cfg.is_some();
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
        Ok(Parts {
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
            domains: Domains::new(store.clone(), tls.clone(), acme.clone()),
            auth: Auth::new(
                store.clone(),
                crate::quota::RateLimiter::new(settings.quotas.api_rate, settings.quotas.api_burst),
            ),
            exposition: Arc::new(crate::exposition::Exposition::new(
                settings.observe.metrics_per_stream,
                crate::exposition::load_key(data_dir)?,
            )),
            store,
            hub,
            keys,
            views: Views::new(),
            captions,
            playback,
            webhooks,
            acme,
            tls,
            inputs,
            shutdown,
        })
    }

    /// Ingest's context (RTMP, RTMPS, SRT).
    pub fn ingest_context(&self, settings: &Settings) -> banyan_ingest::Context {
        banyan_ingest::Context {
            hub: self.hub.clone(),
            keys: self.keys.clone(),
            views: self.views.clone(),
            captions: self.captions.clone(),
            admission: banyan_ingest::admission::Admission::new(
                {
                    // Ingest learns a custom domain's account from the resolver.
                    let resolver = self.tls.clone();
                    Arc::new(move |name: &str| resolver.account_of(name))
                },
                banyan_ingest::admission::FailLimit {
                    max: settings.limits.auth_fail_max,
                    window: settings.limits.auth_fail_window,
                },
            ),
            events: self.webhooks.ingest_events(),
        }
    }

    pub fn acme_context(&self, settings: &Settings, urls: &Urls) -> crate::acme::Context {
        crate::acme::Context {
            store: self.store.clone(),
            acme: self.acme.clone(),
            tls: self.tls.clone(),
            domains: self.domains.clone(),
            shared: settings.general.database_url.is_some(),
            public_host: settings.general.public_host.clone(),
            http: urls.addrs.http,
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn analytics_context(&self, settings: &Settings) -> crate::analytics::Context {
        crate::analytics::Context {
            store: self.store.clone(),
            views: self.views.clone(),
            auth: self.auth.clone(),
            flush: settings.observe.analytics_flush,
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn ingest_stats_context(&self) -> crate::analytics::ingest_stats::Context {
        crate::analytics::ingest_stats::Context {
            inputs: self.inputs.clone(),
            hub: self.hub.clone(),
            exposition: self.exposition.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn webhooks_context(&self, settings: &Settings) -> crate::webhooks::Context {
        crate::webhooks::Context {
            store: self.store.clone(),
            webhooks: self.webhooks.clone(),
            hub: self.hub.clone(),
            hooks: settings.hooks.clone(),
            shared: settings.general.database_url.is_some(),
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn cluster_context(&self, urls: &Urls) -> crate::cluster::Context {
        crate::cluster::Context {
            store: self.store.clone(),
            hub: self.hub.clone(),
            views: self.views.clone(),
            inputs: self.inputs.clone(),
            auth: self.auth.clone(),
            http: urls.addrs.http,
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn outputs_context(&self) -> crate::outputs::Context {
        crate::outputs::Context {
            store: self.store.clone(),
            inputs: self.inputs.clone(),
            hub: self.hub.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn metrics_context(
        &self,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> crate::exposition::Context {
        crate::exposition::Context {
            metrics,
            exposition: self.exposition.clone(),
            inputs: self.inputs.clone(),
        }
    }

    pub fn api_context(
        &self,
        settings: &Settings,
        urls: &Urls,
        metrics: Arc<crate::exposition::Context>,
        analytics: Arc<crate::analytics::Context>,
    ) -> crate::api::Context {
        crate::api::Context {
            store: self.store.clone(),
            auth: self.auth.clone(),
            inputs: self.inputs.clone(),
            urls: urls.clone(),
            hub: self.hub.clone(),
            views: self.views.clone(),
            captions: self.captions.clone(),
            playback: self.playback.clone(),
            outputs: self.outputs.clone(),
            acme: self.acme.clone(),
            domains: self.domains.clone(),
            quotas: settings.quotas.clone(),
            hooks: settings.hooks.clone(),
            data_dir: settings.general.data_dir.clone(),
            metrics,
            analytics,
        }
    }

    /// WHEP playback: the hub, viewer counts, the playback gate, and what
    /// the cluster can fetch.
    /// WHEP viewers and WHIP publishers; `ingest` is the context RTMP and
    /// SRT publish through (its failed-attempt limiter shared with them).
    pub fn webrtc_context(
        &self,
        fetchable: Option<banyan_egress::hls::Fetchable>,
        ingest: banyan_ingest::Context,
    ) -> banyan_webrtc::Context {
        banyan_webrtc::Context {
            hub: self.hub.clone(),
            views: self.views.clone(),
            access: self.playback.clone(),
            shutdown: self.shutdown.clone(),
            fetchable,
            ingest: Some(ingest),
            captions: self.captions.clone(),
        }
    }

    /// The signing key and token endpoints.
    pub fn signing_context(&self) -> crate::api::signing::Context {
        crate::api::signing::Context {
            store: self.store.clone(),
            auth: self.auth.clone(),
            playback: self.playback.clone(),
        }
    }
}
