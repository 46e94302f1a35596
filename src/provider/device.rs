//! The device authorization grant (RFC 8628): a device without a browser asks at
//! /device_authorization and shows the person a short code; the person types it at /device
//! on any browser, signs in and confirms on the usual pages (`browser_flow`), and the device,
//! polling the token endpoint, gets its tokens (`grants/device_code.rs`).

use std::time::Instant;

use aws_lc_rs::rand;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::browser::{client_ip, handle_digest, random_handle};
use super::browser_flow::requested::{audiences, requested_scopes, resources};
use super::browser_flow::{AuthRequest, Stage, current_session, proceed, unavailable};
use super::client_auth::authenticate;
use super::error::{OAuthError, no_store};
use super::form::Form;
use super::pages;
use super::state::ProviderState;
use crate::crd::GrantType;
use crate::store::DeviceRequest;

/// How long a device code and its user code live (RFC 8628 §3.2 `expires_in`).
pub const DEVICE_CODE_LIFETIME_SECS: i64 = 10 * 60;
/// How long a device waits between polls at first (§3.2 `interval`).
pub const POLL_INTERVAL_SECS: i64 = 5;
/// User codes are drawn from consonants only (RFC 8628 §6.1): no vowels, so no words, and
/// nothing that looks alike (no 0/O, 1/I).
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Eight characters: 20^8 ≈ 2^34.6 codes, against at most 20 wrong guesses per address in
/// 15 minutes (the sign-in throttle) and codes that live ten minutes.
const USER_CODE_LEN: usize = 8;

/// What the device asked for, kept with its request.
#[derive(Serialize, Deserialize)]
struct Asked {
    scopes: Vec<String>,
    audiences: Vec<String>,
}

/// A fresh user code, normalised (no dash).
fn new_user_code() -> String {
    let mut bytes = [0u8; USER_CODE_LEN];
    rand::fill(&mut bytes).expect("the OS random number generator is available");
    // 256 is not a multiple of 20: redraw the bytes past the last whole multiple.
    bytes
        .iter_mut()
        .map(|b| {
            while *b >= 240 {
                let mut one = [0u8; 1];
                rand::fill(&mut one).expect("the OS random number generator is available");
                *b = one[0];
            }
            USER_CODE_ALPHABET[(*b % 20) as usize] as char
        })
        .collect()
}

/// `BCDFGHJK` as people read it: `BCDF-GHJK`.
fn display(user_code: &str) -> String {
    let (a, b) = user_code.split_at(USER_CODE_LEN / 2);
    format!("{a}-{b}")
}

/// What a person typed, normalised: case, dashes and spaces do not matter. None when it
/// cannot be a user code.
fn normalise(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

#[derive(Serialize)]
struct Started {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: i64,
    interval: i64,
}

/// POST /device_authorization (RFC 8628 §3.1–3.2)
pub async fn device_authorization(State(state): State<ProviderState>, request: Request) -> Response {
    let from = client_ip(&request);
    let (parts, body) = request.into_parts();
    match start(&state, parts.method, &parts.headers, body, from).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn start(
    state: &ProviderState,
    method: Method,
    headers: &HeaderMap,
    body: Body,
    from: Option<std::net::IpAddr>,
) -> Result<Response, OAuthError> {
    if method != Method::POST {
        return Err(OAuthError::method_not_allowed());
    }
    let form = Form::read(headers, body).await?;
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let client = authenticate(state, &snapshot, headers, &form, now).await?;
    if !client.allows(GrantType::DeviceCode) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use the device authorization grant (add {} to spec.grantTypes)",
            GrantType::DeviceCode.as_str()
        )));
    }
    let refused = |r: super::browser_flow::requested::Refused| OAuthError::refused(r.code, r.description);
    let asked_resources = resources(&form, &client).map_err(refused)?;
    let scopes = requested_scopes(form.get("scope"), &client).map_err(refused)?;
    let asked = Asked {
        audiences: audiences(&asked_resources, &client, &scopes),
        scopes,
    };
    // Each request is a stored row for ten minutes: counted against its caller's address (and
    // everyone's) before it is written (T12).
    state
        .device_requests
        .reserve(from, &client.namespace, Instant::now())
        .map_err(|wait| OAuthError::too_many("device authorizations", wait))?;
    let device_code = random_handle();
    let request = DeviceRequest {
        id: handle_digest(&device_code),
        client_id: client.client_id.clone(),
        client_uid: client.uid.clone(),
        request: serde_json::to_string(&asked).expect("a request serialises"),
    };
    let now = now.as_second();
    // A clash with a live code is rare (10 live codes among 2^34): draw again.
    for _ in 0..5 {
        let user_code = new_user_code();
        let stored = state
            .store
            .start_device_request(
                &request,
                &user_code,
                POLL_INTERVAL_SECS,
                now + DEVICE_CODE_LIFETIME_SECS,
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "grant store unavailable at /device_authorization");
                OAuthError::unavailable("the grant store is unavailable; retry shortly")
            })?;
        if stored {
            tracing::info!(client_id = %client.client_id, "device authorization started");
            let verification_uri = state.issuer.endpoint("/device");
            let mut response = Json(Started {
                device_code,
                user_code: display(&user_code),
                verification_uri_complete: format!("{verification_uri}?user_code={}", display(&user_code)),
                verification_uri,
                expires_in: DEVICE_CODE_LIFETIME_SECS,
                interval: POLL_INTERVAL_SECS,
            })
            .into_response();
            no_store(&mut response);
            return Ok(response);
        }
    }
    Err(OAuthError::server_error())
}

