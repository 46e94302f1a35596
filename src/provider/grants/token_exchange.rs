//! grant_type=urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693): a workload's
//! ServiceAccount token as the subject token. It may identify the client by itself, so this
//! grant authenticates the client on its own terms.

use axum::http::HeaderMap;
use axum::response::Response;
use jiff::Timestamp;

use super::for_clients;
use crate::crd::GrantType;
use crate::provider::ProviderState;
use crate::provider::client_auth::{
    authenticate, client_for_service_account, presents_credentials, verify_service_account_token,
};
use crate::provider::error::OAuthError;
use crate::provider::form::Form;
use crate::registry::{ClientCredential, Snapshot};
use crate::workload_identity::{ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE};

/// RFC 8693: a workload trades its ServiceAccount token for an access token. The subject
/// token identifies the client (or must match the client that authenticated), and the
/// requested `audience`/`resource` values must be ones the client was granted.
pub async fn grant(
    state: &ProviderState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    form: &Form,
    now: Timestamp,
) -> Result<Response, OAuthError> {
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
    let client = if presents_credentials(headers, form) {
        let client = authenticate(state, snapshot, headers, form, now).await?;
        let sa = verify_service_account_token(state, subject)
            .await
            .map_err(|e| OAuthError::invalid_request(e.description))?;
        if client.credential != ClientCredential::ServiceAccount(sa) {
            return Err(OAuthError::invalid_request(
                "subject_token is not the token of this client's ServiceAccount",
            ));
        }
        client
    } else {
        let sa = verify_service_account_token(state, subject).await?;
        client_for_service_account(snapshot, &sa, form.get("client_id"))?
    };
    if !client.allows(GrantType::TokenExchange) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use token exchange (add it to spec.grantTypes)",
        ));
    }
    let mut resources = form.all("audience");
    resources.extend(form.all("resource"));
    for_clients::issue(state, snapshot, &client, form.get("scope"), &resources, true, now)
}
