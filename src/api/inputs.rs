//! The live-input fields beside the credentials, in Cloudflare's shapes:
//! `deleteRecordingAfterDays`, `preferLowLatency` and `keysRotatedAt`
//! (stored together in the `options` column), the WebRTC URLs, the list
//! answer `{liveInputs, range, total}` without secrets, and the public
//! `lifecycle` and `views` answers.
//!
//! Recording is not built: `deleteRecordingAfterDays` and `recording.mode`
//! are stored and returned, and `videoUID` is always null.
//! `preferLowLatency` is stored and returned; LL-HLS is always on.

use axum::extract::{Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::Context;
use super::{rfc3339, ApiError, ApiResult, Auth, St};
use crate::store::LiveInputRow;

/// Cloudflare's smallest `deleteRecordingAfterDays`.
pub const MIN_DELETE_DAYS: i64 = 30;
/// The largest accepted (a hundred years).
pub const MAX_DELETE_DAYS: i64 = 36_500;

/// The stored `options` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InputOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_recording_after_days: Option<i64>,
    pub prefer_low_latency: bool,
    /// Microseconds since the epoch of the last `rotate_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_rotated_at: Option<i64>,
    /// The secret of `webRTC.url` (WHIP publishing), distinct from the
    /// other publish secrets; replaced by `rotate_keys`. Inputs made before
    /// it existed get one at their next rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webrtc_key: Option<String>,
}

/// The stored object (an unreadable value is the default).
pub fn load(stored: &str) -> InputOptions {
    serde_json::from_str(stored).unwrap_or_default()
}

fn store(o: &InputOptions) -> String {
    // Invariant: a plain struct always serializes.
    serde_json::to_string(o).expect("options serialize")
}

/// A present field as `Some` (`null` included), an absent one as `None`.
pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `deleteRecordingAfterDays` of a request: `Some(None)` removes it.
pub(super) fn delete_days(v: &Value) -> Result<Option<i64>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let days = v
        .as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
    match days {
        Some(d) if (MIN_DELETE_DAYS..=MAX_DELETE_DAYS).contains(&d) => Ok(Some(d)),
        _ => Err(ApiError::bad_request(format!(
            "deleteRecordingAfterDays must be null or a whole number of days from \
             {MIN_DELETE_DAYS} to {MAX_DELETE_DAYS}"
        ))),
    }
}

/// Apply the request's fields (already checked) to the row's options.
pub(super) fn apply(row: &mut LiveInputRow, delete_after: Option<&Value>, low: Option<bool>) {
    if delete_after.is_none() && low.is_none() {
        return;
    }
    let mut o = load(&row.options);
    if let Some(v) = delete_after {
        if let Ok(d) = delete_days(v) {
            o.delete_recording_after_days = d;
        }
    }
    if let Some(l) = low {
        o.prefer_low_latency = l;
    }
    row.options = store(&o);
}

/// Give a new input its WebRTC publish secret.
pub(super) fn created(row: &mut LiveInputRow) {
    let mut o = load(&row.options);
    o.webrtc_key = Some(crate::secret::new_secret());
    row.options = store(&o);
}

/// Note a key rotation at `now` (microseconds), with a new WebRTC secret.
pub(super) fn rotated(row: &mut LiveInputRow, now: i64) {
    let mut o = load(&row.options);
    o.keys_rotated_at = Some(now);
    o.webrtc_key = Some(crate::secret::new_secret());
    row.options = store(&o);
}

/// Add the fields of this module to a live input's full JSON.
pub(super) fn extend(node: &Context, r: &LiveInputRow, v: &mut Value, status: Option<String>) {
    let o = load(&r.options);
    let http = node.urls.api_url();
    if let Some(d) = o.delete_recording_after_days {
        v["deleteRecordingAfterDays"] = json!(d);
    }
    v["preferLowLatency"] = json!(o.prefer_low_latency);
    v["keysRotatedAt"] = json!(o.keys_rotated_at.map(rfc3339));
    v["status"] = json!(status);
    if let Some(k) = &o.webrtc_key {
        v["webRTC"] = json!({"url": format!("{http}/{k}/webRTC/publish")});
    }
    v["webRTCPlayback"] = json!({"url": format!("{http}/{}/webRTC/play", r.uid)});
    v["playback"] = json!({"hls": format!("{http}/{}/manifest/video.m3u8", r.uid)});
}

/// A live input as the list shows it: no credentials.
fn list_item(r: &LiveInputRow) -> Value {
    let meta: Value = serde_json::from_str(&r.meta).unwrap_or_else(|_| json!({}));
    let mut v = json!({
        "uid": r.uid,
        "created": rfc3339(r.created),
        "modified": rfc3339(r.modified),
        "meta": meta,
        "enabled": r.enabled,
    });
    if let Some(d) = load(&r.options).delete_recording_after_days {
        v["deleteRecordingAfterDays"] = json!(d);
    }
    v
}

