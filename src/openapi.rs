//! The OpenAPI 3 document of the HTTP API (`docs/openapi.json`, embedded at
//! build time), served at `GET /openapi.json` without a token.
//! `tests/openapi.rs` checks it against the routes the node serves.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The document, as checked in.
pub const DOCUMENT: &str = include_str!("../docs/openapi.json");

/// `GET /openapi.json`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response() }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_json() {
        let v: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        assert!(v["paths"].as_object().unwrap().len() > 20);
    }
}
