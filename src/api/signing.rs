//! The signing keys and token endpoints (Cloudflare's shapes), under
//! `/client/v4/accounts/{account}/stream`:
//! `POST /keys` → `{id, pem, jwk, created}` (the private key, shown once),
//! `GET /keys` → `[{id, created}]`, `DELETE /keys/{id}`, and
//! `POST /{uid}/token` with an optional `{id, exp, nbf, accessRules}` →
//! `{"token": <JWT>}`. Without `id` the token is signed with the node's own
//! key of the account (made on first use, never listed nor returned).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::routing::{delete, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{load_input, ok, rfc3339, ApiError, ApiResult, Auth, JsonBody};
use crate::playback::keys::{self, MAX_KEYS_PER_ACCOUNT};
use crate::playback::Gate;
use crate::secret;
use crate::store::{now_micros, Store};

/// What the signing key and token endpoints use.
pub struct Context {
    pub store: Store,
    pub auth: Arc<crate::auth::Auth>,
    /// The playback gate, reloaded after each key change.
    pub playback: Arc<Gate>,
}

impl crate::auth::HasAuth for Arc<Context> {
    fn auth(&self) -> &crate::auth::Auth {
        &self.auth
    }
}

type St = Arc<Context>;

/// Default lifetime of a token from the token endpoint.
pub const DEFAULT_TTL_SECS: i64 = 3600;

pub fn router(node: St) -> Router {
    let stream = "/client/v4/accounts/{account}/stream";
    Router::new()
        .route(&format!("{stream}/keys"), post(create_key).get(list_keys))
        .route(&format!("{stream}/keys/{{id}}"), delete(delete_key))
        .route(&format!("{stream}/{{uid}}/token"), post(token))
        .with_state(node)
}

/// The uid a public per-input endpoint (`/lifecycle`, `/views`) answers
/// for: a bare uid of an input without `requireSignedURLs`, or a valid
/// token. `None` answers as an unknown input does.
pub fn public_uid(gate: &Gate, segment: &str, parts: &Parts) -> Option<String> {
    if !banyan_egress::hls::access::valid_segment(segment) {
        return None;
    }
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    gate.resolve(segment, origin, client).ok().map(|g| g.uid)
}

async fn create_key(State(node): State<St>, auth: Auth, Path(account): Path<String>) -> ApiResult {
    auth.scope(&account)?;
    let count = node.store.list_signing_keys(&account).await?.len();
    if count >= MAX_KEYS_PER_ACCOUNT {
        return Err(ApiError::conflict(format!(
            "quota max_signing_keys_per_account ({MAX_KEYS_PER_ACCOUNT}) reached"
        )));
    }
    let key = tokio::task::spawn_blocking(|| keys::generate(secret::new_id()))
        .await
        .map_err(|e| anyhow::anyhow!("key generation: {e}"))??;
    let (pem, jwk) = keys::export(&key)?;
    let created = now_micros();
    node.store
        .insert_signing_key(&account, &key, created, false)
        .await?;
    node.playback.reload(&node.store).await?;
    tracing::info!(account = %account, key = %key.id, "playback signing key created");
    Ok(ok(json!({
        "id": key.id,
        "pem": pem,
        "jwk": jwk,
        "created": rfc3339(created),
    })))
}

async fn list_keys(State(node): State<St>, auth: Auth, Path(account): Path<String>) -> ApiResult {
    auth.scope(&account)?;
    let list = node.store.list_signing_keys(&account).await?;
    Ok(crate::api::ok_list(
        list.iter()
            .map(|(id, created)| json!({"id": id, "created": rfc3339(*created)}))
            .collect(),
    ))
}

async fn delete_key(
    State(node): State<St>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    if !secret::is_id(&id) || !node.store.delete_signing_key(&account, &id).await? {
        return Err(ApiError::not_found("signing key"));
    }
    // Tokens signed with it stop playing now.
    node.playback.reload(&node.store).await?;
    tracing::info!(account = %account, key = %id, "playback signing key deleted");
    Ok(ok(json!("ok")))
}

/// The body of the token endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenBody {
    id: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    access_rules: Option<Value>,
}

/// Check a token request as the endpoint does (the fuzz target's entry):
/// the claims to sign, given the uid and the time now.
pub fn token_claims(body: &TokenBody, uid: &str, kid: &str, now: i64) -> Result<Value, ApiError> {
    let exp = body.exp.unwrap_or(now + DEFAULT_TTL_SECS);
    if exp <= now {
        return Err(ApiError::bad_request("exp must be in the future"));
    }
    let mut claims = json!({"sub": uid, "kid": kid, "exp": exp});
    if let Some(nbf) = body.nbf {
        if nbf >= exp {
            return Err(ApiError::bad_request("nbf must be before exp"));
        }
        claims["nbf"] = json!(nbf);
    }
    if let Some(rules) = &body.access_rules {
        crate::playback::jwt::parse_rules(rules).map_err(ApiError::bad_request)?;
        claims["accessRules"] = rules.clone();
    }
    Ok(claims)
}

async fn token(
    State(node): State<St>,
    auth: Auth,
    Path((account, uid)): Path<(String, String)>,
    JsonBody(body): JsonBody<TokenBody>,
) -> ApiResult {
    auth.scope(&account)?;
    let input = load_input(&node.store, &account, &uid).await?;
    let now = now_micros() / 1_000_000;
    // Checked before any key is made.
    token_claims(&body, &input.uid, "", now)?;
    let (kid, pem) = match body.id.as_deref() {
        Some(id) => node
            .store
            .signing_key_pem(&account, Some(id))
            .await?
            .ok_or_else(|| ApiError::not_found("signing key"))?,
        None => match node.store.signing_key_pem(&account, None).await? {
            Some(k) => k,
            None => {
                let key = tokio::task::spawn_blocking(|| keys::generate(secret::new_id()))
                    .await
                    .map_err(|e| anyhow::anyhow!("key generation: {e}"))??;
                node.store
                    .insert_signing_key(&account, &key, now_micros(), true)
                    .await?;
                node.playback.reload(&node.store).await?;
                // Another node may have made one at the same time: use the
                // oldest, as every node will.
                node.store
                    .signing_key_pem(&account, None)
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 10100, "internal error")
                    })?
            }
        },
    };
    let claims = token_claims(&body, &input.uid, &kid, now)?;
    let der = keys::der(&pem)?;
    let token = crate::playback::jwt::sign(&der, &kid, &claims)?;
    let max = banyan_egress::hls::access::MAX_SEGMENT;
    if token.len() > max {
        return Err(ApiError::bad_request(format!(
            "the token would be {} bytes, over the {max} a playback URL takes: fewer accessRules",
            token.len()
        )));
    }
    metrics::counter!("banyan_playback_tokens_issued_total").increment(1);
    Ok(ok(json!({"token": token})))
}
