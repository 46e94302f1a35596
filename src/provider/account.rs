//! The person's own account page (`/account`, behind sign-in): their sessions, the apps they
//! allowed (client, namespace, scopes, when) and their second factor. They can take one app
//! back (its refresh families and the access tokens those issued end, and its remembered
//! consent is forgotten) or sign out everywhere (every session ends; the apps each signed in
//! to are told by back-channel logout), or remove their authenticator app (only from a session
//! that proved it, and never while the platform requires one). Each action is a form with a CSRF token bound to the
//! session, and an audit event.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;

use super::browser::{CookieName, client_ip, same_secret, set_cookie};
use super::browser_flow::completion::ACCOUNT_PAGE;
use super::browser_flow::{
    AuthRequest, Stage, current_session, proceed, see_other, session_sid, unavailable, wants_second_factor,
};
use super::form::Form;
use super::pages::{self, AccountApp, AccountPasskey, AccountPasskeys, AccountSession, AccountView, PasskeyForm};
use super::state::ProviderState;
use crate::audit::{Event, Record};
use crate::store::{PasskeyAdded, Session, StoredPasskey};

/// Where the account page's forms post.
pub const REVOKE_APP: &str = "/account/revoke-app";
pub const SIGN_OUT_EVERYWHERE: &str = "/account/sign-out-everywhere";
pub const REMOVE_SECOND_FACTOR: &str = "/account/remove-second-factor";
pub const END_SESSION: &str = "/account/end-session";
pub const ADD_PASSKEY: &str = "/account/passkeys/add";
pub const REMOVE_PASSKEY: &str = "/account/passkeys/remove";

