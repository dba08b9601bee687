//! Simulcast outputs of a live input, shaped like Cloudflare's:
//!
//! - `POST /client/v4/accounts/{id}/stream/live_inputs/{uid}/outputs`
//!   `{"url", "streamKey", "enabled"?}` → the output.
//! - `GET .../live_inputs/{uid}/outputs` → `[output]`.
//! - `PUT .../live_inputs/{uid}/outputs/{output_uid}` `{"enabled"}` → the
//!   output (only `enabled` changes, as on Cloudflare; a `url` or
//!   `streamKey` repeated unchanged is accepted, a different one is refused
//!   with 400: delete and create instead).
//! - `DELETE .../live_inputs/{uid}/outputs/{output_uid}` → `null`.
//!
//! An output is `{uid, url, streamKey, enabled, status, lastError}`:
//! `status` is `null` when it is not pushing (input not live, output
//! disabled), else `connecting`, `connected` or `reconnecting` (waiting to
//! retry after a failure); `lastError` (Banyan's own field) is the last
//! failure's reason or `null`. Changes take effect at once, also while the
//! input is live. Up to [`MAX_OUTPUTS_PER_INPUT`] per input. Loopback,
//! private and reserved destinations are refused (400 when the URL holds
//! such an address, a `lastError` when a name resolves to one) unless the
//! operator allows them (`--outputs-allow-private`).

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{load_input, ok, ApiError, ApiResult, Auth, JsonBody, St};
use crate::secret;
use crate::store::OutputRow;

/// Outputs a live input may have.
pub const MAX_OUTPUTS_PER_INPUT: usize = 50;
/// Longest stream key accepted.
const MAX_KEY: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputBody {
    url: Option<String>,
    stream_key: Option<String>,
    enabled: Option<bool>,
}

/// Check a new output's fields (as `create_output` does): the destination
/// and whether it starts enabled.
pub fn new_output(body: OutputBody) -> Result<(String, String, bool), ApiError> {
    let url = body
        .url
        .ok_or_else(|| ApiError::bad_request("url: required"))?;
    let key = body.stream_key.unwrap_or_default();
    if key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "streamKey: at most {MAX_KEY} bytes, no control characters"
        )));
    }
    let target = banyan_egress::push::Target::parse(&url, &key)
        .map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
    if matches!(target, banyan_egress::push::Target::Rtmp { .. }) && key.is_empty() {
        return Err(ApiError::bad_request(
            "streamKey: required for rtmp:// and rtmps:// outputs",
        ));
    }
    Ok((url, key, body.enabled.unwrap_or(true)))
}

/// An update: `enabled` (required), and the destination only when it is
/// repeated unchanged (checked against the stored output).
pub struct OutputUpdate {
    pub enabled: bool,
    url: Option<String>,
    stream_key: Option<String>,
}

impl OutputUpdate {
    /// Refuse a change of destination: it cannot change, as on Cloudflare.
    fn check_against(&self, row: &OutputRow) -> Result<(), ApiError> {
        let same_url = self.url.as_ref().is_none_or(|u| *u == row.url);
        let same_key = self
            .stream_key
            .as_ref()
            .is_none_or(|k| *k == row.stream_key);
        if same_url && same_key {
            return Ok(());
        }
        Err(ApiError::bad_request(
            "url, streamKey: an output's destination cannot change; delete it and create another",
        ))
    }
}

/// Check an update's body: `enabled` is required.
pub fn output_update(body: OutputBody) -> Result<OutputUpdate, ApiError> {
    let enabled = body
        .enabled
        .ok_or_else(|| ApiError::bad_request("enabled: required"))?;
    Ok(OutputUpdate {
        enabled,
        url: body.url,
        stream_key: body.stream_key,
    })
}

fn output_json(node: &St, o: &OutputRow) -> Value {
    let (status, last_error) = node.outputs.status(&o.uid);
    json!({
        "uid": o.uid,
        "url": o.url,
        "streamKey": o.stream_key,
        "enabled": o.enabled,
        "status": status,
        "lastError": last_error,
    })
}

