//! The HTTP API: live inputs, accounts and ingest domains in Cloudflare
//! Stream Live's shapes, plus the public per-input endpoints and metrics.
//!
//! Every `/client/v4` answer, errors included, is the envelope
//! `{"result", "success", "errors": [{"code", "message"}], "messages"}`.
//! Error codes: 10000 missing or bad token (401), 10001 operator token
//! required (403), 10003 not found (404), 10005 bad request (400), 10009
//! conflict (409), 10013 body or `meta` too large (413), 10040 quota
//! `max_inputs_per_account` reached (403), 10002 a reserved name (the
//! node's own host, 403), 10431 over `max_domain_orders` (429), 10429 too many failed token
//! attempts from this address (429), 10430 over the token's request rate
//! `api_rate` (429), 10100 internal (500), 10503 the
//! database is unreachable for now, retry later (503, within the store's
//! connection timeout; live streams are not affected).
//!
//! Tokens are bound to one account; another account's objects answer 404.
//! The admin token belongs to the default account and may also manage
//! accounts.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::{Hooks, Quotas};
use crate::inputs::Inputs;
use crate::node::Urls;
use crate::secret;
use crate::store::Store;

mod accounts;
mod caller;
mod domains;
mod envelope;
#[cfg(test)]
mod in_process;
pub(crate) mod inputs;
mod outputs;
pub mod signing;
mod tokens;
mod webhook;
use crate::store::{now_micros, LiveInputRow};
pub use caller::Auth;
pub use envelope::ApiError;
pub(crate) use envelope::{ok, ok_info, ok_list, ApiResult};
pub use tokens::MAX_TOKENS_PER_ACCOUNT;

pub use crate::quota::MAX_BODY;

/// What the REST API (and the GraphQL endpoint it routes to) uses; built
/// by the composition root.
pub struct Context {
    pub store: Store,
    /// The token check.
    pub auth: Arc<crate::auth::Auth>,
    /// The key table and statuses of live inputs.
    pub inputs: Arc<Inputs>,
    /// The URLs written into answers.
    pub urls: Urls,
    pub hub: Arc<banyan_relay::Hub>,
    pub views: Arc<banyan_relay::views::Views>,
    pub captions: Arc<banyan_captions::Registry>,
    pub playback: Arc<crate::playback::Gate>,
    pub outputs: Arc<crate::outputs::Outputs>,
    pub acme: Arc<crate::acme::Acme>,
    pub domains: Arc<crate::acme::Domains>,
    pub quotas: Quotas,
    pub hooks: Hooks,
    /// Where credentials.json is (admin token rotation).
    pub data_dir: PathBuf,
    /// The metrics page (`/metrics` with the admin token).
    pub metrics: Arc<crate::exposition::Context>,
    /// `POST /client/v4/graphql`.
    pub analytics: Arc<crate::analytics::Context>,
}

impl crate::auth::HasAuth for Arc<Context> {
    fn auth(&self) -> &crate::auth::Auth {
        &self.auth
    }
}

type St = Arc<Context>;

/// A JSON body; an empty body is `{}`. Errors come in the envelope.
pub struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    10013,
                    format!("request body over {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request(format!("unreadable body: {e}"))
            }
        })?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Decode a request body as every endpoint does: a body of only whitespace
/// is `{}`; anything that is not the expected JSON is a 400 with the reason.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The endpoints that take a JSON body (GraphQL has its own, see
/// [`crate::analytics::graphql::check_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST .../live_inputs`, `PUT .../live_inputs/{uid}`.
    LiveInput,
    /// `POST /client/v4/accounts`.
    Account,
    /// `POST .../ingest_domains`.
    Domain,
    /// `POST /client/v4/accounts/{id}/tokens`.
    Token,
    /// `PUT .../stream/webhook` (the URL's syntax; its addresses are
    /// checked by resolving).
    Webhook,
    /// `POST .../live_inputs/{uid}/outputs`.
    Output,
    /// `PUT .../live_inputs/{uid}/outputs/{output_uid}`.
    OutputUpdate,
}

