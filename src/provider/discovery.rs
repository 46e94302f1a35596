//! Discovery metadata (RFC 8414, OpenID Connect Discovery) and the JWKS.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::ProviderState;
use super::browser_flow::IDENTITY_SCOPES;
use crate::crd::GrantType;

fn metadata(state: &ProviderState) -> Value {
    let issuer = &state.issuer;
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let mut algs: Vec<String> = snapshot
        .keys
        .published(now)
        .map(|k| format!("{:?}", k.algorithm))
        .collect();
    algs.sort();
    algs.dedup();
    let secretless = state.service_accounts.is_some();
    // private_key_jwt: a JWT client assertion, here a projected ServiceAccount token.
    let mut auth_methods = vec!["client_secret_basic", "client_secret_post"];
    if secretless {
        auth_methods.push("private_key_jwt");
    }
    let grants: Vec<&str> = GrantType::ALL
        .into_iter()
        .filter(|g| secretless || !g.needs_cluster())
        .map(GrantType::as_str)
        .collect();
    // Public clients authenticate with none at the token endpoint (never at introspection).
    let mut token_auth_methods = auth_methods.clone();
    token_auth_methods.push("none");
    let id_token_algs: Vec<&str> = ["RS256", "ES256", "EdDSA"]
        .into_iter()
        .filter(|a| algs.iter().any(|have| have == a))
        .collect();
    json!({
        "issuer": issuer.url,
        "authorization_endpoint": issuer.endpoint("/authorize"),
        "token_endpoint": issuer.endpoint("/token"),
        "device_authorization_endpoint": issuer.endpoint("/device_authorization"),
        "userinfo_endpoint": issuer.endpoint("/userinfo"),
        "end_session_endpoint": issuer.endpoint("/end_session"),
        "jwks_uri": issuer.endpoint("/jwks"),
        "introspection_endpoint": issuer.endpoint("/introspect"),
        "revocation_endpoint": issuer.endpoint("/revoke"),
        "scopes_supported": IDENTITY_SCOPES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grants,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": token_auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": token_auth_methods,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": id_token_algs,
        "access_token_signing_alg_values_supported": algs,
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "amr",
            "name", "preferred_username", "email", "email_verified", "groups"
        ],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    })
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
    let keys: Vec<_> = snapshot.keys.published(Timestamp::now()).map(|k| &k.jwk).collect();
    cached(Json(json!({ "keys": keys })).into_response())
}

/// Short public caching: resource servers refresh well inside the publish-ahead window.
fn cached(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
