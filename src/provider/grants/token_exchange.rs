//! grant_type=urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693): a workload's
//! ServiceAccount token as the subject token. It may identify the client by itself, so this
//! grant identifies (and authenticates) its client on its own terms: [`identify`], before the
//! token endpoint builds the request, then [`grant`].

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;

use super::{TokenRequest, for_clients};
use crate::provider::client_auth::{
    authenticate, client_for_service_account, presents_credentials, verify_service_account_token,
};
use crate::provider::error::OAuthError;
use crate::provider::form::Form;
use crate::provider::state::ProviderState;
use crate::registry::{ClientCredential, RegisteredClient, Snapshot};
use crate::workload_identity::{ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE};

/// RFC 8693: the client of a token exchange. The subject token, a ServiceAccount token,
/// identifies it (or must match the client that authenticated otherwise).
pub async fn identify(
    state: &ProviderState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    form: &Form,
    now: jiff::Timestamp,
) -> Result<Arc<RegisteredClient>, OAuthError> {
    let subject = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    if form.get("subject_token_type") != Some(JWT_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {JWT_TOKEN_TYPE}"
        )));
    }
    if form.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(format!(
            "only {ACCESS_TOKEN_TYPE} can be requested"
        )));
    }
    if form.get("actor_token").is_some() {
        return Err(OAuthError::invalid_request(
            "delegation with actor_token is not supported",
        ));
    }
    if presents_credentials(headers, form) {
        let client = authenticate(state, snapshot, headers, form, now).await?;
        let sa = verify_service_account_token(state, subject)
            .await
            .map_err(|e| OAuthError::invalid_request(e.description))?;
        if client.credential != ClientCredential::ServiceAccount(sa) {
            return Err(OAuthError::invalid_request(
                "subject_token is not the token of this client's ServiceAccount",
            ));
        }
        return Ok(client);
    }
    let sa = verify_service_account_token(state, subject).await?;
    client_for_service_account(snapshot, &sa, form.get("client_id"))
}

/// The token for the `audience`/`resource` values asked for, each one the client was granted.
pub async fn grant(request: &TokenRequest<'_>) -> Result<Response, OAuthError> {
    let form = request.form;
    let mut resources = form.all("audience");
    resources.extend(form.all("resource"));
    for_clients::issue(request, form.get("scope"), &resources, true)
}
