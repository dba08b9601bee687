//! The certificates of active custom domains (and the node's own, with
//! `--acme`) loaded from the store into the SNI resolver.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{plan, Acme, OWN};
use crate::store::Store;
use crate::tls::{self, SniResolver};

/// What loads the stored certificates into the resolver.
pub struct Domains {
    store: Store,
    tls: Arc<SniResolver>,
    acme: Arc<Acme>,
    /// The domain list last loaded into the resolver.
    stamp: Mutex<Option<Vec<(String, i64)>>>,
}

impl Domains {
    pub fn new(store: Store, tls: Arc<SniResolver>, acme: Arc<Acme>) -> Arc<Domains> {
        Arc::new(Domains {
            store,
            tls,
            acme,
            stamp: Mutex::new(None),
        })
    }

    /// Reload the active custom ingest domains (and the node's own ACME
    /// certificate) into the certificate resolver, only when the stored
    /// list changed. A domain that is not `active` is not served by SNI
    /// and binds no keys.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let rows = self.store.list_domains(None).await?;
        let mut stamp: Vec<(String, i64)> = rows
            .iter()
            .filter(|d| d.status == plan::ACTIVE)
            .map(|d| (d.domain.clone(), d.modified.max(d.created)))
            .collect();
        stamp.sort();
        {
            let mut last = self.stamp.lock();
            if last.as_ref() == Some(&stamp) {
                return Ok(());
            }
            *last = Some(stamp);
        }
        let mut map = HashMap::new();
        for d in rows {
            if d.status != plan::ACTIVE || d.cert_pem.is_empty() {
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
                Ok(ck) if d.account_id == OWN => {
                    if self.acme.settings.acme {
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
}
