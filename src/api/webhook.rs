//! The account's live webhook, as Cloudflare Stream has it:
//!
//! - `PUT /client/v4/accounts/{id}/stream/webhook` `{"notificationUrl"}` →
//!   `{notificationUrl, modified, secret}`: sets the one webhook of the
//!   account. The signing secret is made by the node on the first set and
//!   kept by later ones.
//! - `GET` the same → the same shape; `DELETE` → `""` (undelivered events
//!   go with it).
//!
//! The URL must be `http` or `https` and its host must resolve only to
//! public addresses unless the node runs with `--webhook-allow-private`
//! (see [`crate::webhooks::target`]); it is checked again at every
//! delivery.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ok, rfc3339, ApiError, ApiResult, Auth, JsonBody, St};
use crate::store::WebhookRow;
use crate::webhooks::target;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct WebhookBody {
    notification_url: Option<String>,
}

/// The checked target of a body (syntax only; addresses are checked by
/// resolving).
/// The URL is kept as written (and parsed again at each delivery).
pub(super) fn webhook_target(body: WebhookBody) -> Result<(String, target::Target), ApiError> {
    let url = body
        .notification_url
        .ok_or_else(|| ApiError::bad_request("notificationUrl is required"))?;
    let t = target::parse(&url).map_err(ApiError::bad_request)?;
    Ok((url, t))
}

fn webhook_json(w: &WebhookRow) -> Value {
    json!({
        "notificationUrl": w.url,
        "modified": rfc3339(w.modified),
        "secret": w.secret,
    })
}

pub(super) async fn put_webhook(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<WebhookBody>,
) -> ApiResult {
    auth.scope(&account)?;
    let (url, t) = webhook_target(body)?;
    if let Err(why) = target::resolve(&t, node.hooks.webhook_allow_private).await {
        metrics::counter!("banyan_api_refused_total", "limit" => "webhook_target").increment(1);
        return Err(ApiError::bad_request(why));
    }
    let row = node.store.put_webhook(&account, &url).await?;
    tracing::info!(account = %account, "webhook set");
    Ok(ok(webhook_json(&row)))
}

pub(super) async fn get_webhook(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
) -> ApiResult {
    auth.scope(&account)?;
    match node.store.webhook(&account).await? {
        Some(w) => Ok(ok(webhook_json(&w))),
        None => Err(ApiError::not_found("webhook")),
    }
}

pub(super) async fn delete_webhook(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
) -> ApiResult {
    auth.scope(&account)?;
    if !node.store.delete_webhook(&account).await? {
        return Err(ApiError::not_found("webhook"));
    }
    tracing::info!(account = %account, "webhook deleted");
    Ok(ok(json!("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked() {
        let body = |s: &str| webhook_target(serde_json::from_str(s).unwrap());
        assert!(body(r#"{"notificationUrl":"https://hooks.example.com/x"}"#).is_ok());
        for bad in [
            "{}",
            r#"{"notificationUrl":"ftp://example.com/"}"#,
            r#"{"notificationUrl":"http://u:p@example.com/"}"#,
        ] {
            let e = body(bad).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
