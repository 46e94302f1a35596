//! The sign-in and consent pages of a pending authorization request.
//!
//! Each form carries the request id and its CSRF token, and is accepted only from the browser
//! that started the request (its binding cookie). Failed passwords are throttled per account
//! and per address.

use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use serde::Deserialize;

use super::browser::{client_ip, same_secret};
use super::browser_flow::{
    FirstFactor, IDENTITY_SCOPES, Pending, Person, SECOND_FACTOR_PAGE, Stage, completion, consent_needed,
    current_session, first_party, load_pending, park_again, proceed, start_session, unavailable, wants_second_factor,
};
use super::form::Form;
use super::pages::{self, ScopeLine};
use super::state::ProviderState;
use crate::audit::{Event, Record};
use crate::store::Session;

#[derive(Deserialize)]
pub struct PendingQuery {
    pub(super) request: Option<String>,
}

pub(super) const EXPIRED: &str =
    "This sign-in has expired or was already used. Go back to the application and start again.";

pub(super) fn client_label(state: &ProviderState, client_id: &str) -> String {
    if client_id.is_empty() {
        // A sign-in to the person's own account page.
        return "your account".into();
    }
    match state.registry.load().clients.get(client_id) {
        Some(c) => format!("{}/{}", c.namespace, c.name),
        None => client_id.to_string(),
    }
}

/// One audit record of the sign-in pages.
pub(super) fn audit_sign_in(
    state: &ProviderState,
    event: Event,
    client_id: &str,
    subject: &str,
    source: Option<std::net::IpAddr>,
    reason: &str,
) {
    let record = Record {
        client_id: Some(client_id),
        subject: Some(subject).filter(|s| !s.is_empty()),
        source,
        reason: Some(reason).filter(|r| !r.is_empty()),
        ..Default::default()
    };
    state.audit_event(event, &record);
}

/// GET /login?request=ID
pub async fn login_page(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<PendingQuery>,
) -> Response {
    match load_pending(&state, &headers, q.request.as_deref()).await {
        Ok(Some(p)) => login_form(
            &state,
            &p,
            p.request.login_hint.as_deref().unwrap_or(""),
            StatusCode::OK,
            None,
        ),
        Ok(None) => pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => unavailable(e),
    }
}

/// The sign-in page of `pending`, with `username` filled in: a password, a passkey (when
/// passkeys are on: a fresh ceremony each time), or an upstream provider.
fn login_form(
    state: &ProviderState,
    pending: &Pending,
    username: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let passkey = super::browser_flow::passkey_form(state, None, &pending.id);
    pages::login(
        status,
        &pages::LoginForm {
            client: &client_label(state, &pending.request.client_id),
            action: &state.issuer.endpoint("/login"),
            request: &pending.id,
            csrf: &pending.stored.csrf,
            username,
            upstream: &super::federation::options(state, &pending.id),
            passkey: passkey.as_ref(),
        },
        error,
    )
}

/// The sign-in page of `pending` again, saying why.
pub(super) fn login_again(state: &ProviderState, pending: &Pending, status: StatusCode, why: &str) -> Response {
    login_form(
        state,
        pending,
        pending.request.login_hint.as_deref().unwrap_or(""),
        status,
        Some(why),
    )
}

/// Reads the form a page POSTed (anything else is refused on a page).
pub(super) async fn page_form(request: Request) -> Result<(axum::http::request::Parts, Form), Response> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return Err(pages::error(StatusCode::METHOD_NOT_ALLOWED, "Use the form."));
    }
    let form = Form::read(&parts.headers, body)
        .await
        .map_err(|e| pages::error(StatusCode::BAD_REQUEST, &e.description))?;
    Ok((parts, form))
}

/// Reads a page's form and the pending request it continues, checking the CSRF token.
pub(super) async fn form_and_pending(
    state: &ProviderState,
    request: Request,
) -> Result<(HeaderMap, Form, Pending, Option<std::net::IpAddr>), Response> {
    let ip = client_ip(&request);
    let (parts, form) = page_form(request).await?;
    let pending = match load_pending(state, &parts.headers, form.get("request")).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(pages::error(StatusCode::BAD_REQUEST, EXPIRED)),
        Err(e) => return Err(unavailable(e)),
    };
    if !form.get("csrf").is_some_and(|c| same_secret(c, &pending.stored.csrf)) {
        return Err(pages::error(
            StatusCode::FORBIDDEN,
            "The form was not sent from this sign-in page. Start again from the application.",
        ));
    }
    Ok((parts.headers, form, pending, ip))
}

