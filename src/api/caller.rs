//! The caller of a REST endpoint: its token, checked by the one
//! [`crate::auth::Auth`] of the router's state.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::ApiError;
use crate::store::TokenInfo;

/// The caller's token, checked by [`crate::auth::Auth`] (REST).
pub struct Auth(pub(super) TokenInfo);

impl<S: crate::auth::HasAuth + Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        match state
            .auth()
            .check(&parts.headers, ip, crate::auth::Api::Rest)
            .await
        {
            Ok(info) => Ok(Auth(info)),
            Err(crate::auth::Refused::Token(e)) => Err(e.into()),
            Err(crate::auth::Refused::Rate(r)) => Err(r.into()),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        let code = match e.status() {
            StatusCode::UNAUTHORIZED => 10000,
            StatusCode::TOO_MANY_REQUESTS => 10429,
            StatusCode::SERVICE_UNAVAILABLE => 10503,
            _ => 10100,
        };
        ApiError::new(e.status(), code, e.message())
    }
}

impl Auth {
    /// The token may act on `account`: another account is "not found".
    pub(crate) fn scope(&self, account: &str) -> Result<(), ApiError> {
        if self.0.account_id == account {
            Ok(())
        } else {
            Err(ApiError::not_found("account"))
        }
    }

    pub(super) fn admin(&self) -> Result<(), ApiError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}
