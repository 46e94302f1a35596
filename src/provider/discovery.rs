//! Discovery metadata (RFC 8414, OpenID Connect Discovery) and the JWKS.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::Value;

use super::ProviderState;
use crate::published;

fn metadata(state: &ProviderState) -> Value {
    let snapshot = state.registry.load();
    published::discovery(
        &state.issuer,
        &snapshot.keys,
        state.service_accounts.is_some(),
        Timestamp::now(),
    )
}

/// GET /.well-known/oauth-authorization-server
pub async fn authorization_server_metadata(State(state): State<ProviderState>) -> Response {
    cached(Json(metadata(&state)).into_response())
}

/// GET /.well-known/openid-configuration: the same facts (RFC 8414 and OpenID Connect
/// Discovery share their names).
pub async fn openid_configuration(State(state): State<ProviderState>) -> Response {
    cached(Json(metadata(&state)).into_response())
}

/// GET /jwks: every published key (pending, active and retired).
pub async fn jwks(State(state): State<ProviderState>) -> Response {
    let snapshot = state.registry.load();
    cached(Json(published::jwks(&snapshot.keys, Timestamp::now())).into_response())
}

/// Short public caching: resource servers refresh well inside the publish-ahead window.
fn cached(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
