//! Signed playback: the `recording` object of live inputs, per-account
//! signing keys, playback tokens, and the in-memory gate every HLS request
//! passes.
//!
//! The gate never waits on the store: it reads snapshots (input uid →
//! account, `requireSignedURLs`, `allowedOrigins`; key id → account and
//! public key) that the node replaces after every change through the API
//! and at every shared-store refresh. Verified tokens are cached (bounded),
//! so parts and segments cost a hash and a map lookup. Its HTTP endpoints
//! (signing keys, the token endpoint) are the API's, in `api/signing.rs`.
//!
//! Refusals do not tell whether a uid exists: an unknown uid, a guarded
//! input's bare uid and any bad token (malformed, tampered, expired, not yet
//! valid, unknown key, a key of another account, access rules that refuse
//! or cannot be evaluated) all answer 401; only a request that already
//! holds a valid capability can be told 403 (its Origin is not allowed).

pub mod jwt;
pub mod keys;
pub mod recording;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use banyan_egress::hls::{AccessRequest, AllowOrigin, Grant, PlaybackAccess};
use parking_lot::{Mutex, RwLock};

use crate::store::LiveInputRow;

/// Verified tokens kept at most.
const CACHE_CAPACITY: usize = 10_000;

/// What playback needs to know of one input.
#[derive(Debug, Clone)]
struct InputAccess {
    account: String,
    signed: bool,
    origins: Vec<String>,
    /// `recording.hideLiveViewerCount`: `/views` shows no count.
    hide_viewers: bool,
}

/// A public signing key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub account: String,
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

/// A token whose signature was checked.
#[derive(Debug)]
struct Verified {
    kid: String,
    claims: jwt::Claims,
}

/// The gate: snapshots and the cache of verified tokens.
#[derive(Default)]
pub struct Gate {
    inputs: RwLock<HashMap<String, InputAccess>>,
    keys: RwLock<HashMap<String, PublicKey>>,
    cache: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn refused(reason: &'static str) -> StatusCode {
    metrics::counter!("banyan_playback_tokens_refused_total", "reason" => reason).increment(1);
    StatusCode::UNAUTHORIZED
}

/// What the gate needs of an input.
fn input_access(r: &LiveInputRow) -> InputAccess {
    let rec = recording::load(&r.recording);
    InputAccess {
        account: r.account_id.clone(),
        signed: rec.require_signed_urls,
        origins: rec.allowed_origins.unwrap_or_default(),
        hide_viewers: rec.hide_live_viewer_count,
    }
}

impl Gate {
    /// Reload the public playback signing keys from the store.
    pub async fn reload(&self, store: &crate::store::Store) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let keys = store
            .public_signing_keys()
            .await
            .context("loading signing keys")?;
        self.set_keys(keys);
        Ok(())
    }

    /// Replace the inputs snapshot.
    pub fn set_inputs(&self, rows: &[LiveInputRow]) {
        let map = rows
            .iter()
            .map(|r| (r.uid.clone(), input_access(r)))
            .collect();
        *self.inputs.write() = map;
    }

    /// Whether the input hides its live viewer count.
    pub fn hides_viewer_count(&self, uid: &str) -> bool {
        self.inputs.read().get(uid).is_some_and(|i| i.hide_viewers)
    }

    /// Change one input of the snapshot (created or changed).
    pub fn set_input(&self, row: &LiveInputRow) {
        self.inputs
            .write()
            .insert(row.uid.clone(), input_access(row));
    }

    /// Take one input out of the snapshot (deleted).
    pub fn remove_input(&self, uid: &str) {
        self.inputs.write().remove(uid);
    }

    /// Replace the public keys snapshot.
    pub fn set_keys(&self, keys: HashMap<String, PublicKey>) {
        *self.keys.write() = keys;
    }

