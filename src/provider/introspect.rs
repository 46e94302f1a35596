//! Token introspection (RFC 7662) and revocation (RFC 7009), both for authenticated clients.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;

use super::browser::handle_digest;
use super::client_auth::authenticate;
use super::error::{OAuthError, no_store};
use super::form::Form;
use super::sender;
use super::state::ProviderState;
use std::sync::Arc;

use crate::registry::{RegisteredClient, Snapshot};
use crate::store::ClientObject;
use crate::tokens::{AccessTokenClaims, verify};

/// A caller may see a token it was issued, or one addressed to an API whose audience the
/// caller's namespace owns (the API's resource server). Anything else introspects as inactive.
fn may_see(snapshot: &Snapshot, caller: &RegisteredClient, claims: &AccessTokenClaims) -> bool {
    caller.client_id == claims.client_id
        || claims
            .aud
            .iter()
            .any(|aud| snapshot.audience_owners.get(&crate::claims::claim_key(aud)) == Some(&caller.namespace))
}

/// A token is active when it verifies, is not revoked, and its client still exists.
fn active_claims(
    state: &ProviderState,
    snapshot: &Snapshot,
    token: &str,
    now: Timestamp,
) -> Option<std::sync::Arc<AccessTokenClaims>> {
    let claims = state.verified.verify(&snapshot.keys, &state.issuer.url, token, now)?;
    (!state.revocations.is_revoked(&claims.jti) && snapshot.clients.contains_key(&claims.client_id)).then_some(claims)
}

/// What introspection and revocation both start from.
struct TokenRequest {
    snapshot: Arc<Snapshot>,
    caller: Arc<RegisteredClient>,
    token: String,
    now: Timestamp,
}

/// A POSTed form from an authenticated client, with its `token` parameter.
async fn read_request(
    state: &ProviderState,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<TokenRequest, OAuthError> {
    if method != Method::POST {
        return Err(OAuthError::method_not_allowed());
    }
    let form = Form::read(headers, body).await?;
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let caller = authenticate(state, &snapshot, headers, &form, now).await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?
        .to_string();
    Ok(TokenRequest {
        snapshot,
        caller,
        token,
        now,
    })
}

/// POST /introspect
pub async fn introspect(
    State(state): State<ProviderState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let TokenRequest {
            snapshot,
            caller,
            token,
            now,
        } = read_request(&state, method, &headers, body).await?;
        if caller.is_public() {
            // Introspection is for resource servers, which can keep a secret (RFC 7662 §2.1).
            return Err(OAuthError::invalid_client("public clients cannot introspect tokens"));
        }
        let token = token.as_str();
        let body = match active_claims(&state, &snapshot, token, now).filter(|c| may_see(&snapshot, &caller, c)) {
            Some(c) => {
                let mut body = json!({
                "active": true,
                "token_type": sender::token_type_of(&c),
                "client_id": c.client_id,
                "sub": c.sub,
                "aud": c.aud,
                "iss": c.iss,
                "scope": c.scope,
                "jti": c.jti,
                "iat": c.iat,
                "exp": c.exp,
                });
                // A sender-constrained token shows what it is bound to (RFC 9449 §6.2).
                if let Some(acr) = &c.acr {
                    body["acr"] = json!(acr);
                }
                if let Some(cnf) = &c.cnf {
                    body["cnf"] = json!(cnf);
                }
                body
            }
            None => json!({ "active": false }),
        };
        let mut response = Json(body).into_response();
        no_store(&mut response);
        Ok::<_, OAuthError>(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// POST /revoke
pub async fn revoke(State(state): State<ProviderState>, method: Method, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let TokenRequest {
            snapshot,
            caller,
            token,
            now,
        } = read_request(&state, method, &headers, body).await?;
        let token = token.as_str();
        // Invalid, expired or unknown tokens are not an error (RFC 7009 §2.2). A token that is
        // not a JWT may be a refresh token: revoking it ends its whole family.
        if !token.contains('.') {
            let revoked = state
                .store
                .revoke_refresh_of(
                    &handle_digest(token),
                    &ClientObject {
                        id: &caller.client_id,
                        uid: &caller.uid,
                    },
                    now.as_second(),
                )
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot revoke a refresh token");
                    OAuthError::unavailable("the grant store is unavailable; retry shortly")
                })?;
            state.revocations.remember(&revoked);
            let reason = format!("a refresh token family ({} access tokens with it)", revoked.len());
            audit_revocation(&state, &caller.client_id, &reason);
        } else if let Some(claims) = verify(&snapshot.keys, &state.issuer.url, token, now) {
            if claims.client_id != caller.client_id {
                return Err(OAuthError::unauthorized_client(
                    "the token was not issued to this client",
                ));
            }
            state
                .revocations
                .revoke(&claims.jti, claims.exp, now.as_second())
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot persist a revocation");
                    OAuthError::unavailable("the grant store is unavailable; retry shortly")
                })?;
            tracing::info!(client_id = %caller.client_id, jti = %claims.jti, "access token revoked");
            audit_revocation(&state, &caller.client_id, &format!("access token {}", claims.jti));
        }
        let mut response = StatusCode::OK.into_response();
        no_store(&mut response);
        Ok::<_, OAuthError>(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The audit record of a revocation by `client_id`.
fn audit_revocation(state: &ProviderState, client_id: &str, reason: &str) {
    let record = crate::audit::Record {
        client_id: Some(client_id),
        reason: Some(reason),
        ..Default::default()
    };
    state.audit_event(crate::audit::Event::Revocation, &record);
}
