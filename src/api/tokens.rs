//! Account API tokens and the admin token's rotation.
//!
//! - `POST /client/v4/accounts/{id}/tokens` `{"name"?}` → `{id, name,
//!   created, token}`: the secret is shown this once.
//! - `GET /client/v4/accounts/{id}/tokens` → `[{id, name, created}]`.
//! - `DELETE /client/v4/accounts/{id}/tokens/{token_id}` → `{id}`: the
//!   token is refused from the next request on (every request looks its
//!   token up in the store).
//! - `POST /client/v4/admin/rotate` (admin token) → `{token}`: a new admin
//!   token; the one that made the call stops working. When the node's own
//!   credentials.json held the old one, it is rewritten (0600).
//!
//! These take the account's own token or the admin token (for any
//! account). Admin tokens are not listed or revoked here: they change only
//! by rotation. Revoking an account's last token is allowed: a leaked
//! token must be revocable at once, and the operator can always make the
//! account a new one.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ok, rfc3339, ApiError, ApiResult, Auth, JsonBody, St};
use crate::secret;
use crate::store::TokenRow;

/// Tokens an account may hold at once.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenBody {
    name: Option<String>,
}

/// The checked name of a new token (may be empty).
pub(super) fn token_name(body: TokenBody) -> Result<String, ApiError> {
    let name = body.name.unwrap_or_default();
    if name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: at most 256 bytes, no control characters",
        ));
    }
    Ok(name)
}

fn token_json(t: &TokenRow) -> Value {
    json!({"id": t.id, "name": t.name, "created": rfc3339(t.created)})
}

/// The caller may manage `account`'s tokens: its own token, or the admin
/// token for an account that exists.
async fn may_manage(node: &St, auth: &Auth, account: &str) -> Result<(), ApiError> {
    if auth.0.account_id == account {
        return Ok(());
    }
    if auth.0.admin && secret::is_id(account) && node.store.account_exists(account).await? {
        return Ok(());
    }
    Err(ApiError::not_found("account"))
}

pub(super) async fn create_token(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<TokenBody>,
) -> ApiResult {
    may_manage(&node, &auth, &account).await?;
    let name = token_name(body)?;
    if node.store.list_tokens(&account).await?.len() >= MAX_TOKENS_PER_ACCOUNT {
        metrics::counter!("banyan_api_refused_total", "limit" => "max_tokens_per_account")
            .increment(1);
        return Err(ApiError::conflict(format!(
            "quota max_tokens_per_account ({MAX_TOKENS_PER_ACCOUNT}) reached"
        )));
    }
    let token = secret::new_secret();
    let row = node
        .store
        .add_named_token(
            &secret::token_hash(&token),
            &account,
            false,
            &secret::new_id(),
            &name,
        )
        .await?;
    tracing::info!(account = %account, token_id = %row.id, "API token created");
    let mut v = token_json(&row);
    v["token"] = json!(token);
    Ok(ok(v))
}

pub(super) async fn list_tokens(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
) -> ApiResult {
    may_manage(&node, &auth, &account).await?;
    let list = node.store.list_tokens(&account).await?;
    Ok(super::ok_list(list.iter().map(token_json).collect()))
}

pub(super) async fn revoke_token(
    State(node): State<St>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    may_manage(&node, &auth, &account).await?;
    if !secret::is_id(&id) || !node.store.revoke_token(&account, &id).await? {
        return Err(ApiError::not_found("token"));
    }
    tracing::info!(account = %account, token_id = %id, "API token revoked");
    Ok(ok(json!({"id": id})))
}

pub(super) async fn rotate_admin(
    State(node): State<St>,
    auth: Auth,
    headers: HeaderMap,
) -> ApiResult {
    auth.admin()?;
    let old = crate::auth::bearer(&headers).ok_or_else(ApiError::unauthorized)?;
    let old_hash = secret::token_hash(old);
    let token = secret::new_secret();
    if !node
        .store
        .rotate_admin_token(&old_hash, &secret::token_hash(&token))
        .await?
    {
        // Rotated by a concurrent call: this token is already gone.
        return Err(ApiError::unauthorized());
    }
    let rewrote = rewrite_credentials(&node, old, &token);
    tracing::info!(
        credentials_rewritten = rewrote,
        "admin token rotated; the old one is revoked"
    );
    Ok(ok(json!({"token": token, "credentialsRewritten": rewrote})))
}

/// Put the new admin token into the node's credentials.json if it held the
/// old one. Whether it was rewritten.
fn rewrite_credentials(node: &St, old: &str, new: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let path = crate::node::credentials_path(&node.data_dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    let Ok(mut creds) = serde_json::from_str::<crate::node::Credentials>(&text) else {
        return false;
    };
    if !bool::from(creds.admin_token.as_bytes().ct_eq(old.as_bytes())) {
        return false;
    }
    creds.admin_token = new.to_string();
    let written = serde_json::to_string_pretty(&creds)
        .map_err(std::io::Error::other)
        .and_then(|text| crate::tls::write_private(&path, text.as_bytes()));
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(path = %path.display(), "rewriting credentials.json: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_are_checked() {
        assert_eq!(token_name(TokenBody::default()).unwrap(), "");
        let named = TokenBody {
            name: Some("ci deploys".into()),
        };
        assert_eq!(token_name(named).unwrap(), "ci deploys");
        for bad in ["x".repeat(257), "a\nb".into()] {
            let e = token_name(TokenBody { name: Some(bad) }).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