pub(super) async fn create_output(
    State(node): State<St>,
    auth: Auth,
    Path((account, input)): Path<(String, String)>,
    JsonBody(body): JsonBody<OutputBody>,
) -> ApiResult {
    auth.scope(&account)?;
    load_input(&node.store, &account, &input).await?;
    let (url, stream_key, enabled) = new_output(body)?;
    if !node.hooks.outputs_allow_private {
        let target = banyan_egress::push::Target::parse(&url, &stream_key)
            .map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
        if banyan_egress::push::addr::literal_is_private(target.host()) {
            return Err(ApiError::bad_request(format!(
                "url: {}",
                banyan_egress::push::addr::refusal(target.host())
            )));
        }
    }
    let mut row = OutputRow {
        uid: secret::new_id(),
        input_uid: input.clone(),
        account_id: account.clone(),
        url,
        stream_key,
        enabled,
        created: 0,
    };
    if !node
        .store
        .insert_output(&mut row, MAX_OUTPUTS_PER_INPUT)
        .await?
    {
        metrics::counter!("banyan_api_refused_total", "limit" => "max_outputs_per_input")
            .increment(1);
        return Err(ApiError::conflict(format!(
            "quota max_outputs_per_input ({MAX_OUTPUTS_PER_INPUT}) reached"
        )));
    }
    node.outputs.changed();
    tracing::info!(account = %account, input = %input, output = %row.uid, "output created");
    Ok(ok(output_json(&node, &row)))
}

pub(super) async fn list_outputs(
    State(node): State<St>,
    auth: Auth,
    Path((account, input)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    load_input(&node.store, &account, &input).await?;
    let rows = node.store.list_outputs(&account, &input).await?;
    Ok(ok(Value::Array(
        rows.iter().map(|o| output_json(&node, o)).collect(),
    )))
}

pub(super) async fn update_output(
    State(node): State<St>,
    auth: Auth,
    Path((account, input, uid)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<OutputBody>,
) -> ApiResult {
    auth.scope(&account)?;
    load_input(&node.store, &account, &input).await?;
    let update = output_update(body)?;
    if !secret::is_id(&uid) {
        return Err(ApiError::not_found("output"));
    }
    if update.url.is_some() || update.stream_key.is_some() {
        let rows = node.store.list_outputs(&account, &input).await?;
        let row = rows
            .iter()
            .find(|o| o.uid == uid)
            .ok_or_else(|| ApiError::not_found("output"))?;
        update.check_against(row)?;
    }
    let enabled = update.enabled;
    let row = node
        .store
        .set_output_enabled(&account, &input, &uid, enabled)
        .await?
        .ok_or_else(|| ApiError::not_found("output"))?;
    node.outputs.changed();
    tracing::info!(account = %account, input = %input, output = %uid, enabled, "output updated");
    Ok(ok(output_json(&node, &row)))
}

pub(super) async fn delete_output(
    State(node): State<St>,
    auth: Auth,
    Path((account, input, uid)): Path<(String, String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    load_input(&node.store, &account, &input).await?;
    if !secret::is_id(&uid) || !node.store.delete_output(&account, &input, &uid).await? {
        return Err(ApiError::not_found("output"));
    }
    node.outputs.changed();
    tracing::info!(account = %account, input = %input, output = %uid, "output deleted");
    Ok(ok(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(url: Option<&str>, key: Option<&str>, enabled: Option<bool>) -> OutputBody {
        OutputBody {
            url: url.map(Into::into),
            stream_key: key.map(Into::into),
            enabled,
        }
    }

    #[test]
    fn new_outputs_are_checked_and_errors_name_the_field() {
        let (url, key, on) = new_output(body(Some("rtmp://h/live"), Some("k"), None)).unwrap();
        assert_eq!(
            (url.as_str(), key.as_str(), on),
            ("rtmp://h/live", "k", true)
        );
        assert!(new_output(body(Some("srt://h:9000?streamid=x"), None, Some(false))).is_ok());
        let msg = |b| format!("{:?}", new_output(b).unwrap_err());
        assert!(msg(body(None, Some("k"), None)).contains("url"));
        assert!(msg(body(Some("http://h/live"), Some("k"), None)).contains("url"));
        assert!(msg(body(Some("rtmp://h/live"), None, None)).contains("streamKey"));
        assert!(msg(body(Some("rtmp://h/live"), Some("a\nb"), None)).contains("streamKey"));
        assert_eq!(
            new_output(body(Some("ftp://h"), Some("k"), None))
                .unwrap_err()
                .status(),
            axum::http::StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn updates_change_only_enabled() {
        assert!(
            !output_update(body(None, None, Some(false)))
                .unwrap()
                .enabled
        );
        assert!(output_update(body(None, None, None)).is_err());
        let row = OutputRow {
            uid: "o".into(),
            input_uid: "i".into(),
            account_id: "a".into(),
            url: "rtmp://x/y".into(),
            stream_key: "k".into(),
            enabled: true,
            created: 0,
        };
        let same = output_update(body(Some("rtmp://x/y"), Some("k"), Some(true))).unwrap();
        assert!(same.check_against(&row).is_ok());
        let moved = output_update(body(Some("rtmp://x/z"), None, Some(true))).unwrap();
        let e = moved.check_against(&row).unwrap_err();
        assert!(format!("{e:?}").contains("url, streamKey"));
        let rekeyed = output_update(body(None, Some("k2"), Some(true))).unwrap();
        assert!(rekeyed.check_against(&row).is_err());
    }
}
