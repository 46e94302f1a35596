//! grant_type=urn:ietf:params:oauth:grant-type:device_code (RFC 8628 §3.4–3.5): the device
//! polls with its device code until the person answers at the verification page. An approval
//! is stored as a code under the device code's digest and redeemed once, like any code.

use axum::response::Response;

use super::TokenRequest;
use super::for_people::{issue_for_code, redeem, store_failed};
use crate::crd::GrantType;
use crate::provider::browser::handle_digest;
use crate::provider::error::OAuthError;
use crate::store::DevicePoll;

/// grant_type=urn:ietf:params:oauth:grant-type:device_code
pub async fn grant(request: &TokenRequest<'_>) -> Result<Response, OAuthError> {
    let (state, client, now) = (request.state, &request.client, request.now);
    let device_code = request
        .form
        .get("device_code")
        .ok_or_else(|| OAuthError::invalid_request("device_code is required"))?;
    let id = handle_digest(device_code);
    let polled = state
        .store
        .poll_device_request(&id, &client.client_id, &client.uid, now.as_second())
        .await
        .map_err(store_failed)?;
    match polled {
        DevicePoll::Pending => Err(OAuthError::device(
            "authorization_pending",
            "the person has not answered yet",
        )),
        DevicePoll::SlowDown => Err(OAuthError::device(
            "slow_down",
            "polling too often: wait 5 seconds longer between requests from now on",
        )),
        DevicePoll::Denied => Err(OAuthError::device("access_denied", "the person denied the request")),
        DevicePoll::Expired => Err(OAuthError::device(
            "expired_token",
            "the device code expired; start again",
        )),
        DevicePoll::Unknown => Err(OAuthError::invalid_grant(
            "the device code is unknown or belongs to another client",
        )),
        DevicePoll::Approved => {
            let (grant, jti) = redeem(request, &id).await?;
            issue_for_code(request, &id, &grant, jti, GrantType::DeviceCode).await
        }
    }
}