/// The `include_counts` query parameter (`true`/`false`); any other
/// parameter is refused by name.
pub(super) fn list_query(q: Option<&str>) -> Result<bool, ApiError> {
    let mut counts = false;
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, v) {
            ("include_counts", "true" | "") => counts = true,
            ("include_counts", "false") => counts = false,
            ("include_counts", _) => {
                return Err(ApiError::bad_request(
                    "include_counts must be true or false",
                ))
            }
            _ => {
                let name: String = k.chars().take(64).collect();
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?} (live inputs take include_counts)"
                )));
            }
        }
    }
    Ok(counts)
}

/// `GET .../live_inputs`: `{liveInputs, range, total}`. Every input of the
/// account is in one answer (an account has at most
/// `max_inputs_per_account`), so `range` and `total` are both the count;
/// they are answered with or without `include_counts`.
pub(super) async fn list_inputs(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    auth.scope(&account)?;
    list_query(q.as_deref())?;
    let rows = node.store.list_inputs(&account).await?;
    let n = rows.len();
    let result = json!({
        "liveInputs": rows.iter().map(list_item).collect::<Vec<_>>(),
        "range": n,
        "total": n,
    });
    Ok(super::ok_info(result, n))
}

/// `GET /<uid>/lifecycle`: `{isInput, videoUID, live, status}` (`videoUID`
/// is null: recording is not built). Answers for a guarded input need its
/// playback token in place of the uid.
pub(super) async fn lifecycle(
    State(node): State<St>,
    Path(segment): Path<String>,
    parts: Parts,
) -> Response {
    let Some(uid) = crate::api::signing::public_uid(&node.playback, &segment, &parts) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"isInput": false, "videoUID": null, "live": false, "status": null})),
        )
            .into_response();
    };
    let live = node.hub.state(&uid) == banyan_relay::StreamState::Live;
    let status = node.inputs.input_status(&uid).await;
    Json(json!({"isInput": true, "videoUID": null, "live": live, "status": status})).into_response()
}

/// `GET /<uid>/views`: `{liveViewers}`, null when the input's
/// `recording.hideLiveViewerCount` is set.
pub(super) async fn views(
    State(node): State<St>,
    Path(segment): Path<String>,
    parts: Parts,
) -> Response {
    let Some(uid) = crate::api::signing::public_uid(&node.playback, &segment, &parts) else {
        return ApiError::not_found("live input").into_response();
    };
    if node.playback.hides_viewer_count(&uid) {
        return Json(json!({"liveViewers": null})).into_response();
    }
    Json(json!({"liveViewers": node.views.live(&uid)})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_days_bounds() {
        assert_eq!(delete_days(&json!(null)).unwrap(), None);
        assert_eq!(delete_days(&json!(30)).unwrap(), Some(30));
        assert_eq!(delete_days(&json!(45.0)).unwrap(), Some(45));
        for bad in [
            json!(29),
            json!(36_501),
            json!(45.5),
            json!("45"),
            json!(true),
        ] {
            let e = delete_days(&bad).unwrap_err();
            assert!(e.message.contains("deleteRecordingAfterDays"), "{bad}");
        }
    }

    #[test]
    fn options_round_trip_and_list_item_has_no_secrets() {
        let mut row = crate::store::LiveInputRow {
            meta: r#"{"name":"x"}"#.into(),
            stream_key: "SECRET1".into(),
            playback_key: "SECRET2".into(),
            srt_passphrase: "SECRET3".into(),
            srt_play_passphrase: "SECRET4".into(),
            ..crate::store::LiveInputRow::new("u", "a", 0)
        };
        created(&mut row);
        let first = load(&row.options).webrtc_key.expect("a WebRTC secret");
        assert_eq!(first.len(), 64);
        apply(&mut row, Some(&json!(45)), Some(true));
        assert_eq!(load(&row.options).webrtc_key.as_ref(), Some(&first), "kept");
        rotated(&mut row, 1_000_000);
        let o = load(&row.options);
        assert_ne!(o.webrtc_key.as_ref(), Some(&first), "rotated");
        assert!(!list_item(&row)
            .to_string()
            .contains(o.webrtc_key.as_deref().unwrap()));
        assert_eq!(o.delete_recording_after_days, Some(45));
        assert!(o.prefer_low_latency);
        assert_eq!(o.keys_rotated_at, Some(1_000_000));
        apply(&mut row, Some(&json!(null)), None);
        assert_eq!(load(&row.options).delete_recording_after_days, None);
        assert!(load(&row.options).prefer_low_latency, "kept when not given");
        apply(&mut row, Some(&json!(60)), None);
        let item = list_item(&row).to_string();
        assert!(!item.contains("SECRET"), "{item}");
        assert!(item.contains(r#""deleteRecordingAfterDays":60"#), "{item}");
        assert_eq!(load("not json"), InputOptions::default());
    }

    #[test]
    fn list_query_params() {
        assert!(!list_query(None).unwrap());
        assert!(list_query(Some("include_counts=true")).unwrap());
        assert!(!list_query(Some("include_counts=false")).unwrap());
        assert!(list_query(Some("include_counts=maybe")).is_err());
        let e = list_query(Some("limit=5")).unwrap_err();
        assert!(e.message.contains("limit"), "{}", e.message);
    }
}
