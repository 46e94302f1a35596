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

use super::ProviderState;
use super::authorize::{
    AuthRequest, ClientRedirect, IDENTITY_SCOPES, SESSION_LIFETIME_SECS, consent_needed, first_party, proceed,
};
use super::browser::{CookieName, client_ip, handle_digest, random_handle, read_cookie, same_secret, set_cookie};
use super::form::Form;
use super::pages::{self, ScopeLine};
use crate::store::{PendingRequest, Session, StoreError};

#[derive(Deserialize)]
pub struct PendingQuery {
    request: Option<String>,
}

const EXPIRED: &str = "This sign-in has expired or was already used. Go back to the application and start again.";

/// A pending request this browser started, with its checked contents.
pub(super) struct Pending {
    pub id: String,
    pub stored: PendingRequest,
    pub request: AuthRequest,
}

/// The pending request `id`, if it is live and this browser started it.
pub(super) async fn load_pending(
    state: &ProviderState,
    headers: &HeaderMap,
    id: Option<&str>,
) -> Result<Option<Pending>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    let now = Timestamp::now().as_second();
    let Some(stored) = state.store.auth_request(id, now).await? else {
        return Ok(None);
    };
    // Only the browser that started the request may continue it.
    let browser = read_cookie(headers, &state.issuer, CookieName::Browser).map(|b| handle_digest(&b));
    if !browser.is_some_and(|b| same_secret(&b, &stored.browser)) {
        return Ok(None);
    }
    let Ok(request) = serde_json::from_str(&stored.request) else {
        return Ok(None);
    };
    Ok(Some(Pending {
        id: id.to_string(),
        stored,
        request,
    }))
}

fn client_label(state: &ProviderState, client_id: &str) -> String {
    match state.registry.load().clients.get(client_id) {
        Some(c) => format!("{}/{}", c.namespace, c.name),
        None => client_id.to_string(),
    }
}

fn unavailable(e: StoreError) -> Response {
    tracing::error!(error = %e, "grant store unavailable during sign-in");
    let mut page = pages::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Signing in is not possible right now. Try again shortly.",
    );
    page.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static(super::error::RETRY_AFTER_SECONDS),
    );
    page
}

/// GET /login?request=ID
pub async fn login_page(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<PendingQuery>,
) -> Response {
    match load_pending(&state, &headers, q.request.as_deref()).await {
        Ok(Some(p)) => pages::login(
            StatusCode::OK,
            &pages::LoginForm {
                client: &client_label(&state, &p.request.client_id),
                action: &state.issuer.endpoint("/login"),
                request: &p.id,
                csrf: &p.stored.csrf,
                username: p.request.login_hint.as_deref().unwrap_or(""),
                upstream: &super::federation::options(&state, &p.id),
            },
            None,
        ),
        Ok(None) => pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => unavailable(e),
    }
}

/// Reads a page's form and the pending request it continues, checking the CSRF token.
async fn form_and_pending(
    state: &ProviderState,
    request: Request,
) -> Result<(HeaderMap, Form, Pending, Option<std::net::IpAddr>), Response> {
    let ip = client_ip(&request);
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return Err(pages::error(StatusCode::METHOD_NOT_ALLOWED, "Use the form."));
    }
    let form = Form::read(&parts.headers, body)
        .await
        .map_err(|e| pages::error(StatusCode::BAD_REQUEST, &e.description))?;
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
    let action = state.issuer.endpoint("/login");
    let username = form.get("username").unwrap_or("").trim().to_string();
    let upstream = super::federation::options(&state, &pending.id);
    let again = |status, error: &str| {
        let form = pages::LoginForm {
            client: &client,
            action: &action,
            request: &pending.id,
            csrf: &pending.stored.csrf,
            username: &username,
            upstream: &upstream,
        };
        pages::login(status, &form, Some(error))
    };
    // The attempt is counted before the password is checked, so parallel guesses count.
    let attempt = match state.throttle.reserve(&username, ip, Instant::now()) {
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
            return again(StatusCode::UNAUTHORIZED, "Wrong username or password.");
        }
        Err(_) => {
            // Not the person's fault: the attempt does not count against them.
            state.throttle.succeeded(attempt);
            tracing::warn!(client = %client, "sign-in turned away: every password check slot is busy");
            return again(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many people are signing in right now. Try again in a moment.",
            );
        }
    };
    state.throttle.succeeded(attempt);
    tracing::info!(subject = %user.username, client = %client, "signed in");
    let person = Person {
        subject: &user.username,
        claims: &user.claims(),
        credential: &user.credential(),
    };
    match start_session(&state, &headers, &pending, person).await {
        Ok(r) => r,
        Err(e) => unavailable(e),
    }
}

/// A person who just proved who they are.
pub(super) struct Person<'a> {
    /// Their subject (a username, or `<connector>:<sub>`).
    pub subject: &'a str,
    /// Their claims, as kauth will release them.
    pub claims: &'a serde_json::Value,
    /// Which password they used ([`crate::people::LocalUser::credential`]); empty upstream.
    pub credential: &'a str,
}

/// Records the person's claims, starts a fresh session for them, and continues the pending
/// request with it (consent or a code). Every sign-in gets a new session id, so a cookie
/// planted before it never becomes a session.
pub(super) async fn start_session(
    state: &ProviderState,
    headers: &HeaderMap,
    pending: &Pending,
    person: Person<'_>,
) -> Result<Response, StoreError> {
    let now = Timestamp::now().as_second();
    let session = Session {
        subject: person.subject.to_string(),
        auth_time: now,
        credential: person.credential.to_string(),
    };
    let cookie = random_handle();
    state.store.save_subject(person.subject, person.claims, now).await?;
    state
        .store
        .create_session(&handle_digest(&cookie), &session, now + SESSION_LIFETIME_SECS)
        .await?;
    let snapshot = state.registry.load();
    let mut response = proceed(
        state,
        &snapshot,
        headers,
        Some(session),
        &pending.request,
        Some(&pending.id),
        false,
    )
    .await?;
    set_cookie(
        &mut response,
        &state.issuer,
        CookieName::Session,
        Some(&cookie),
        SESSION_LIFETIME_SECS,
    );
    Ok(response)
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
    let session = match super::authorize::current_session(&state, &headers, now).await {
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
    let lines: Vec<ScopeLine> = consent_needed(&snapshot, &pending.request, remembered.as_deref(), first_party)
        .into_iter()
        .map(|value| {
            let description = IDENTITY_SCOPES
                .iter()
                .find(|(v, _)| *v == value)
                .map(|(_, d)| d.to_string())
                .or_else(|| snapshot.scopes.get(&value).and_then(|s| s.description.clone()))
                .unwrap_or_else(|| format!("Use {value}"));
            ScopeLine { value, description }
        })
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
    let (headers, form, pending, _) = match form_and_pending(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = Timestamp::now().as_second();
    let session = match super::authorize::current_session(&state, &headers, now).await {
        Ok(Some((_, s))) => s,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return unavailable(e),
    };
    let req = &pending.request;
    if form.get("decision") != Some("allow") {
        if let Err(e) = state.store.finish_auth_request(&pending.id).await {
            return unavailable(e);
        }
        tracing::info!(subject = %session.subject, client_id = %req.client_id, "consent denied");
        let back = ClientRedirect {
            redirect_uri: &req.redirect_uri,
            state: req.state.as_deref(),
            issuer: &state.issuer.url,
        };
        return back.error("access_denied", "the person denied the request");
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
        Some(session),
        &req,
        Some(&pending.id),
        false,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => unavailable(e),
    }
}
