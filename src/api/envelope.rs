//! The envelope of every `/client/v4` answer: `{"result", "success",
//! "errors": [{"code", "message"}], "messages"}`, and [`ApiError`], the
//! error answered in it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An API error, answered in the envelope.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: u32,
    pub(super) message: String,
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            10000,
            "Authentication error: missing or invalid API token",
        )
    }
    pub(super) fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            10001,
            "an operator (admin) token is required",
        )
    }
    pub(crate) fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, 10003, format!("{what} not found"))
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, 10005, message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, 10009, message)
    }
    /// The database cannot be reached now (503). The outage itself is
    /// logged once by the background tasks, not per request.
    pub(super) fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
        tracing::debug!("API: {e:#}");
        metrics::counter!("banyan_api_unavailable_total").increment(1);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            10503,
            "the database is unreachable; retry later",
        )
    }
    pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("API: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 10100, "internal error")
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::unavailable(&e) {
            return ApiError::unavailable(&e);
        }
        ApiError::internal(e)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<sqlx::Error>() {
            Some(db) if crate::store::unavailable(db) => ApiError::unavailable(&e),
            _ => ApiError::internal(format!("{e:#}")),
        }
    }
}

impl From<crate::quota::Refusal> for ApiError {
    fn from(r: crate::quota::Refusal) -> Self {
        ApiError::new(r.status, r.code, r.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "result": null,
            "success": false,
            "errors": [{"code": self.code, "message": self.message}],
            "messages": [],
        });
        (self.status, Json(body)).into_response()
    }
}

/// A successful answer in the envelope.
pub(crate) fn ok(result: Value) -> Response {
    Json(json!({"result": result, "success": true, "errors": [], "messages": []})).into_response()
}

/// A successful answer for a collection of `count` items, all in this one
/// page, with Cloudflare's `result_info`.
pub(crate) fn ok_info(result: Value, count: usize) -> Response {
    Json(json!({
        "result": result,
        "result_info": {"page": 1, "per_page": count, "count": count, "total_count": count},
        "success": true,
        "errors": [],
        "messages": [],
    }))
    .into_response()
}

/// A collection answered as an array, with `result_info`.
pub(crate) fn ok_list(items: Vec<Value>) -> Response {
    let n = items.len();
    ok_info(Value::Array(items), n)
}

pub(crate) type ApiResult = Result<Response, ApiError>;
