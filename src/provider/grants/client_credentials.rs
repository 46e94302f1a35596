//! grant_type=client_credentials (RFC 6749 §4.4): a client's token for itself.

use axum::response::Response;
use jiff::Timestamp;

use super::for_clients;
use crate::provider::ProviderState;
use crate::provider::error::OAuthError;
use crate::provider::form::Form;
use crate::registry::{RegisteredClient, Snapshot};

/// grant_type=client_credentials, for the authenticated `client`.
pub async fn grant(
    state: &ProviderState,
    snapshot: &Snapshot,
    client: &RegisteredClient,
    form: &Form,
    now: Timestamp,
) -> Result<Response, OAuthError> {
    for_clients::issue(
        state,
        snapshot,
        client,
        form.get("scope"),
        &form.all("resource"),
        false,
        now,
    )
}
