//! Discovery metadata (RFC 8414, OpenID Connect Discovery) and the JWKS, and what a person or a
//! program finds elsewhere at the issuer URL: a landing page at its root, and a 404 that points
//! at discovery (a page for browsers, OAuth JSON for everything else).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::Value;

use super::error::OAuthError;
use super::pages;
use super::state::ProviderState;
use crate::published;

/// GET / (the issuer URL itself): what kauth is, and where its endpoints are listed.
pub async fn landing(State(state): State<ProviderState>) -> Response {
    pages::notice(
        StatusCode::OK,
        "kauth",
        "This is kauth, an OAuth 2.0 and OpenID Connect provider. Applications find its endpoints in its discovery document:",
        &state.issuer.endpoint("/.well-known/openid-configuration"),
    )
}

/// Any other path: 404 with a word on where to look, as a page for a browser (it asks for
/// HTML) and as an RFC 6749 error for everything else.
pub async fn not_found(State(state): State<ProviderState>, request: Request) -> Response {
    let discovery = state.issuer.endpoint("/.well-known/openid-configuration");
    let path = request.uri().path();
    let browser = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        pages::notice(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("There is nothing at {path}. kauth's endpoints are listed in its discovery document:"),
            &discovery,
        )
    } else {
        OAuthError::not_found(format!(
            "there is no endpoint at {path}; kauth's endpoints are listed at {discovery}"
        ))
        .into_response()
    }
}

fn metadata(state: &ProviderState) -> Value {
    let snapshot = state.registry.load();
    let mut doc = published::discovery(
        &state.issuer,
        &snapshot.keys,
        state.service_accounts.is_some(),
        Timestamp::now(),
    );
    if state.par_required {
        doc["require_pushed_authorization_requests"] = Value::Bool(true);
    }
    doc
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