/// Decode and check a request body of `kind` exactly as its endpoint does
/// before it touches the store: the entry point of the `api_bodies` fuzz
/// target. `Ok` means the endpoint would go on to store the request.
pub fn check_body(kind: BodyKind, bytes: &[u8]) -> Result<(), ApiError> {
    match kind {
        BodyKind::LiveInput => {
            let body: InputBody = decode_json(bytes)?;
            body.check(crate::quota::DEFAULT_MAX_META_BYTES)?;
            let mut row = LiveInputRow::new("", "", 0);
            body.apply(&mut row);
        }
        BodyKind::Account => {
            accounts::account_name(decode_json(bytes)?)?;
        }
        BodyKind::Domain => {
            domains::new_domain(decode_json(bytes)?)?;
        }
        BodyKind::Token => {
            tokens::token_name(decode_json(bytes)?)?;
        }
        BodyKind::Webhook => {
            webhook::webhook_target(decode_json(bytes)?)?;
        }
        BodyKind::Output => {
            outputs::new_output(decode_json(bytes)?)?;
        }
        BodyKind::OutputUpdate => {
            outputs::output_update(decode_json(bytes)?)?;
        }
    }
    Ok(())
}

/// The router of the API, public per-input endpoints and metrics.
pub fn router(node: St) -> Router {
    let stream = "/client/v4/accounts/{account}/stream";
    Router::new()
        .route(
            "/client/v4/accounts",
            post(accounts::create_account).get(accounts::list_accounts),
        )
        .route(
            &format!("{stream}/live_inputs"),
            post(create_input).get(inputs::list_inputs),
        )
        .route(
            &format!("{stream}/live_inputs/{{uid}}"),
            get(get_input).put(update_input).delete(delete_input),
        )
        .route(
            &format!("{stream}/live_inputs/{{uid}}/rotate_keys"),
            post(rotate_keys),
        )
        .route(
            &format!("{stream}/live_inputs/{{uid}}/outputs"),
            post(outputs::create_output).get(outputs::list_outputs),
        )
        .route(
            &format!("{stream}/live_inputs/{{uid}}/outputs/{{output}}"),
            axum::routing::put(outputs::update_output).delete(outputs::delete_output),
        )
        .route(
            "/client/v4/accounts/{account}/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route(
            "/client/v4/accounts/{account}/tokens/{token_id}",
            axum::routing::delete(tokens::revoke_token),
        )
        .route("/client/v4/admin/rotate", post(tokens::rotate_admin))
        .route(
            &format!("{stream}/webhook"),
            axum::routing::put(webhook::put_webhook)
                .get(webhook::get_webhook)
                .delete(webhook::delete_webhook),
        )
        .route("/{uid}/lifecycle", get(inputs::lifecycle))
        .route("/{uid}/views", get(inputs::views))
        .route("/metrics", get(metrics_text))
        .route("/client/v4/graphql", post(graphql))
        .merge(domains::routes(stream))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 10005, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(node)
}

/// `POST /client/v4/graphql`: analytics answers (under the API's body
/// limit and fallbacks).
async fn graphql(
    State(node): State<St>,
    ip: crate::auth::ClientIp,
    req: axum::extract::Request,
) -> Response {
    crate::analytics::handler(node.analytics.clone(), ip, req).await
}

// ---- live inputs

/// One caption channel of a live input.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Caption {
    instream_id: String,
    language: String,
    #[serde(default)]
    name: String,
}

/// The writable fields of a live input (unknown fields are ignored, as a
/// platform moving from another service may send them).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputBody {
    meta: Option<Map<String, Value>>,
    default_creator: Option<String>,
    enabled: Option<bool>,
    captions: Option<Vec<Caption>>,
    recording: Option<Value>,
    /// `null` removes it, so a given `null` is kept apart from absence.
    #[serde(default, deserialize_with = "inputs::present")]
    delete_recording_after_days: Option<Value>,
    prefer_low_latency: Option<bool>,
}

fn valid_instream_id(id: &str) -> bool {
    matches!(id, "CC1" | "CC2" | "CC3" | "CC4")
        || id
            .strip_prefix("SERVICE")
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=63).contains(&n) && !id.starts_with("SERVICE0"))
}