    /// The token's verified claims (from the cache, or checked now).
    fn verify(&self, token: &str) -> Result<Arc<Verified>, StatusCode> {
        let hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        if let Some(v) = self.cache.lock().get(&hash) {
            return Ok(v.clone());
        }
        let parsed = jwt::parse(token).map_err(|_| refused("malformed"))?;
        let key = self
            .keys
            .read()
            .get(&parsed.kid)
            .cloned()
            .ok_or_else(|| refused("unknown_key"))?;
        jwt::verify(&parsed, &key.n, &key.e).map_err(|_| refused("signature"))?;
        let v = Arc::new(Verified {
            kid: parsed.kid,
            claims: parsed.claims,
        });
        let now = now_secs();
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, v| v.claims.exp > now);
            if cache.len() >= CACHE_CAPACITY {
                metrics::counter!("banyan_playback_token_cache_cleared_total").increment(1);
                cache.clear();
            }
        }
        cache.insert(hash, v.clone());
        Ok(v)
    }

    /// The uid a path segment (a uid or a token) may play, checked against
    /// the request, or the refusal's status.
    pub fn resolve(
        &self,
        segment: &str,
        origin: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Grant, StatusCode> {
        let (uid, input, by_token) = if segment.contains('.') {
            let v = self.verify(segment)?;
            let c = &v.claims;
            if !jwt::in_time(c, now_secs()) {
                return Err(refused("time"));
            }
            // The key must still exist and belong to the input's account.
            let key_account = self
                .keys
                .read()
                .get(&v.kid)
                .map(|k| k.account.clone())
                .ok_or_else(|| refused("unknown_key"))?;
            let input = self
                .inputs
                .read()
                .get(&c.sub)
                .cloned()
                .filter(|i| i.account == key_account)
                .ok_or_else(|| refused("other_account"))?;
            if !jwt::allowed(&c.rules, client) {
                return Err(refused("access_rules"));
            }
            (c.sub.clone(), input, true)
        } else {
            let input = self
                .inputs
                .read()
                .get(segment)
                .cloned()
                .filter(|i| !i.signed)
                .ok_or_else(|| refused("unsigned"))?;
            (segment.to_string(), input, false)
        };
        if let Some(o) = origin {
            if !recording::origin_allowed(&input.origins, o) {
                metrics::counter!("banyan_playback_tokens_refused_total", "reason" => "origin")
                    .increment(1);
                return Err(StatusCode::FORBIDDEN);
            }
        }
        let cors = if by_token || input.signed || !input.origins.is_empty() {
            AllowOrigin::Only(origin.map(str::to_string))
        } else {
            AllowOrigin::Any
        };
        Ok(Grant { uid, cors })
    }
}

impl PlaybackAccess for Gate {
    fn check(&self, req: &AccessRequest<'_>) -> Result<Grant, StatusCode> {
        self.resolve(req.segment, req.origin, req.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(uid: &str, account: &str, recording: &str) -> LiveInputRow {
        LiveInputRow {
            recording: recording.into(),
            ..LiveInputRow::new(uid, account, 0)
        }
    }

    #[test]
    fn the_gate_decides_without_telling_what_exists() {
        use base64::Engine as _;
        let gate = Gate::default();
        gate.set_inputs(&[
            row(
                "guarded",
                "acct",
                r#"{"requireSignedURLs":true,"allowedOrigins":["ok.example"]}"#,
            ),
            row("open", "acct", "{}"),
            row("theirs", "other", "{}"),
        ]);
        let key = keys::generate("k1".into()).unwrap();
        let der = keys::der(&key.private_pem).unwrap();
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let public = |account: &str| PublicKey {
            account: account.into(),
            n: e.decode(&key.n).unwrap(),
            e: e.decode(&key.e).unwrap(),
        };
        gate.set_keys(HashMap::from([("k1".to_string(), public("acct"))]));
        let sign =
            |sub: &str, exp: i64| jwt::sign(&der, "k1", &json!({"sub": sub, "exp": exp})).unwrap();
        let later = now_secs() + 600;
        let local = "127.0.0.1".parse().ok();

        let ok = gate.resolve(&sign("guarded", later), None, local).unwrap();
        assert_eq!(ok.uid, "guarded");
        assert_eq!(ok.cors, AllowOrigin::Only(None));
        let ok = gate
            .resolve(&sign("guarded", later), Some("https://ok.example"), local)
            .unwrap();
        assert_eq!(
            ok.cors,
            AllowOrigin::Only(Some("https://ok.example".into()))
        );
        assert_eq!(
            gate.resolve(&sign("guarded", later), Some("https://evil.example"), local),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            gate.resolve("open", None, local).unwrap().cors,
            AllowOrigin::Any
        );
        assert_eq!(
            gate.resolve(&sign("open", later), None, local).unwrap().uid,
            "open"
        );
        for (what, segment) in [
            ("bare uid of a guarded input", "guarded".to_string()),
            ("unknown uid", "nothing".to_string()),
            ("token for an unknown uid", sign("nothing", later)),
            ("token for another account's input", sign("theirs", later)),
            ("expired token", sign("guarded", now_secs() - 1)),
            ("garbage", "a.b.c".to_string()),
        ] {
            assert_eq!(
                gate.resolve(&segment, None, local),
                Err(StatusCode::UNAUTHORIZED),
                "{what}"
            );
        }
        // A cached token stops with its key, and with its key's account.
        let t = sign("guarded", later);
        assert!(gate.resolve(&t, None, local).is_ok());
        gate.set_keys(HashMap::from([("k1".to_string(), public("other"))]));
        assert_eq!(gate.resolve(&t, None, local), Err(StatusCode::UNAUTHORIZED));
        gate.set_keys(HashMap::new());
        assert_eq!(gate.resolve(&t, None, local), Err(StatusCode::UNAUTHORIZED));
    }
}