/// The CSRF token of the account page's forms: derived from the session's stored id (the
/// digest of its cookie, which never leaves kauth), so only a page of this session has it.
fn csrf_of(session_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("account\n{session_id}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// GET /account: the page for a signed-in person; otherwise a sign-in that comes back here.
pub async fn page(State(state): State<ProviderState>, request: Request) -> Response {
    let from = client_ip(&request);
    let headers = request.headers().clone();
    let now = Timestamp::now().as_second();
    // A session weaker than a sign-in now needs (a factor enrolled since, or the platform's
    // policy) steps up first, and no session signs in first; both come back here.
    let signing_in = match current_session(&state, &headers, now).await {
        Ok(Some((id, session))) => match wants_second_factor(&state, &account_request(now), &session).await {
            Ok(false) => return render(&state, &id, &session, now).await.unwrap_or_else(unavailable),
            Ok(true) => Some((id, session)),
            Err(e) => return unavailable(e),
        },
        Ok(None) => None,
        Err(e) => return unavailable(e),
    };
    let snapshot = state.registry.load();
    let stage = Stage::New { from };
    proceed(
        &state,
        &snapshot,
        &headers,
        signing_in,
        &account_request(now),
        stage,
        false,
    )
    .await
    .unwrap_or_else(unavailable)
}

/// A sign-in to the account page: no client, no consent; it completes at /account.
fn account_request(now: i64) -> AuthRequest {
    AuthRequest {
        client_id: String::new(),
        client_uid: String::new(),
        redirect_uri: String::new(),
        scopes: Vec::new(),
        audiences: Vec::new(),
        state: None,
        nonce: None,
        code_challenge: None,
        force_login: false,
        force_consent: false,
        max_age: None,
        login_hint: None,
        started_at: now,
        device: None,
        dpop_jkt: None,
        acr: None,
        first_factor: None,
        account: true,
    }
}

async fn render(
    state: &ProviderState,
    session_id: &str,
    session: &Session,
    now: i64,
) -> Result<Response, crate::store::StoreError> {
    let sessions = state.store.sessions_of(&session.subject, now).await?;
    let apps = state.store.apps_of(&session.subject, now).await?;
    let factors = super::browser_flow::live_factors(state, &session.subject).await?;
    let recovery_left = match factors.totp {
        Some(_) => Some(state.store.recovery_codes_left(&session.subject).await?),
        None => None,
    };
    let snapshot = state.registry.load();
    let when = |t: i64| {
        Timestamp::from_second(t)
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default()
    };
    let view = AccountView {
        person: session.subject.clone(),
        csrf: csrf_of(session_id),
        revoke_action: state.issuer.endpoint(REVOKE_APP),
        sign_out_action: state.issuer.endpoint(SIGN_OUT_EVERYWHERE),
        end_session_action: state.issuer.endpoint(END_SESSION),
        remove_factor_action: state.issuer.endpoint(REMOVE_SECOND_FACTOR),
        sessions: sessions
            .iter()
            .map(|s| AccountSession {
                sid: session_sid(&s.id),
                signed_in: when(s.session.auth_time),
                how: if s.session.amr.is_empty() {
                    "an upstream provider".into()
                } else {
                    s.session.amr.join(" ")
                },
                this_browser: s.id == session_id,
            })
            .collect(),
        apps: apps
            .iter()
            .map(|a| {
                // Named by the object it was granted to; a deleted one has no name any more.
                let served = snapshot.clients.values().find(|c| c.uid == a.client_uid);
                AccountApp {
                    name: match served {
                        Some(c) => format!("{}/{} ({})", c.namespace, c.name, c.client_id),
                        None => format!(
                            "a client that no longer exists ({})",
                            a.client_id.as_deref().unwrap_or("unknown id")
                        ),
                    },
                    client_uid: a.client_uid.clone(),
                    scopes: a.scopes.as_ref().map(|s| s.join(" ")).unwrap_or_default(),
                    allowed: a
                        .granted_at
                        .map(when)
                        .unwrap_or_else(|| "without asking (first-party)".into()),
                    refresh_tokens: a.live_families,
                }
            })
            .collect(),
        second_factor: recovery_left,
        passkeys: passkeys_section(state, session_id, session, &factors.passkeys, now),
    };
    Ok(pages::account(&view))
}

/// The passkeys section: the person's passkeys, and a ceremony to add one (bound to this
/// session). None when passkeys are off, or for a person of an upstream provider (kauth
/// vouches for passkeys of its own people only).
fn passkeys_section(
    state: &ProviderState,
    session_id: &str,
    session: &Session,
    registered: &[StoredPasskey],
    now: i64,
) -> Option<AccountPasskeys> {
    let (passkeys, key) = (state.passkeys.as_ref()?, state.second_factor_key.as_ref()?);
    if session.subject.contains(':') {
        return None;
    }
    let when = |t: i64| {
        Timestamp::from_second(t)
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default()
    };
    let add = (registered.len() < crate::store::MAX_PASSKEYS_PER_PERSON as usize)
        .then(|| passkeys.registration(key, &session.subject, registered, session_id, now))
        .flatten()
        .map(|c| PasskeyForm {
            action: state.issuer.endpoint(ADD_PASSKEY),
            options: c.options,
            sealed: c.sealed,
        });
    Some(AccountPasskeys {
        registered: registered
            .iter()
            .map(|p| AccountPasskey {
                id: p.credential_id.clone(),
                name: p.name.clone(),
                added: when(p.created_at),
                used: match p.last_used_at {
                    0 => "not used yet".into(),
                    t => format!("last used {}", when(t)),
                },
            })
            .collect(),
        remove_action: state.issuer.endpoint(REMOVE_PASSKEY),
        add,
    })
}

/// Reads an account form: the live session it belongs to and its CSRF token checked.
async fn account_form(state: &ProviderState, request: Request) -> Result<(HeaderMap, Form, String, Session), Response> {
    let (parts, form) = super::signin::page_form(request).await?;
    let now = Timestamp::now().as_second();
    let (id, session) = match current_session(state, &parts.headers, now).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(see_other(&state.issuer.endpoint(ACCOUNT_PAGE))),
        Err(e) => return Err(unavailable(e)),
    };
    // As the page: a session that must step up acts on nothing (the page takes it there).
    match wants_second_factor(state, &account_request(now), &session).await {
        Ok(false) => {}
        Ok(true) => return Err(see_other(&state.issuer.endpoint(ACCOUNT_PAGE))),
        Err(e) => return Err(unavailable(e)),
    }
    if !form.get("csrf").is_some_and(|c| same_secret(c, &csrf_of(&id))) {
        return Err(pages::error(
            StatusCode::FORBIDDEN,
            "The form was not sent from your account page. Open the page again.",
        ));
    }
    Ok((parts.headers, form, id, session))
}

fn audit(state: &ProviderState, event: Event, subject: &str, source: Option<std::net::IpAddr>, reason: &str) {
    let record = Record {
        subject: Some(subject),
        source,
        reason: Some(reason),
        ..Default::default()
    };
    state.audit_event(event, &record);
}

/// POST /account/revoke-app: takes one app back.
pub async fn revoke_app(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (_, form, _, session) = match account_form(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(client_uid) = form.get("client").filter(|c| !c.is_empty()) else {
        return pages::error(StatusCode::BAD_REQUEST, "Which app? Open the page again.");
    };
    let now = Timestamp::now().as_second();
    // Only this person's own grants: the store matches subject and client object together.
    match state.store.revoke_app(&session.subject, client_uid, now).await {
        Ok(revoked) => {
            state.revocations.remember(&revoked);
            tracing::info!(subject = %session.subject, client_uid, access_tokens = revoked.len(), "app revoked by its person");
            audit(&state, Event::AppRevoked, &session.subject, ip, client_uid);
            see_other(&state.issuer.endpoint(ACCOUNT_PAGE))
        }
        Err(e) => unavailable(e),
    }
}

/// POST /account/sign-out-everywhere: ends every session of the person.
pub async fn sign_out_everywhere(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (_, _, _, session) = match account_form(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = Timestamp::now().as_second();
    let ending = match state.store.sessions_of(&session.subject, now).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    for live in &ending {
        if let Err(e) = state.store.end_session(&live.id).await {
            return unavailable(e);
        }
        // The apps each session signed in to are told (back-channel logout).
        super::backchannel::session_ended(&state, session_sid(&live.id));
    }
    tracing::info!(subject = %session.subject, sessions = ending.len(), "signed out everywhere");
    audit(
        &state,
        Event::SignedOutEverywhere,
        &session.subject,
        ip,
        &format!("{} sessions", ending.len()),
    );
    let mut r = pages::message(
        "Signed out everywhere",
        "Every sign-in to kauth has ended, on every device. Apps you allowed keep what they hold until you revoke them.",
    );
    set_cookie(&mut r, &state.issuer, CookieName::Session, None, 0);
    r
}

/// POST /account/end-session: ends one other session of the person, named by its `sid`.
pub async fn end_session(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (_, form, _, session) = match account_form(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(sid) = form.get("sid") else {
        return pages::error(StatusCode::BAD_REQUEST, "Which session? Open the page again.");
    };
    let now = Timestamp::now().as_second();
    // Only among this person's own sessions: a sid of anyone else's matches nothing.
    let sessions = match state.store.sessions_of(&session.subject, now).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    if let Some(live) = sessions.iter().find(|s| same_secret(&session_sid(&s.id), sid)) {
        if let Err(e) = state.store.end_session(&live.id).await {
            return unavailable(e);
        }
        super::backchannel::session_ended(&state, session_sid(&live.id));
        audit(
            &state,
            Event::Logout,
            &session.subject,
            ip,
            "one session, from the account page",
        );
    }
    see_other(&state.issuer.endpoint(ACCOUNT_PAGE))
}

/// POST /account/remove-second-factor: removes the person's authenticator app and recovery
/// codes, from a session that proved the factor, unless the platform requires one.
pub async fn remove_second_factor(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (_, _, _, session) = match account_form(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(refusal) = removal_refused(&state, &session, |f| !f.passkeys.is_empty()).await {
        return refusal;
    }
    match state.store.remove_second_factors(&session.subject).await {
        Ok(_) => {
            audit(&state, Event::SecondFactorRemoved, &session.subject, ip, "totp");
            see_other(&state.issuer.endpoint(ACCOUNT_PAGE))
        }
        Err(e) => unavailable(e),
    }
}

/// POST /account/passkeys/add: registers the passkey the page's ceremony created (the
/// ceremony was bound to this session, and is spent here).
pub async fn add_passkey(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (_, form, session_id, session) = match account_form(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(passkeys), Some(key)) = (state.passkeys.clone(), state.second_factor_key.clone()) else {
        return pages::error(StatusCode::NOT_FOUND, "Passkeys are not set up on this kauth.");
    };
    if session.subject.contains(':') {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Passkeys are for people with a kauth account; you sign in through another provider.",
        );
    }
    let now = Timestamp::now().as_second();
    let passkey = match passkeys
        .finish_registration(
            &key,
            &state.store,
            form.get("ceremony").unwrap_or(""),
            &session_id,
            form.get("credential").unwrap_or(""),
            now,
        )
        .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(why)) => {
            audit(
                &state,
                Event::SecondFactorFailed,
                &session.subject,
                ip,
                "passkey registration refused",
            );
            return pages::notice(
                StatusCode::BAD_REQUEST,
                "Passkey not added",
                why.0,
                &state.issuer.endpoint(ACCOUNT_PAGE),
            );
        }
        Err(e) => return unavailable(e),
    };
    let name: String = form
        .get("name")
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(super::passkeys::MAX_NAME_CHARS)
        .collect();
    let stored = StoredPasskey {
        credential_id: super::passkeys::credential_id(&passkey),
        subject: session.subject.clone(),
        sealed: super::passkeys::seal_passkey(&key, &passkey, &session.subject),
        name: if name.is_empty() { "Passkey".into() } else { name },
        created_at: now,
        last_used_at: 0,
        // The password of this session: a new one voids the passkey, as it voids the app.
        credential: session.credential.clone(),
    };
    let refusal = match state.store.add_passkey(&stored).await {
        Ok(PasskeyAdded::Added) => None,
        Ok(PasskeyAdded::Taken) => Some("That passkey is registered already."),
        Ok(PasskeyAdded::TooMany) => Some("You have as many passkeys as kauth keeps for one person. Remove one first."),
        Err(e) => return unavailable(e),
    };
    if let Some(why) = refusal {
        audit(
            &state,
            Event::SecondFactorFailed,
            &session.subject,
            ip,
            "passkey registration refused",
        );
        return pages::notice(
            StatusCode::CONFLICT,
            "Passkey not added",
            why,
            &state.issuer.endpoint(ACCOUNT_PAGE),
        );
    }
    tracing::info!(subject = %session.subject, "passkey added");
    audit(&state, Event::SecondFactorEnrolled, &session.subject, ip, "passkey");
    // A session that proved no second factor (the person had none: the first is trusted on
    // first use, as an app's is) has now used this passkey, verified on the device: it counts
    // as signed in with it, as a session that enrolls an app counts as signed in with its code.
    if !session.amr.iter().any(|m| m == "mfa") {
        let upgraded = Session {
            auth_time: now,
            amr: crate::second_factors::passkey_amr(super::passkeys::backup_eligible(&passkey), true),
            ..session
        };
        if let Err(e) = state.store.upgrade_session(&session_id, &upgraded).await {
            return unavailable(e);
        }
    }
    see_other(&state.issuer.endpoint(ACCOUNT_PAGE))
}

/// POST /account/passkeys/remove: removes one of the person's passkeys, from a session that
/// proved a second factor, unless it is the last factor the platform requires.
pub async fn remove_passkey(State(state): State<ProviderState>, request: Request) -> Response {
    let ip = client_ip(&request);
    let (_, form, _, session) = match account_form(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(id) = form.get("passkey").filter(|p| !p.is_empty()) else {
        return pages::error(StatusCode::BAD_REQUEST, "Which passkey? Open the page again.");
    };
    if let Some(refusal) = removal_refused(&state, &session, |f| {
        f.totp.is_some() || f.passkeys.iter().any(|p| p.credential_id != id)
    })
    .await
    {
        return refusal;
    }
    // Only this person's own: the store matches subject and credential id together.
    match state.store.remove_passkey(&session.subject, id).await {
        Ok(removed) => {
            if removed {
                audit(&state, Event::SecondFactorRemoved, &session.subject, ip, "passkey");
            }
            see_other(&state.issuer.endpoint(ACCOUNT_PAGE))
        }
        Err(e) => unavailable(e),
    }
}

/// Why removing a factor is refused, if it is: the session did not prove one (whoever holds
/// the password alone would shed the factor that guards it), or the platform requires a second
/// factor and `another_remains` says none would be left.
async fn removal_refused(
    state: &ProviderState,
    session: &Session,
    another_remains: impl FnOnce(&super::browser_flow::LiveFactors) -> bool,
) -> Option<Response> {
    if !session.amr.iter().any(|m| m == "mfa") {
        return Some(pages::error(
            StatusCode::FORBIDDEN,
            "Sign out and sign in again with your second factor before removing one.",
        ));
    }
    if state.second_factor_required(&session.subject) {
        let factors = match super::browser_flow::live_factors(state, &session.subject).await {
            Ok(f) => f,
            Err(e) => return Some(unavailable(e)),
        };
        if !another_remains(&factors) {
            audit(
                state,
                Event::SecondFactorFailed,
                &session.subject,
                None,
                "removal refused: required",
            );
            return Some(pages::error(
                StatusCode::CONFLICT,
                "Your platform requires a second factor: the last one cannot be removed.",
            ));
        }
    }
    None
}