impl InputBody {
    /// Check the fields; `meta` may be at most `max_meta` bytes serialized.
    fn check(&self, max_meta: usize) -> Result<(), ApiError> {
        if let Some(m) = &self.meta {
            crate::quota::check_meta(meta_len(m), max_meta)?;
        }
        if let Some(c) = &self.default_creator {
            if c.len() > 256 {
                return Err(ApiError::bad_request("defaultCreator over 256 bytes"));
            }
        }
        if let Some(caps) = &self.captions {
            if caps.len() > 67 {
                return Err(ApiError::bad_request("too many captions"));
            }
            let mut seen = std::collections::HashSet::new();
            for c in caps {
                if !valid_instream_id(&c.instream_id) {
                    return Err(ApiError::bad_request(format!(
                        "captions: instreamId must be CC1..CC4 or SERVICE1..SERVICE63, not {:?}",
                        c.instream_id
                    )));
                }
                if !seen.insert(c.instream_id.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "captions: {} given twice",
                        c.instream_id
                    )));
                }
                let lang_ok = !c.language.is_empty()
                    && c.language.len() <= 35
                    && c.language
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !lang_ok {
                    return Err(ApiError::bad_request(
                        "captions: language must be a language tag such as \"en\"",
                    ));
                }
                if c.name.len() > 128 {
                    return Err(ApiError::bad_request("captions: name over 128 bytes"));
                }
            }
        }
        if let Some(r) = &self.recording {
            crate::playback::recording::merge("{}", r).map_err(ApiError::bad_request)?;
        }
        if let Some(d) = &self.delete_recording_after_days {
            inputs::delete_days(d)?;
        }
        Ok(())
    }

    /// Apply the given fields to a row.
    fn apply(self, row: &mut LiveInputRow) {
        if let Some(m) = self.meta {
            row.meta = Value::Object(m).to_string();
        }
        if let Some(c) = self.default_creator {
            row.default_creator = c;
        }
        if let Some(e) = self.enabled {
            row.enabled = e;
        }
        if let Some(c) = self.captions {
            // Invariant: a Vec of plain structs always serializes.
            row.captions = serde_json::to_string(&c).expect("captions serialize");
        }
        if let Some(r) = self.recording {
            // Checked by `check`; a failure here keeps the stored object.
            if let Ok(merged) = crate::playback::recording::merge(&row.recording, &r) {
                // Invariant: a plain struct always serializes.
                row.recording = serde_json::to_string(&merged).expect("recording serializes");
            }
        }
        inputs::apply(
            row,
            self.delete_recording_after_days.as_ref(),
            self.prefer_low_latency,
        );
    }
}

/// The serialized size of a `meta` object, as it is stored.
fn meta_len(m: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, m);
    c.0
}

pub(crate) fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A live input as the API shows it.
async fn input_json(node: &Context, r: &LiveInputRow) -> Value {
    let status = node.inputs.input_status(&r.uid).await;
    let rtmps = format!(
        "rtmps://{}/live/",
        node.urls.authority(node.urls.addrs.rtmps)
    );
    let srt = format!("srt://{}", node.urls.authority(node.urls.addrs.srt));
    let http = node.urls.api_url();
    let meta: Value = serde_json::from_str(&r.meta).unwrap_or_else(|_| json!({}));
    let captions = crate::captions::input_captions(&node.captions, r);
    let mut v = json!({
        "uid": r.uid,
        "created": rfc3339(r.created),
        "modified": rfc3339(r.modified),
        "meta": meta,
        "defaultCreator": r.default_creator,
        "enabled": r.enabled,
        "rtmps": {"url": rtmps, "streamKey": r.stream_key},
        "rtmpsPlayback": {"url": rtmps, "streamKey": r.playback_key},
        "srt": {"url": srt, "streamId": r.uid, "passphrase": r.srt_passphrase},
        "srtPlayback": {"url": srt, "streamId": format!("play{}", r.uid),
                        "passphrase": r.srt_play_passphrase},
        "hls": {"url": format!("{http}/{}/manifest/video.m3u8", r.uid)},
        "watch": {"url": format!("{http}/{}/watch", r.uid)},
        "captions": captions,
        "recording": crate::playback::recording::load(&r.recording),
    });
    if let Some(a) = node.urls.addrs.rtmp {
        let rtmp = format!("rtmp://{}/live/", node.urls.authority(a));
        v["rtmp"] = json!({"url": rtmp, "streamKey": r.stream_key});
        v["rtmpPlayback"] = json!({"url": rtmp, "streamKey": r.playback_key});
    }
    inputs::extend(node, r, &mut v, status);
    v
}

