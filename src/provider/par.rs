//! Pushed authorization requests (RFC 9126): a client posts its authorization parameters to
//! /par, authenticated, and gets a one-time `request_uri` that lives a minute; /authorize then
//! takes only `client_id` and that `request_uri`, so no parameter travels (or is altered) in
//! the browser. The pushed request is checked exactly as /authorize checks one
//! (`authorization_request.rs`) and kept in the grant store, so any replica can take it, once.

use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::authorization_request::{self, MAX_OPAQUE_LEN};
use super::browser::{client_ip, handle_digest, random_handle};
use super::browser_flow::AuthRequest;
use super::client_auth::authenticate;
use super::error::{OAuthError, no_store};
use super::form::Form;
use super::request_object;
use super::sender;
use super::state::ProviderState;
use crate::registry::RegisteredClient;
use crate::store::{PendingRequest, StoreError};

/// What a `request_uri` of a pushed request starts with (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// How long a pushed request may wait for its /authorize (RFC 9126 asks for a short time).
pub const PUSHED_LIFETIME_SECS: i64 = 60;

/// A pushed request as kept: the checked request and whether it asked for `prompt=none`.
#[derive(Serialize, Deserialize)]
pub(super) struct Pushed {
    pub request: AuthRequest,
    pub prompt_none: bool,
}

/// POST /par
pub async fn push(State(state): State<ProviderState>, request: Request) -> Response {
    let from = client_ip(&request);
    let (parts, body) = request.into_parts();
    let result = async {
        if parts.method != Method::POST {
            return Err(OAuthError::method_not_allowed());
        }
        let form = Form::read(&parts.headers, body).await?;
        let snapshot = state.registry.load();
        let now = Timestamp::now();
        let client = authenticate(&state, &snapshot, &parts.headers, &form, now).await?;
        if form.get("client_id").is_some_and(|id| id != client.client_id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the authenticated client",
            ));
        }
        if form.get("request_uri").is_some() {
            return Err(OAuthError::invalid_request("request_uri cannot be pushed"));
        }
        // A signed request object stands for all the parameters (RFC 9101).
        let form = request_object::parameters(&state, &client, form).await?;
        let redirect_uri = form
            .get("redirect_uri")
            .filter(|uri| client.accepts_redirect(uri))
            .ok_or_else(|| {
                OAuthError::invalid_request("redirect_uri is missing or not registered (spec.redirectUris)")
            })?;
        if form.get("state").is_some_and(|s| s.len() > MAX_OPAQUE_LEN) {
            return Err(OAuthError::invalid_request(format!(
                "state is longer than {MAX_OPAQUE_LEN} characters"
            )));
        }
        let mut request = authorization_request::check(&form, &client, redirect_uri).map_err(|r| r.into_oauth())?;
        let prompt_none = form.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none"));
        // A pushed request is a stored row: it counts against its caller's share (T12).
        state
            .parked_requests
            .reserve(from, &client.namespace, Instant::now())
            .map_err(|wait| OAuthError::too_many("pushed authorization requests", wait))?;
        // A DPoP proof sent with the push binds the code to its key (RFC 9449 §10.1).
        let url = state.issuer.endpoint("/par");
        if let Some(jkt) = sender::proof_key(&state, &parts.headers, &Method::POST, &url).await? {
            if request.dpop_jkt.as_ref().is_some_and(|j| *j != jkt) {
                return Err(OAuthError::refused(
                    "invalid_dpop_proof",
                    "dpop_jkt names another key than the DPoP proof's",
                ));
            }
            request.dpop_jkt = Some(jkt);
        }
        let handle = random_handle();
        let stored = PendingRequest {
            // Bound to no browser: /authorize parks it anew for the browser that brings it.
            browser: String::new(),
            csrf: random_handle(),
            request: serde_json::to_string(&Pushed { request, prompt_none }).expect("a request serialises"),
        };
        state
            .store
            .put_auth_request(&stored_id(&handle), &stored, now.as_second() + PUSHED_LIFETIME_SECS)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "grant store unavailable at /par");
                OAuthError::unavailable("retry shortly")
            })?;
        let mut response = (
            StatusCode::CREATED,
            Json(json!({
                "request_uri": format!("{REQUEST_URI_PREFIX}{handle}"),
                "expires_in": PUSHED_LIFETIME_SECS,
            })),
        )
            .into_response();
        no_store(&mut response);
        Ok(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Where a pushed request is kept: apart from the requests parked for a browser (whose ids are
/// bare handles), and under the handle's digest, so a copy of the store names no usable
/// `request_uri`.
fn stored_id(handle: &str) -> String {
    format!("par:{}", handle_digest(handle))
}

/// The pushed request `request_uri` names, taken once and only by the client that pushed it
/// (the same OAuthClient object). None when it is unknown, expired, used, or another
/// client's; another client's stays where it is, so it cannot be spent by naming it.
pub(super) async fn take(
    state: &ProviderState,
    client: &RegisteredClient,
    request_uri: &str,
    now: i64,
) -> Result<Option<Pushed>, StoreError> {
    let Some(handle) = request_uri.strip_prefix(REQUEST_URI_PREFIX) else {
        return Ok(None);
    };
    let id = stored_id(handle);
    let Some(stored) = state.store.auth_request(&id, now).await? else {
        return Ok(None);
    };
    let Ok(mut pushed) = serde_json::from_str::<Pushed>(&stored.request) else {
        return Ok(None);
    };
    if pushed.request.client_id != client.client_id || pushed.request.client_uid != client.uid {
        return Ok(None);
    }
    // Once: of two concurrent uses (on any replicas) only the one that ends it goes on.
    if !state.store.finish_auth_request(&id).await? {
        return Ok(None);
    }
    pushed.request.started_at = now;
    Ok(Some(pushed))
}
