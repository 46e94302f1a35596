//! What every grant ends with: an access token minted and signed for a client or a person,
//! and the token response (RFC 6749 §5.1; RFC 8693 §2.2.1) that carries it.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{OAuthError, no_store};
use super::token_request::TokenRequest;
use crate::tokens::{AccessTokenClaims, Audience, sign};

/// A signed access token and the claims it carries.
pub(super) struct AccessToken {
    pub token: String,
    pub claims: AccessTokenClaims,
    /// Its lifetime in seconds (`expires_in`).
    pub lifetime: u64,
    /// Its `token_type`.
    pub token_type: &'static str,
}

/// What an access token says: whom it is for, what it allows, and its id.
pub(super) struct AccessTokenFor<'a> {
    /// A person, or the client itself.
    pub subject: String,
    pub scopes: &'a [String],
    pub audiences: Vec<String>,
    /// Chosen by the caller when the grant store must record it before the token exists.
    pub jti: String,
    /// How the person signed in, for a person's token that kauth can vouch for.
    pub acr: Option<String>,
}

/// Mints and signs the RFC 9068 access token the request's client holds as `what` says, bound
/// as the request's [`Binding`](super::sender::Binding) says.
pub(super) fn access_token(request: &TokenRequest<'_>, what: AccessTokenFor<'_>) -> Result<AccessToken, OAuthError> {
    let (state, snapshot, client, now) = (request.state, request.snapshot, &*request.client, request.now);
    let lifetime = client.access_token_lifetime.as_secs();
    let iat = now.as_second();
    let claims = AccessTokenClaims {
        iss: state.issuer.url.clone(),
        sub: what.subject,
        aud: Audience::from_list(what.audiences),
        client_id: client.client_id.clone(),
        scope: (!what.scopes.is_empty()).then(|| what.scopes.join(" ")),
        jti: what.jti,
        iat,
        exp: iat + lifetime as i64,
        cnf: request.binding.confirmation(),
        acr: what.acr,
    };
    let token = sign(&snapshot.keys, &claims, now).map_err(|e| {
        tracing::error!(error = %e, "cannot sign access token");
        OAuthError::unavailable("no signing key is available yet")
    })?;
    Ok(AccessToken {
        token,
        claims,
        lifetime,
        token_type: request.binding.token_type(),
    })
}

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
    /// The response carrying `minted`.
    pub fn of(minted: AccessToken) -> Self {
        Self {
            access_token: minted.token,
            token_type: minted.token_type,
            expires_in: minted.lifetime,
            scope: minted.claims.scope,
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

/// Who the person of a token response is, for the audit trail (the grants for people set it).
#[derive(Clone)]
pub struct IssuedTo(pub String);
