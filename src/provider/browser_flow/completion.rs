//! How an approved (or refused) request completes: a request from /authorize sends the browser
//! back to the client's redirect URI with a code or an error; a request from the device
//! verification page answers the device's request (the device gets its tokens by polling) and
//! tells the person they are done. The sign-in and consent steps before are the same for both.

use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;

use super::{AuthRequest, see_other};
use crate::provider::browser::{handle_digest, random_handle};
use crate::provider::pages;
use crate::provider::state::ProviderState;
use crate::store::{Grant, Session, SessionClient, StoreError};

/// The person's own account page.
pub const ACCOUNT_PAGE: &str = "/account";

/// How long a code may wait for redemption (RFC 6749 §4.1.2: short).
pub const CODE_LIFETIME_SECS: i64 = 60;

/// Where an authorization response goes: the client's exact redirect URI.
pub struct ClientRedirect<'a> {
    pub redirect_uri: &'a str,
    pub state: Option<&'a str>,
    pub issuer: &'a str,
}

impl ClientRedirect<'_> {
    fn with(&self, params: &[(&str, &str)]) -> Response {
        let Ok(mut url) = url::Url::parse(self.redirect_uri) else {
            // Registered URIs are validated; this cannot happen for a served client.
            return pages::error(StatusCode::BAD_REQUEST, "the redirect URI cannot be used");
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = self.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", self.issuer);
        }
        see_other(url.as_str())
    }

    /// Sends the browser back with an error (RFC 6749 §4.1.2.1).
    pub fn error(&self, code: &str, description: &str) -> Response {
        self.with(&[("error", code), ("error_description", description)])
    }

    /// Sends the browser back with a code.
    pub fn code(&self, code: &str) -> Response {
        self.with(&[("code", code)])
    }
}

impl AuthRequest {
    /// Where this request's answer goes.
    pub fn client_redirect<'a>(&'a self, state: &'a ProviderState) -> ClientRedirect<'a> {
        ClientRedirect {
            redirect_uri: &self.redirect_uri,
            state: self.state.as_deref(),
            issuer: &state.issuer.url,
        }
    }
}

/// Completes an approved request for the person of `session`.
pub async fn approved(
    state: &ProviderState,
    req: &AuthRequest,
    session_id: &str,
    session: &Session,
) -> Result<Response, StoreError> {
    if req.account {
        return Ok(see_other(&state.issuer.endpoint(ACCOUNT_PAGE)));
    }
    let sid = super::session_sid(session_id);
    // The clients a session signed in to are told when it ends (back-channel logout).
    let client = SessionClient {
        client_id: req.client_id.clone(),
        client_uid: req.client_uid.clone(),
        subject: session.subject.clone(),
    };
    let now = Timestamp::now().as_second();
    state
        .store
        .signed_in_to(&sid, &client, now + super::SESSION_LIFETIME_SECS)
        .await?;
    let Some(device) = &req.device else {
        return issue_code(state, req, &sid, session, &req.client_redirect(state)).await;
    };
    let grant = grant_for(req, &sid, session);
    if !state.store.answer_device_request(device, Some(&grant), now).await? {
        return Ok(pages::error(
            StatusCode::BAD_REQUEST,
            "This device code has expired or was already answered. Start again on the device.",
        ));
    }
    tracing::info!(client_id = %req.client_id, subject = %session.subject, "device authorized");
    audit_device(state, crate::audit::Event::DeviceApproved, req, Some(&session.subject));
    Ok(pages::message(
        "Device signed in",
        "You are signed in on the device. You can close this window.",
    ))
}

/// Completes a request the person (or kauth on their behalf) refused, with an RFC 6749
/// §4.1.2.1 error code.
pub async fn refused(
    state: &ProviderState,
    req: &AuthRequest,
    code: &str,
    description: &str,
) -> Result<Response, StoreError> {
    if req.account {
        return Ok(pages::error(StatusCode::FORBIDDEN, description));
    }
    let Some(device) = &req.device else {
        return Ok(req.client_redirect(state).error(code, description));
    };
    state
        .store
        .answer_device_request(device, None, Timestamp::now().as_second())
        .await?;
    tracing::info!(client_id = %req.client_id, "device request denied");
    audit_device(state, crate::audit::Event::DeviceDenied, req, None);
    Ok(pages::message(
        "Request denied",
        "The device was not signed in. You can close this window.",
    ))
}

fn audit_device(state: &ProviderState, event: crate::audit::Event, req: &AuthRequest, subject: Option<&str>) {
    let scopes = req.scopes.join(" ");
    let record = crate::audit::Record {
        client_id: Some(&req.client_id),
        subject,
        grant_type: Some(crate::crd::GrantType::DeviceCode.as_str()),
        reason: Some(&scopes),
        ..Default::default()
    };
    state.audit_event(event, &record);
}

/// What the person approved, as codes and refresh families carry it.
fn grant_for(req: &AuthRequest, sid: &str, session: &Session) -> Grant {
    Grant {
        client_id: req.client_id.clone(),
        client_uid: req.client_uid.clone(),
        subject: session.subject.clone(),
        scopes: req.scopes.clone(),
        audiences: req.audiences.clone(),
        redirect_uri: req.redirect_uri.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        dpop_jkt: req.dpop_jkt.clone(),
        sid: Some(sid.to_string()),
        auth_time: session.auth_time,
        amr: session.amr.clone(),
    }
}

/// Stores a code for the signed-in person and sends it back.
async fn issue_code(
    state: &ProviderState,
    req: &AuthRequest,
    sid: &str,
    session: &Session,
    back: &ClientRedirect<'_>,
) -> Result<Response, StoreError> {
    let now = Timestamp::now().as_second();
    let code = random_handle();
    let grant = grant_for(req, sid, session);
    state
        .store
        .insert_code(&handle_digest(&code), &grant, now + CODE_LIFETIME_SECS)
        .await?;
    tracing::info!(client_id = %req.client_id, subject = %session.subject, "authorization code issued");
    Ok(back.code(&code))
}
