//! grant_type=client_credentials (RFC 6749 §4.4): a client's token for itself.

use axum::response::Response;

use super::{TokenRequest, for_clients};
use crate::provider::error::OAuthError;

/// grant_type=client_credentials, for the authenticated client.
pub async fn grant(request: &TokenRequest<'_>) -> Result<Response, OAuthError> {
    let form = request.form;
    for_clients::issue(request, form.get("scope"), &form.all("resource"), false)
}
