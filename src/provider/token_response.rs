//! The token endpoint's successful answer, the same shape for every grant: both `token` (the
//! grants for clients) and `grants` (the grants for people) build it, and neither imports the
//! other for it.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::no_store;

/// A successful token response (RFC 6749 §5.1; RFC 8693 §2.2.1), for every grant.
#[derive(Serialize)]
pub(super) struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

impl TokenResponse {
    /// A Bearer access token valid for `expires_in` seconds.
    pub fn bearer(access_token: String, expires_in: u64, scope: Option<String>) -> Self {
        Self {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope,
            id_token: None,
            refresh_token: None,
            issued_token_type: None,
        }
    }
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let mut response = Json(self).into_response();
        no_store(&mut response);
        response
    }
}
