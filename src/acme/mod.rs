//! Custom domains' certificates: ACME orders and renewals (RFC 8555),
//! the proof of uploaded certificates' names, and the node's own
//! certificate with `--acme`.
//!
//! `plan` is the state machine (no IO); this module is its driver: every
//! second (or when woken by the API) it reads the domains, takes a lease
//! in the store on each one with work due (so one node of a cluster works
//! on a name at a time, and another takes over when that node dies), runs
//! the order, renewal or check, writes the row back and reloads the
//! certificates (every node loads them from the store).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

mod client;
mod domains;
pub mod plan;
mod seal;
pub mod verify;

pub use crate::config::{AcmeOptions, Challenge, LETS_ENCRYPT};
pub use domains::Domains;
pub use seal::Sealer;

use crate::store::{now_micros, DomainRow, Store};
use crate::tls::SniResolver;
use plan::{Due, Outcome};

/// The account of the node's own `--public-host` row.
pub const OWN: &str = "";
/// How long a lease on a domain's work lasts (an order is bounded well
/// below it).
const LEASE: i64 = 150 * 1_000_000;
/// Longest one order, renewal or check may run.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Jobs run at once on one node.
const MAX_JOBS: usize = 4;
/// The window of `max_domain_orders`.
const ORDER_WINDOW: Duration = Duration::from_secs(3600);
/// How often the nodes of a shared store refresh keys, domains and
/// challenge certificates.
pub const SHARED_REFRESH: Duration = Duration::from_secs(2);
/// Challenge answers older than this are dropped.
const CHALLENGE_TTL: i64 = 3600 * 1_000_000;

/// What the ACME driver uses.
pub struct Context {
    pub store: Store,
    pub acme: Arc<Acme>,
    /// Challenge certificates (TLS-ALPN-01) go here.
    pub tls: Arc<SniResolver>,
    pub domains: Arc<Domains>,
    /// The store is shared with other nodes (`--database-url`).
    pub shared: bool,
    /// `--public-host`: the node's own name with `--acme`.
    pub public_host: Option<String>,
    /// The HTTP listener (HTTP-01 checks of uploaded certificates).
    pub http: std::net::SocketAddr,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The ACME state of a node.
pub struct Acme {
    pub settings: AcmeOptions,
    pub sealer: Sealer,
    /// This process's lease holder id.
    holder: String,
    wake: Notify,
    busy: Mutex<HashSet<String>>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
    roots: Vec<reqwest::Certificate>,
    /// Per account: when its recent additions were made.
    orders: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Acme {
    pub fn new(settings: AcmeOptions) -> anyhow::Result<Arc<Acme>> {
        use anyhow::Context as _;
        let sealer = match &settings.secret_key_file {
            Some(p) => {
                Sealer::new(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            }
            None => Sealer::default(),
        };
        let roots = crate::webhooks::load_roots(settings.acme_ca.as_deref())
            .context("loading the CA certificates for the ACME server")?;
        Ok(Arc::new(Acme {
            settings,
            sealer,
            holder: crate::secret::new_secret(),
            wake: Notify::new(),
            busy: Mutex::new(HashSet::new()),
            account: tokio::sync::Mutex::new(None),
            roots,
            orders: Mutex::new(HashMap::new()),
        }))
    }

    /// Look at the domains now (after the API changed one).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Count an addition for `account`; false when it is over
    /// `max_domain_orders` in the last hour.
    pub fn allow_order(&self, account: &str) -> bool {
        let now = Instant::now();
        let mut orders = self.orders.lock();
        orders.retain(|_, q| q.back().is_some_and(|t| now - *t < ORDER_WINDOW));
        let q = orders.entry(account.to_string()).or_default();
        while q.front().is_some_and(|t| now - *t >= ORDER_WINDOW) {
            q.pop_front();
        }
        if q.len() >= self.settings.max_domain_orders as usize {
            metrics::counter!("banyan_domain_orders_refused_total").increment(1);
            return false;
        }
        q.push_back(now);
        true
    }

    async fn account(&self, node: &Context) -> anyhow::Result<instant_acme::Account> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let a = client::account(
            &node.store,
            &self.settings.acme_directory,
            self.settings.acme_email.as_deref(),
            &self.roots,
            &self.sealer,
        )
        .await?;
        *slot = Some(a.clone());
        Ok(a)
    }
}

/// Publishes challenge answers in the store (every node answers HTTP-01
/// from it and loads TLS-ALPN-01 certificates from it) and, for
/// TLS-ALPN-01, in this node's resolver at once.
struct Publisher<'a>(&'a Context);

impl client::Publish for Publisher<'_> {
    async fn http01(&self, domain: &str, token: &str, key_auth: &str) -> anyhow::Result<()> {
        self.0
            .store
            .put_challenge(&format!("http:{token}"), domain, key_auth)
            .await?;
        Ok(())
    }

    async fn tls_alpn01(&self, domain: &str, key_auth: &str) -> anyhow::Result<()> {
        self.0.tls.set_challenge(
            domain,
            Some(crate::tls::alpn_challenge_cert(domain, key_auth)?),
        );
        self.0
            .store
            .put_challenge(&format!("alpn:{domain}"), domain, key_auth)
            .await?;
        if self.0.shared {
            // The other nodes load challenge certificates with their
            // refresh of the shared store: let them have it before the CA
            // may connect to any of them.
            tokio::time::sleep(SHARED_REFRESH + Duration::from_millis(500)).await;
        }
        Ok(())
    }
}

