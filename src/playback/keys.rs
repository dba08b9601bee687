//! Signing keys: RSA 2048 generation, Cloudflare's PEM and JWK encodings,
//! and their table.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _, LineEnding};
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use rsa::{BigUint, RsaPrivateKey};
use serde_json::json;
use sqlx::Row;

use super::PublicKey;
use crate::store::Store;

/// Signing keys an account may hold (listed keys; the node's own key per
/// account is apart). Each costs a key generation and a few hundred bytes
/// in every node's snapshot.
pub const MAX_KEYS_PER_ACCOUNT: usize = 100;

/// A generated key: what is stored and what is shown once.
pub struct NewKey {
    pub id: String,
    /// PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`): a secret.
    pub private_pem: String,
    pub n: String,
    pub e: String,
}

fn b64u(n: &BigUint) -> String {
    URL_SAFE_NO_PAD.encode(n.to_bytes_be())
}

/// Generate an RSA 2048 key (CPU-bound: call off the async threads).
pub fn generate(id: String) -> anyhow::Result<NewKey> {
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
    let pem = key.to_pkcs1_pem(LineEnding::LF)?;
    Ok(NewKey {
        id,
        private_pem: pem.to_string(),
        n: b64u(key.n()),
        e: b64u(key.e()),
    })
}

/// The PKCS#1 DER of a stored PEM (what the signer takes).
pub fn der(private_pem: &str) -> anyhow::Result<Vec<u8>> {
    let key = RsaPrivateKey::from_pkcs1_pem(private_pem)?;
    Ok(key.to_pkcs1_der()?.as_bytes().to_vec())
}

/// Cloudflare's `pem` (base64 of the PEM text) and `jwk` (base64 of the
/// private JWK's JSON) of a key.
pub fn export(k: &NewKey) -> anyhow::Result<(String, String)> {
    let key = RsaPrivateKey::from_pkcs1_pem(&k.private_pem)?;
    let primes = key.primes();
    let (Some(p), Some(q), Some(dp), Some(dq), Some(qi)) = (
        primes.first(),
        primes.get(1),
        key.dp(),
        key.dq(),
        key.crt_coefficient(),
    ) else {
        anyhow::bail!("key without CRT parameters");
    };
    let jwk = json!({
        "use": "sig", "kty": "RSA", "kid": k.id, "alg": "RS256",
        "n": k.n, "e": k.e, "d": b64u(key.d()),
        "p": b64u(p), "q": b64u(q), "dp": b64u(dp), "dq": b64u(dq), "qi": b64u(&qi),
    });
    Ok((
        STANDARD.encode(k.private_pem.as_bytes()),
        STANDARD.encode(jwk.to_string()),
    ))
}

impl Store {
    pub async fn insert_signing_key(
        &self,
        account: &str,
        k: &NewKey,
        created: i64,
        internal: bool,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO stream_signing_keys (id, account_id, created, private_pem, n, e, internal) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.id)
        .bind(account)
        .bind(created)
        .bind(&k.private_pem)
        .bind(&k.n)
        .bind(&k.e)
        .bind(internal as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The listed keys of an account: `(id, created)`, oldest first.
    pub async fn list_signing_keys(&self, account: &str) -> sqlx::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT id, created FROM stream_signing_keys \
             WHERE account_id = $1 AND internal = 0 ORDER BY created, id",
        )
        .bind(account)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("created")?)))
            .collect()
    }

    /// The private key of one of an account's keys (`internal`: the node's
    /// own key of the account, the oldest if several).
    pub async fn signing_key_pem(
        &self,
        account: &str,
        id: Option<&str>,
    ) -> sqlx::Result<Option<(String, String)>> {
        let row = match id {
            Some(id) => {
                sqlx::query(
                    "SELECT id, private_pem FROM stream_signing_keys \
                     WHERE account_id = $1 AND id = $2",
                )
                .bind(account)
                .bind(id)
                .fetch_optional(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, private_pem FROM stream_signing_keys \
                     WHERE account_id = $1 AND internal = 1 ORDER BY created, id LIMIT 1",
                )
                .bind(account)
                .fetch_optional(self.pool())
                .await?
            }
        };
        row.map(|r| Ok((r.try_get("id")?, r.try_get("private_pem")?)))
            .transpose()
    }

    /// Delete a listed key. False if the account has no such key.
    pub async fn delete_signing_key(&self, account: &str, id: &str) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "DELETE FROM stream_signing_keys WHERE account_id = $1 AND id = $2 AND internal = 0",
        )
        .bind(account)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every public key, by id.
    pub async fn public_signing_keys(&self) -> sqlx::Result<HashMap<String, PublicKey>> {
        let rows = sqlx::query("SELECT id, account_id, n, e FROM stream_signing_keys")
            .fetch_all(self.pool())
            .await?;
        let mut map = HashMap::with_capacity(rows.len());
        for r in rows {
            let (n, e): (String, String) = (r.try_get("n")?, r.try_get("e")?);
            let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
                continue;
            };
            map.insert(
                r.try_get("id")?,
                PublicKey {
                    account: r.try_get("account_id")?,
                    n,
                    e,
                },
            );
        }
        Ok(map)
    }

    /// A secret of the cluster: created with `fresh` by the first node that
    /// asks (a race between nodes keeps the first insert), read by all.
    pub async fn cluster_secret(&self, name: &str, fresh: &str) -> sqlx::Result<String> {
        sqlx::query(
            "INSERT INTO node_secrets (name, value, created) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .bind(crate::store::now_micros())
        .execute(self.pool())
        .await?;
        sqlx::query_scalar("SELECT value FROM node_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_round_trip_and_export() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let k = generate("k1".into()).unwrap();
        assert!(k.private_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let (pem, jwk) = export(&k).unwrap();
        assert_eq!(STANDARD.decode(pem).unwrap(), k.private_pem.as_bytes());
        let jwk: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(jwk).unwrap()).unwrap();
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["n"], k.n.as_str());
        store.insert_signing_key("a", &k, 1, false).await.unwrap();
        let own = generate("own".into()).unwrap();
        store.insert_signing_key("a", &own, 2, true).await.unwrap();
        assert_eq!(
            store.list_signing_keys("a").await.unwrap(),
            vec![("k1".to_string(), 1)]
        );
        assert_eq!(store.list_signing_keys("b").await.unwrap(), vec![]);
        let (id, _) = store.signing_key_pem("a", None).await.unwrap().unwrap();
        assert_eq!(id, "own");
        assert!(store
            .signing_key_pem("b", Some("k1"))
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.public_signing_keys().await.unwrap().len(), 2);
        assert!(
            !store.delete_signing_key("a", "own").await.unwrap(),
            "not listed"
        );
        assert!(!store.delete_signing_key("b", "k1").await.unwrap());
        assert!(store.delete_signing_key("a", "k1").await.unwrap());
        let first = store.cluster_secret("s", "one").await.unwrap();
        assert_eq!(store.cluster_secret("s", "two").await.unwrap(), first);
        assert_eq!(first, "one");
        der(&k.private_pem).unwrap();
    }
}
