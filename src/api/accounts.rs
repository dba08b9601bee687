//! `POST /client/v4/accounts` and `GET /client/v4/accounts` (the admin
//! token).

use axum::extract::State;
use serde::Deserialize;
use serde_json::json;

use super::{ok, ok_list, rfc3339, ApiError, ApiResult, Auth, JsonBody, St};
use crate::secret;

#[derive(Debug, Default, Deserialize)]
pub(super) struct AccountBody {
    name: Option<String>,
}

pub(super) fn account_name(body: AccountBody) -> Result<String, ApiError> {
    let name = body.name.unwrap_or_default();
    if name.trim().is_empty() || name.len() > 256 {
        return Err(ApiError::bad_request("name: 1 to 256 bytes required"));
    }
    Ok(name)
}

pub(super) async fn create_account(
    State(node): State<St>,
    auth: Auth,
    JsonBody(body): JsonBody<AccountBody>,
) -> ApiResult {
    auth.admin()?;
    let name = account_name(body)?;
    let id = secret::new_id();
    node.store.create_account(&id, &name).await?;
    let token = secret::new_secret();
    node.store
        .add_token(&secret::token_hash(&token), &id, false)
        .await?;
    tracing::info!(account = %id, "account created");
    Ok(ok(json!({"id": id, "name": name, "apiToken": token})))
}

pub(super) async fn list_accounts(State(node): State<St>, auth: Auth) -> ApiResult {
    auth.admin()?;
    let list = node.store.list_accounts().await?;
    Ok(ok_list(
        list.iter()
            .map(|a| json!({"id": a.id, "name": a.name, "created": rfc3339(a.created)}))
            .collect(),
    ))
}
