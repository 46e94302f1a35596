//! The authorization endpoint (RFC 6749 §4.1, OpenID Connect Core §3.1.2): checks a request,
//! then sends the browser to sign in, to consent, or straight back with a code.
//!
//! Until the client and its redirect URI are known to be genuine, errors are shown on a page
//! and never redirected. After that they go back to the client with `state` and RFC 9207's
//! `iss`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use jiff::Timestamp;

use super::authorization_request::{MAX_OPAQUE_LEN, Refusal, check};
use super::browser_flow::completion::ClientRedirect;
use super::browser_flow::{AuthRequest, Stage, current_session, proceed};
use super::error::OAuthError;
use super::form::Form;
use super::pages;
use super::par;
use super::state::ProviderState;
use crate::registry::RegisteredClient;

/// GET or POST /authorize
pub async fn authorize(State(state): State<ProviderState>, request: Request) -> Response {
    let from = super::browser::client_ip(&request);
    let (parts, body) = request.into_parts();
    let form = match read_params(&parts.method, &parts.headers, parts.uri.query(), body).await {
        Ok(f) => f,
        Err(e) => return pages::error(StatusCode::BAD_REQUEST, &e.description),
    };
    let snapshot = state.registry.load();
    // A refusal page names what it refuses (the page escapes it); the log names only a
    // registered client (a caller may type anything there, T12).
    let Some(client) = form.get("client_id").and_then(|id| snapshot.clients.get(id)).cloned() else {
        tracing::info!(
            client_id = "unknown",
            "authorization request refused: unknown client_id"
        );
        return pages::error(
            StatusCode::BAD_REQUEST,
            &match form.get("client_id") {
                Some(id) => format!("The application that sent you here is not registered: there is no client {id}."),
                None => "The application that sent you here did not say who it is (no client_id).".into(),
            },
        );
    };
    let now = Timestamp::now().as_second();
    let (req, prompt_none) = match form.get("request_uri") {
        // A pushed request (RFC 9126) stands alone: its own parameters, none of the query's.
        Some(request_uri) => match par::take(&state, &client, request_uri, now).await {
            Ok(Some(pushed)) => (pushed.request, pushed.prompt_none),
            Ok(None) => {
                tracing::info!(client_id = %client.client_id, "authorization request refused: request_uri unknown, expired, used or another client's");
                return pages::error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "The application {} sent you here with a request that is unknown, expired or already used (request_uri). Start again from the application.",
                        client.client_id
                    ),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "grant store unavailable at /authorize");
                return pages::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Signing in is not possible right now; try again shortly.",
                );
            }
        },
        None => match unpushed(&state, &form, &client) {
            Ok(req) => req,
            Err(response) => return *response,
        },
    };
    let back = ClientRedirect {
        redirect_uri: &req.redirect_uri,
        state: req.state.as_deref(),
        issuer: &state.issuer.url,
    };
    let step = async {
        // prompt=login ignores the session; the sign-in page makes a new one.
        let session = match current_session(&state, &parts.headers, now).await? {
            Some(signed_in) if !req.force_login => Some(signed_in),
            _ => None,
        };
        proceed(
            &state,
            &snapshot,
            &parts.headers,
            session,
            &req,
            Stage::New { from },
            prompt_none,
        )
        .await
    };
    match step.await {
        Ok(r) => r,
        Err(e) => {
            // The store did not answer (in time): RFC 6749's own word for it, so the app can
            // tell the person to try again.
            tracing::error!(error = %e, "authorization request failed");
            back.error(
                "temporarily_unavailable",
                "signing in is not possible right now; try again shortly",
            )
        }
    }
}

/// A request sent to /authorize as it is: its client's redirect URI checked (a refusal before
/// that is a page), then everything else (a refusal after it goes back to the client).
/// Refused when the client, or the platform, requires pushed requests.
fn unpushed(
    state: &ProviderState,
    form: &Form,
    client: &RegisteredClient,
) -> Result<(AuthRequest, bool), Box<Response>> {
    // Exact string comparison, as registered (no normalising of case or slashes); only a
    // native app's loopback URI may differ, in its port.
    let Some(redirect_uri) = form.get("redirect_uri").filter(|uri| client.accepts_redirect(uri)) else {
        tracing::info!(client_id = %client.client_id, "authorization request refused: redirect_uri not registered");
        return Err(Box::new(pages::error(
            StatusCode::BAD_REQUEST,
            &format!(
                "The application {} sent you here with the redirect address {}, which it has not registered (spec.redirectUris).",
                client.client_id,
                form.get("redirect_uri").unwrap_or("(none)")
            ),
        )));
    };
    let back = ClientRedirect {
        redirect_uri,
        state: form.get("state").filter(|s| s.len() <= MAX_OPAQUE_LEN),
        issuer: &state.issuer.url,
    };
    if client.require_par || state.par_required {
        let whose = match (client.fapi2, client.require_par) {
            (true, _) => "spec.profile FAPI2 (FAPI 2.0 §5.3.2.2)",
            (false, true) => "this client",
            (false, false) => "this server",
        };
        return Err(Box::new(back.error(
            "invalid_request",
            &format!("{whose} requires pushed authorization requests: POST the parameters to /par first (RFC 9126)"),
        )));
    }
    let req = match check(form, client, redirect_uri) {
        Ok(req) => req,
        Err(Refusal::Page(text)) => {
            tracing::info!(client_id = %client.client_id, reason = %text, "authorization request refused");
            return Err(Box::new(pages::error(StatusCode::BAD_REQUEST, &text)));
        }
        Err(Refusal::Client(code, d)) => return Err(Box::new(back.error(code, &d))),
    };
    let prompt_none = form.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none"));
    Ok((req, prompt_none))
}

async fn read_params(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Result<Form, OAuthError> {
    match *method {
        Method::GET => Form::parse(query.unwrap_or("").as_bytes()),
        Method::POST => Form::read(headers, body).await,
        _ => Err(OAuthError::method_not_allowed()),
    }
}