pub(crate) async fn load_input(
    store: &Store,
    account: &str,
    uid: &str,
) -> Result<LiveInputRow, ApiError> {
    if !secret::is_id(uid) {
        return Err(ApiError::not_found("live input"));
    }
    store
        .input(account, uid)
        .await?
        .ok_or_else(|| ApiError::not_found("live input"))
}

async fn create_input(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<InputBody>,
) -> ApiResult {
    auth.scope(&account)?;
    body.check(node.quotas.max_meta_bytes)?;
    let max = node.quotas.max_inputs_per_account;
    if node.store.count_inputs(&account).await? >= max as i64 {
        return Err(crate::quota::inputs_refusal(max).into());
    }
    let mut row = LiveInputRow {
        stream_key: secret::new_secret(),
        playback_key: secret::new_secret(),
        srt_passphrase: secret::new_secret(),
        srt_play_passphrase: secret::new_secret(),
        ..LiveInputRow::new(&secret::new_id(), &account, now_micros())
    };
    body.apply(&mut row);
    inputs::created(&mut row);
    node.store.insert_input(&row).await?;
    node.inputs.input_changed(&row).await;
    metrics::counter!("banyan_live_inputs_created_total").increment(1);
    tracing::info!(account = %row.account_id, input = %row.uid, "live input created");
    Ok(ok(input_json(&node, &row).await))
}

async fn get_input(
    State(node): State<St>,
    auth: Auth,
    Path((account, uid)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    let row = load_input(&node.store, &account, &uid).await?;
    Ok(ok(input_json(&node, &row).await))
}

async fn update_input(
    State(node): State<St>,
    auth: Auth,
    Path((account, uid)): Path<(String, String)>,
    JsonBody(body): JsonBody<InputBody>,
) -> ApiResult {
    auth.scope(&account)?;
    let mut row = load_input(&node.store, &account, &uid).await?;
    body.check(node.quotas.max_meta_bytes)?;
    body.apply(&mut row);
    row.modified = now_micros().max(row.modified + 1);
    if !node.store.update_input(&row).await? {
        return Err(ApiError::not_found("live input"));
    }
    // Disabling ends the current session.
    node.inputs.input_changed(&row).await;
    tracing::info!(account = %account, input = %uid, "live input updated");
    Ok(ok(input_json(&node, &row).await))
}

async fn delete_input(
    State(node): State<St>,
    auth: Auth,
    Path((account, uid)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    if !secret::is_id(&uid) || !node.store.delete_input(&account, &uid).await? {
        return Err(ApiError::not_found("live input"));
    }
    // Ends the input's sessions.
    node.inputs.input_deleted(&uid).await;
    node.inputs.forget(&uid);
    node.store.delete_outputs_of(&uid).await?;
    node.outputs.changed();
    if let Err(e) = node.store.forget_input_status(&uid).await {
        tracing::debug!("forgetting a deleted input's status: {e}");
    }
    tracing::info!(account = %account, input = %uid, "live input deleted");
    Ok(ok(Value::Null))
}

async fn rotate_keys(
    State(node): State<St>,
    auth: Auth,
    Path((account, uid)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    let mut row = load_input(&node.store, &account, &uid).await?;
    row.stream_key = secret::new_secret();
    row.playback_key = secret::new_secret();
    row.srt_passphrase = secret::new_secret();
    row.srt_play_passphrase = secret::new_secret();
    row.modified = now_micros().max(row.modified + 1);
    let at = row.modified;
    inputs::rotated(&mut row, at);
    if !node.store.update_input(&row).await? {
        return Err(ApiError::not_found("live input"));
    }
    // Old keys stop working first, then their sessions are ended.
    node.inputs.input_changed(&row).await;
    tracing::info!(account = %account, input = %uid, "live input keys rotated");
    Ok(ok(input_json(&node, &row).await))
}

// ---- public per-input endpoints and metrics

/// `/metrics` on the public port: the admin token only (scrapers use the
/// metrics listener).
async fn metrics_text(State(node): State<St>, auth: Auth) -> ApiResult {
    auth.admin()?;
    Ok(crate::exposition::answer(&node.metrics))
}

#[cfg(test)]
mod tests;
