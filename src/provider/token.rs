//! The token endpoint: reads the request, parses its grant type, authenticates the client and
//! hands over to the grant's module under `grants/`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::ProviderState;
use super::client_auth::authenticate;
use super::error::OAuthError;
use super::form::Form;
use super::grants;
use crate::crd::GrantType;

/// POST /token
pub async fn token(State(state): State<ProviderState>, method: Method, headers: HeaderMap, body: Body) -> Response {
    match issue(&state, method, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn issue(state: &ProviderState, method: Method, headers: &HeaderMap, body: Body) -> Result<Response, OAuthError> {
    if method != Method::POST {
        return Err(OAuthError::method_not_allowed());
    }
    let form = Form::read(headers, body).await?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let grant = GrantType::parse(grant_type);
    // A token exchange may be identified by its subject token alone; every other request
    // authenticates its client here, once (an unknown grant type too: an unknown client
    // learns nothing about what is supported).
    if grant == Some(GrantType::TokenExchange) {
        return grants::token_exchange::grant(state, &snapshot, headers, &form, now).await;
    }
    let client = authenticate(state, &snapshot, headers, &form, now).await?;
    match grant {
        Some(GrantType::ClientCredentials) => {
            grants::client_credentials::grant(state, &snapshot, &client, &form, now).await
        }
        Some(GrantType::AuthorizationCode) => {
            grants::authorization_code::grant(state, &snapshot, client, &form, now).await
        }
        Some(GrantType::RefreshToken) => grants::refresh_token::grant(state, &snapshot, client, &form, now).await,
        Some(GrantType::DeviceCode) => grants::device_code::grant(state, &snapshot, client, &form, now).await,
        Some(GrantType::TokenExchange) => unreachable!("handled above"),
        None => Err(OAuthError::unsupported_grant_type(format!(
            "grant type '{grant_type}' is not supported"
        ))),
    }
}