/// POST /login
pub async fn login_submit(State(state): State<ProviderState>, request: Request) -> Response {
    let (headers, form, pending, ip) = match form_and_pending(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let client = client_label(&state, &pending.request.client_id);
    let username = form.get("username").unwrap_or("").trim().to_string();
    let again = |status, error: &str| login_form(&state, &pending, &username, status, Some(error));
    // The attempt is counted before the password is checked, so parallel guesses count.
    let attempt = match state.throttle.reserve(&username, ip, Instant::now()).await {
        Ok(attempt) => attempt,
        Err(wait) => {
            let minutes = wait.as_secs().div_ceil(60);
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many failed attempts. Try again in {minutes} minute(s)."),
            );
        }
    };
    let password = form.get("password").unwrap_or("").to_string();
    let people = state.people.load_full();
    let checked = state.password_checks.verify(people, username.clone(), password).await;
    let user = match checked {
        Ok(Some(user)) => user,
        Ok(None) => {
            tracing::info!(client = %client, "failed sign-in");
            audit_sign_in(
                &state,
                Event::SignInFailed,
                &pending.request.client_id,
                &username,
                ip,
                "wrong username or password",
            );
            return again(StatusCode::UNAUTHORIZED, "Wrong username or password.");
        }
        Err(_) => {
            // Not the person's fault: the attempt does not count against them.
            state.throttle.succeeded(attempt).await;
            tracing::warn!(client = %client, "sign-in turned away: every password check slot is busy");
            return again(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many people are signing in right now. Try again in a moment.",
            );
        }
    };
    state.throttle.succeeded(attempt).await;
    tracing::info!(subject = %user.username, client = %client, "signed in");
    audit_sign_in(
        &state,
        Event::SignIn,
        &pending.request.client_id,
        &user.username,
        ip,
        "password",
    );
    // A second factor next, when the person enrolled one, the request wants one, or the
    // platform does: no session until it is proved.
    let password_only = Session {
        subject: user.username.clone(),
        auth_time: Timestamp::now().as_second(),
        credential: user.credential(),
        amr: vec!["pwd".into()],
    };
    match wants_second_factor(&state, &pending.request, &password_only).await {
        Ok(false) => {}
        Ok(true) => {
            let mut req = pending.request.clone();
            req.first_factor = Some(FirstFactor {
                subject: password_only.subject,
                credential: password_only.credential,
            });
            return park_again(&state, &pending.id, &req, SECOND_FACTOR_PAGE)
                .await
                .unwrap_or_else(unavailable);
        }
        Err(e) => return unavailable(e),
    }
    let person = Person {
        subject: &user.username,
        claims: &user.claims(),
        credential: &user.credential(),
        amr: password_only.amr,
    };
    match start_session(&state, &headers, &pending, person).await {
        Ok(r) => r,
        Err(e) => unavailable(e),
    }
}

/// GET /consent?request=ID
pub async fn consent_page(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<PendingQuery>,
) -> Response {
    let pending = match load_pending(&state, &headers, q.request.as_deref()).await {
        Ok(Some(p)) => p,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return unavailable(e),
    };
    let now = Timestamp::now().as_second();
    let session = match current_session(&state, &headers, now).await {
        Ok(Some((_, s))) => s,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return unavailable(e),
    };
    let snapshot = state.registry.load();
    let remembered = match state.store.consent(&session.subject, &pending.request.client_uid).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let first_party = first_party(&state, &snapshot, &pending.request);
    let device = pending.request.device.as_ref().map(|_| ScopeLine {
        value: "device".into(),
        description: "Sign in on the device that showed you the code you entered".into(),
    });
    let lines: Vec<ScopeLine> = device
        .into_iter()
        .chain(
            consent_needed(&snapshot, &pending.request, remembered.as_deref(), first_party)
                .into_iter()
                .map(|value| {
                    let description = IDENTITY_SCOPES
                        .iter()
                        .find(|(v, _)| *v == value)
                        .map(|(_, d)| d.to_string())
                        .or_else(|| snapshot.scopes.get(&value).and_then(|s| s.description.clone()))
                        .unwrap_or_else(|| format!("Use {value}"));
                    ScopeLine { value, description }
                }),
        )
        .collect();
    pages::consent(
        &client_label(&state, &pending.request.client_id),
        &session.subject,
        &lines,
        &state.issuer.endpoint("/consent"),
        &pending.id,
        &pending.stored.csrf,
    )
}

/// POST /consent
pub async fn consent_submit(State(state): State<ProviderState>, request: Request) -> Response {
    let (headers, form, pending, ip) = match form_and_pending(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = Timestamp::now().as_second();
    let (session_id, session) = match current_session(&state, &headers, now).await {
        Ok(Some((id, s))) => (id, s),
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return unavailable(e),
    };
    let req = &pending.request;
    // A session that must step up first records nothing yet: proceed sends it to the code.
    match wants_second_factor(&state, req, &session).await {
        Ok(false) => {}
        Ok(true) => {
            let snapshot = state.registry.load();
            let stage = Stage::Stored(&pending.id);
            return proceed(
                &state,
                &snapshot,
                &headers,
                Some((session_id, session)),
                req,
                stage,
                false,
            )
            .await
            .unwrap_or_else(unavailable);
        }
        Err(e) => return unavailable(e),
    }
    if form.get("decision") != Some("allow") {
        if let Err(e) = state.store.finish_auth_request(&pending.id).await {
            return unavailable(e);
        }
        tracing::info!(subject = %session.subject, client_id = %req.client_id, "consent denied");
        audit_sign_in(&state, Event::ConsentDenied, &req.client_id, &session.subject, ip, "");
        return match completion::refused(&state, req, "access_denied", "the person denied the request").await {
            Ok(r) => r,
            Err(e) => unavailable(e),
        };
    }
    let remember = async {
        let mut allowed = state
            .store
            .consent(&session.subject, &req.client_uid)
            .await?
            .unwrap_or_default();
        for s in &req.scopes {
            if !allowed.contains(s) {
                allowed.push(s.clone());
            }
        }
        state
            .store
            .remember_consent(&session.subject, &req.client_uid, &allowed, now)
            .await
    };
    let granted = req.scopes.join(" ");
    audit_sign_in(
        &state,
        Event::ConsentGiven,
        &req.client_id,
        &session.subject,
        ip,
        &granted,
    );
    if let Err(e) = remember.await {
        return unavailable(e);
    }
    let snapshot = state.registry.load();
    // The consent is recorded: proceed no longer asks, even for prompt=consent.
    let mut req = req.clone();
    req.force_consent = false;
    match proceed(
        &state,
        &snapshot,
        &headers,
        Some((session_id, session)),
        &req,
        Stage::Stored(&pending.id),
        false,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => unavailable(e),
    }
}