/// Load TLS-ALPN-01 answers published by other nodes of a shared store.
pub async fn sync_challenges(store: &Store, tls: &SniResolver) -> anyhow::Result<()> {
    let stored = store.alpn_challenges().await?;
    let names: HashSet<&str> = stored.iter().map(|(d, _)| d.as_str()).collect();
    for name in tls.challenge_names() {
        if !names.contains(name.as_str()) {
            tls.set_challenge(&name, None);
        }
    }
    for (domain, key_auth) in &stored {
        if tls.challenge(domain).is_none() {
            tls.set_challenge(
                domain,
                Some(crate::tls::alpn_challenge_cert(domain, key_auth)?),
            );
        }
    }
    Ok(())
}

/// With `--acme`: the row of the node's own name (account [`OWN`]).
async fn ensure_own_row(node: &Context) -> anyhow::Result<()> {
    let Some(host) = node.public_host.as_deref() else {
        return Ok(());
    };
    let host = host.to_ascii_lowercase();
    if node.store.domain(&host).await?.is_some() {
        return Ok(());
    }
    let now = now_micros();
    let row = DomainRow {
        domain: host,
        account_id: OWN.into(),
        created: now,
        modified: now,
        status: plan::PENDING.into(),
        method: plan::ACME.into(),
        ..Default::default()
    };
    // Another node may insert it at the same time: either row will do.
    if let Err(e) = node.store.insert_domain(&row).await {
        tracing::debug!("own ACME row: {e}");
    }
    Ok(())
}

/// Run the driver until shutdown.
pub async fn run(node: Arc<Context>) {
    if node.acme.settings.acme {
        if let Err(e) = ensure_own_row(&node).await {
            tracing::warn!("cannot record the node's own ACME name: {e:#}");
        }
    }
    let jobs = Arc::new(tokio::sync::Semaphore::new(MAX_JOBS));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = node.acme.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let rows = match node.store.list_domains(None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("acme: listing domains: {e}");
                continue;
            }
        };
        let now = now_micros();
        for row in rows {
            let Some(due) = plan::due(&row, now) else {
                continue;
            };
            if row.account_id == OWN && !node.acme.settings.acme {
                continue;
            }
            if !node.acme.busy.lock().insert(row.domain.clone()) {
                continue;
            }
            let Ok(permit) = jobs.clone().try_acquire_owned() else {
                node.acme.busy.lock().remove(&row.domain);
                break;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let domain = row.domain.clone();
                if let Err(e) = job(&node, row, due).await {
                    tracing::warn!(%domain, "acme: {e:#}");
                }
                node.acme.busy.lock().remove(&domain);
            });
        }
    }
}

/// One order, renewal or check under the domain's lease.
async fn job(node: &Context, row: DomainRow, due: Due) -> anyhow::Result<()> {
    let holder = node.acme.holder.clone();
    if !node
        .store
        .lease_domain(&row.domain, &holder, now_micros() + LEASE)
        .await?
    {
        return Ok(()); // Another node has it.
    }
    // The row as it is now, under the lease.
    let Some(row) = node.store.domain(&row.domain).await? else {
        return Ok(());
    };
    if plan::due(&row, now_micros()) != Some(due) {
        node.store.release_domain(&row.domain, &holder).await?;
        return Ok(());
    }
    tracing::info!(domain = %row.domain, "acme: starting ({due:?})");
    let outcome = tokio::time::timeout(JOB_TIMEOUT, attempt(node, &row, due))
        .await
        .unwrap_or_else(|_| Outcome::Retry("the CA did not finish in time".into()));
    let outcome = match outcome {
        Outcome::Done {
            cert_pem,
            key_pem,
            not_before,
            not_after,
        } if due != Due::Verify => Outcome::Done {
            cert_pem,
            key_pem: node.acme.sealer.seal(&key_pem)?,
            not_before,
            not_after,
        },
        o => o,
    };
    match &outcome {
        Outcome::Done { .. } => {
            metrics::counter!("banyan_acme_results_total", "result" => "done").increment(1);
            tracing::info!(domain = %row.domain, "acme: done ({due:?})");
        }
        Outcome::Refused(r) => {
            metrics::counter!("banyan_acme_results_total", "result" => "refused").increment(1);
            tracing::warn!(domain = %row.domain, "acme: refused ({due:?}): {r}");
        }
        Outcome::Retry(r) => {
            metrics::counter!("banyan_acme_results_total", "result" => "retry").increment(1);
            tracing::warn!(domain = %row.domain, "acme: will retry ({due:?}): {r}");
        }
    }
    let jitter: f64 = rand::random();
    let next = plan::apply(&row, due, outcome, now_micros(), jitter);
    node.store.update_domain(&next).await?;
    node.store.release_domain(&row.domain, &holder).await?;
    if due != Due::Verify {
        node.tls.set_challenge(&row.domain, None);
        node.store
            .drop_challenges(&row.domain, now_micros() - CHALLENGE_TTL)
            .await?;
    }
    node.domains.reload().await?;
    Ok(())
}

async fn attempt(node: &Context, row: &DomainRow, due: Due) -> Outcome {
    if due == Due::Verify {
        let port = match node.acme.settings.domain_verify_port {
            0 => node.http.port(),
            p => p,
        };
        return verify::check(&row.domain, port, &row.verify_token, &row.verify_value).await;
    }
    let account = match node.acme.account(node).await {
        Ok(a) => a,
        Err(e) => return Outcome::Retry(format!("{e:#}")),
    };
    client::order(
        &account,
        &row.domain,
        node.acme.settings.acme_challenge,
        &Publisher(node),
    )
    .await
}