#[derive(Deserialize)]
pub struct Prefilled {
    user_code: Option<String>,
}

/// GET /device[?user_code=...]: the form to type the code (prefilled from the device's link).
pub async fn device_page(State(state): State<ProviderState>, Query(q): Query<Prefilled>) -> Response {
    let prefilled = q.user_code.unwrap_or_default();
    let prefilled: String = prefilled.chars().take(16).collect();
    pages::device(StatusCode::OK, &state.issuer.endpoint("/device"), &prefilled, None)
}

/// POST /device: finds the request of the code typed and takes it to sign-in and the
/// confirmation page. Wrong codes are throttled per address.
pub async fn device_submit(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (parts, body) = request.into_parts();
    let action = state.issuer.endpoint("/device");
    let form = match Form::read(&parts.headers, body).await {
        Ok(f) => f,
        Err(e) => return pages::error(StatusCode::BAD_REQUEST, &e.description),
    };
    let typed = form
        .get("user_code")
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect::<String>();
    let again = |status, error: &str| pages::device(status, &action, &typed, Some(error));
    let attempt = match state.throttle.reserve_for_address(ip, Instant::now()).await {
        Ok(attempt) => attempt,
        Err(wait) => {
            let minutes = wait.as_secs().div_ceil(60);
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many wrong codes. Try again in {minutes} minute(s)."),
            );
        }
    };
    let now = Timestamp::now().as_second();
    let found = match normalise(&typed) {
        Some(code) => match state.store.device_request(&code, now).await {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        },
        None => None,
    };
    let snapshot = state.registry.load();
    // The client must still be the object the device asked for.
    let found = found.filter(|d| {
        snapshot
            .clients
            .get(&d.client_id)
            .is_some_and(|c| c.uid == d.client_uid && c.allows(GrantType::DeviceCode))
    });
    let Some(device) = found else {
        return again(
            StatusCode::BAD_REQUEST,
            "That code is not valid or has expired. Check it on the device.",
        );
    };
    state.throttle.succeeded(attempt).await;
    let Ok(asked) = serde_json::from_str::<Asked>(&device.request) else {
        return pages::error(StatusCode::BAD_REQUEST, "This device request cannot be read.");
    };
    // The device's client may require a second factor; a device request has no acr_values.
    let acr = state
        .registry
        .load()
        .clients
        .get(&device.client_id)
        .and_then(|c| c.required_acr)
        .map(str::to_owned);
    let req = AuthRequest {
        client_id: device.client_id,
        client_uid: device.client_uid,
        redirect_uri: String::new(),
        scopes: asked.scopes,
        audiences: asked.audiences,
        state: None,
        nonce: None,
        code_challenge: None,
        force_login: false,
        // Always confirmed on the consent page, whatever was allowed before.
        force_consent: true,
        max_age: None,
        login_hint: None,
        started_at: now,
        device: Some(device.id),
        dpop_jkt: None,
        acr,
        first_factor: None,
        account: false,
    };
    let step = async {
        let session = current_session(&state, &parts.headers, now).await?;
        proceed(
            &state,
            &snapshot,
            &parts.headers,
            session,
            &req,
            Stage::New { from: ip },
            false,
        )
        .await
    };
    match step.await {
        Ok(r) => r,
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_consonants_and_read_back_however_typed() {
        let code = new_user_code();
        assert_eq!(code.len(), USER_CODE_LEN);
        assert!(code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{code}");
        let shown = display(&code);
        assert_eq!(shown.len(), 9);
        assert_eq!(normalise(&shown).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalise(&format!(" {} ", shown.to_lowercase())).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(normalise("BCDF-GHJ"), None, "too short");
        assert_eq!(normalise("BCDF-GHJA"), None, "a vowel is never in a code");
        let distinct: std::collections::HashSet<_> = (0..200).map(|_| new_user_code()).collect();
        assert_eq!(distinct.len(), 200);
    }
}
