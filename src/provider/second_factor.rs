//! The second-factor page of a pending sign-in (`/login/second-factor`): after the password,
//! or when a session must step up, the person enters a code from their authenticator app
//! (TOTP) or a recovery code; a person without a factor enrolls one here first. Codes are
//! throttled per account and address like passwords (each attempt reserved before the check),
//! each time step is accepted once in all replicas, and a recovery code once. Only then does a
//! session start (or the session stepping up is upgraded in place), with `amr` `pwd otp mfa`.

use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;

use super::browser::{CookieName, set_cookie};
use super::browser_flow::{
    FirstFactor, LiveFactors, Pending, Person, SESSION_LIFETIME_SECS, continue_in_session, current_session,
    live_factors, load_pending, open_session, unavailable,
};
use super::pages::{self, Enrollment, SecondFactorForm};
use super::signin::{EXPIRED, PendingQuery, audit_sign_in, client_label, form_and_pending};
use super::state::ProviderState;
use crate::audit::Event;
use crate::people::Standing;
use crate::second_factors::{self, SealingKey};
use crate::store::Session;

/// The `amr` of a sign-in with a password and a one-time code (RFC 8176).
const AMR_SECOND_FACTOR: [&str; 3] = ["pwd", "otp", "mfa"];

const NOT_SET_UP: &str =
    "Second factors are not set up on this kauth (no --second-factor-key-file). Ask your platform team.";

/// GET /login/second-factor?request=ID
pub async fn page(State(state): State<ProviderState>, headers: HeaderMap, Query(q): Query<PendingQuery>) -> Response {
    let pending = match load_pending(&state, &headers, q.request.as_deref()).await {
        Ok(Some(p)) => p,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return unavailable(e),
    };
    let (first, key) = match awaiting(&state, &pending) {
        Ok(v) => v,
        Err((status, why)) => return pages::error(status, why),
    };
    match live_factors(&state, &first.subject).await {
        Ok(factors) if factors.any() => form(&state, &pending, &first, Shown::Factors(&factors), StatusCode::OK, None),
        Ok(_) => {
            let enrollment = enrollment(&state, &key, &pending, &first, &second_factors::new_totp_secret());
            form(
                &state,
                &pending,
                &first,
                Shown::Enrollment(&enrollment),
                StatusCode::OK,
                None,
            )
        }
        Err(e) => unavailable(e),
    }
}

/// What the second-factor page asks for.
pub(super) enum Shown<'a> {
    /// The person's factors: their app's code (or a recovery code), their passkeys.
    Factors(&'a LiveFactors),
    /// An authenticator app being set up (the person has no factor yet).
    Enrollment(&'a Enrollment),
}

/// Who the pending request awaits a second factor of, and the key to seal with: refused when
/// it awaits none, when second factors are not set up, or when that person was removed,
/// disabled or given a new password since their first factor.
fn awaiting(
    state: &ProviderState,
    pending: &Pending,
) -> Result<(FirstFactor, std::sync::Arc<SealingKey>), (StatusCode, &'static str)> {
    let Some(first) = pending.request.first_factor.clone() else {
        return Err((StatusCode::BAD_REQUEST, EXPIRED));
    };
    let Some(key) = state.second_factor_key.clone() else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, NOT_SET_UP));
    };
    if state.standing(&first.subject, Some(&first.credential)) != Standing::Stays {
        return Err((StatusCode::FORBIDDEN, EXPIRED));
    }
    Ok((first, key))
}

/// What a secret being enrolled is sealed for: this person, on this pending request only.
fn enrolling(first: &FirstFactor, pending_id: &str) -> String {
    format!("enroll\n{}\n{pending_id}", first.subject)
}

fn enrollment(
    state: &ProviderState,
    key: &SealingKey,
    pending: &Pending,
    first: &FirstFactor,
    secret: &[u8],
) -> Enrollment {
    let label = url::Url::parse(&state.issuer.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "kauth".into());
    let (uri, base32) = second_factors::otpauth(secret, &format!("kauth {label}"), &first.subject).unwrap_or_default();
    Enrollment {
        uri,
        secret: base32,
        sealed: key.seal(secret, &enrolling(first, &pending.id)),
    }
}

pub(super) fn form(
    state: &ProviderState,
    pending: &Pending,
    first: &FirstFactor,
    shown: Shown<'_>,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let client = client_label(state, &pending.request.client_id);
    let action = state.issuer.endpoint(super::browser_flow::SECOND_FACTOR_PAGE);
    let (enroll, code, passkey) = match shown {
        Shown::Enrollment(e) => (Some(e), true, None),
        Shown::Factors(f) => (
            None,
            f.totp.is_some(),
            super::browser_flow::passkey_form(state, Some((&first.subject, &f.passkeys)), &pending.id),
        ),
    };
    pages::second_factor(
        status,
        &SecondFactorForm {
            client: &client,
            person: &first.subject,
            action: &action,
            request: &pending.id,
            csrf: &pending.stored.csrf,
            enroll,
            code,
            passkey: passkey.as_ref(),
        },
        error,
    )
}

/// POST /login/second-factor
pub async fn submit(State(state): State<ProviderState>, request: Request) -> Response {
    let (headers, form_data, pending, ip) = match form_and_pending(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (first, key) = match awaiting(&state, &pending) {
        Ok(v) => v,
        Err((status, why)) => return pages::error(status, why),
    };
    let client_id = pending.request.client_id.clone();
    let code = form_data.get("code").unwrap_or("").trim().to_string();
    let factors = match live_factors(&state, &first.subject).await {
        Ok(f) => f,
        Err(e) => return unavailable(e),
    };
    let stored = factors.totp.clone();
    if stored.is_none() && !factors.passkeys.is_empty() {
        // A person with a passkey proves it; nobody holding their password alone may set up
        // an app beside it (and so around it).
        return form(
            &state,
            &pending,
            &first,
            Shown::Factors(&factors),
            StatusCode::BAD_REQUEST,
            Some("Use your passkey."),
        );
    }
    // The secret being enrolled comes back sealed for this person and request, or not at all.
    let enrolling_secret = match (&stored, form_data.get("enroll")) {
        (None, Some(sealed)) => match key.open(sealed, &enrolling(&first, &pending.id)) {
            Some(secret) => Some(secret),
            None => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        },
        (None, None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        (Some(_), _) => None,
    };
    let again = |status, error: &str| match &enrolling_secret {
        Some(secret) => {
            let enrollment = Enrollment {
                // The same secret again: the person may have added it to their app already.
                sealed: form_data.get("enroll").unwrap_or("").to_string(),
                ..enrollment(&state, &key, &pending, &first, secret)
            };
            form(
                &state,
                &pending,
                &first,
                Shown::Enrollment(&enrollment),
                status,
                Some(error),
            )
        }
        None => form(&state, &pending, &first, Shown::Factors(&factors), status, Some(error)),
    };
    // Counted before the check, so parallel guesses count (T8); its own account key, so a
    // right password does not clear the count of wrong codes.
    let attempt = match state
        .throttle
        .reserve_second_factor(&first.subject, ip, Instant::now())
        .await
    {
        Ok(a) => a,
        Err(wait) => {
            audit_sign_in(
                &state,
                Event::SecondFactorFailed,
                &client_id,
                &first.subject,
                ip,
                "throttled",
            );
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many wrong codes. Try again in {} minute(s).",
                    wait.as_secs().div_ceil(60)
                ),
            );
        }
    };
    let now = Timestamp::now().as_second();
    let proved = if let Some(secret) = &enrolling_secret {
        match second_factors::matching_step(secret, &code, now as u64) {
            Some(step) => {
                let codes = second_factors::new_recovery_codes();
                let digests: Vec<String> = codes.iter().map(|c| key.recovery_digest(&first.subject, c)).collect();
                let sealed = key.seal(secret, &first.subject);
                let enrolled = async {
                    let stored = state
                        .store
                        .enroll_totp(&first.subject, &first.credential, &sealed, &digests, now)
                        .await?;
                    if stored {
                        state.store.use_totp_step(&first.subject, step as i64).await?;
                    }
                    Ok::<_, crate::store::StoreError>(stored)
                };
                match enrolled.await {
                    Ok(true) => {}
                    // Another window enrolled first: its app is the one that counts.
                    Ok(false) => {
                        return pages::error(
                            StatusCode::CONFLICT,
                            "An authenticator app was set up for you meanwhile, in another window. Start again from the application and use that app's code.",
                        );
                    }
                    Err(e) => return unavailable(e),
                }
                audit_sign_in(
                    &state,
                    Event::SecondFactorEnrolled,
                    &client_id,
                    &first.subject,
                    ip,
                    "totp",
                );
                Proved::Enrolled(codes)
            }
            None => Proved::No("That code is not right. Check the app's clock and try the current code."),
        }
    } else if let Some(totp) = &stored {
        match check_code(&state, &key, &first.subject, &totp.sealed, &code, now).await {
            Ok(p) => p,
            Err(e) => return unavailable(e),
        }
    } else {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    };
    let (how, recovery_codes) = match proved {
        Proved::No(why) => {
            audit_sign_in(&state, Event::SecondFactorFailed, &client_id, &first.subject, ip, why);
            return again(StatusCode::UNAUTHORIZED, why);
        }
        Proved::Code => ("totp", None),
        Proved::RecoveryCode => ("recovery code", None),
        Proved::Enrolled(codes) => ("totp (enrolled)", Some(codes)),
    };
    state.throttle.succeeded(attempt).await;
    audit_sign_in(&state, Event::SecondFactorUsed, &client_id, &first.subject, ip, how);
    let amr = AMR_SECOND_FACTOR.iter().map(|m| m.to_string()).collect();
    continue_proved(&state, &headers, &pending, &first, amr, recovery_codes).await
}

/// The sign-in of `first` continues once they proved a second factor (`amr` says how): the
/// session stepping up is upgraded, or a fresh one starts after a password; `recovery_codes`
/// of a fresh enrollment are shown before the way on.
pub(super) async fn continue_proved(
    state: &ProviderState,
    headers: &HeaderMap,
    pending: &Pending,
    first: &FirstFactor,
    amr: Vec<String>,
    recovery_codes: Option<Vec<String>>,
) -> Response {
    let now = Timestamp::now().as_second();
    let people = state.people.load();
    let Some(user) = people.user(&first.subject) else {
        return pages::error(StatusCode::FORBIDDEN, EXPIRED);
    };
    let person = Person {
        subject: &first.subject,
        claims: &user.claims(),
        credential: &first.credential,
        amr,
    };
    // A session stepping up is upgraded where it is (the apps it signed in to stay signed in,
    // its id was kauth's own from its sign-in); after a password, a fresh session starts.
    let stepping_up = match current_session(state, headers, now).await {
        Ok(Some((id, s))) if s.subject == first.subject && s.credential == first.credential => Some(id),
        Ok(_) => None,
        Err(e) => return unavailable(e),
    };
    let (cookie, session_id, session) = match stepping_up {
        Some(id) => {
            let session = Session {
                subject: first.subject.clone(),
                auth_time: now,
                credential: first.credential.clone(),
                amr: person.amr.clone(),
            };
            match state.store.upgrade_session(&id, &session).await {
                Ok(_) => (None, id, session),
                Err(e) => return unavailable(e),
            }
        }
        None => match open_session(state, person).await {
            Ok((cookie, id, session)) => (Some(cookie), id, session),
            Err(e) => return unavailable(e),
        },
    };
    match recovery_codes {
        None => continue_in_session(state, headers, pending, session_id, session, cookie.as_deref())
            .await
            .unwrap_or_else(unavailable),
        // Shown once, before the way on: the request continues (and its code is minted) only
        // when the person clicks on, so the code cannot expire while they write them down.
        Some(codes) => {
            let next = format!("{}?request={}", state.issuer.endpoint(RESUME), pending.id);
            let mut page = pages::recovery_codes(&codes, &next);
            if let Some(cookie) = cookie {
                set_cookie(
                    &mut page,
                    &state.issuer,
                    CookieName::Session,
                    Some(&cookie),
                    SESSION_LIFETIME_SECS,
                );
            }
            page
        }
    }
}

/// Where the recovery-codes page continues the sign-in.
pub const RESUME: &str = "/login/resume";

/// GET /login/resume?request=ID: continues a pending request in this browser's session, once
/// that session has proved the second factor it was waiting for.
pub async fn resume(State(state): State<ProviderState>, headers: HeaderMap, Query(q): Query<PendingQuery>) -> Response {
    let pending = match load_pending(&state, &headers, q.request.as_deref()).await {
        Ok(Some(p)) => p,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return unavailable(e),
    };
    let now = Timestamp::now().as_second();
    match current_session(&state, &headers, now).await {
        Ok(Some((id, session)))
            if pending
                .request
                .first_factor
                .as_ref()
                .is_some_and(|f| f.subject == session.subject) =>
        {
            // proceed asks for the code again if this session has not proved it.
            continue_in_session(&state, &headers, &pending, id, session, None)
                .await
                .unwrap_or_else(unavailable)
        }
        Ok(_) => pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => unavailable(e),
    }
}

/// How a second factor was proved, or why not.
enum Proved {
    No(&'static str),
    Code,
    RecoveryCode,
    Enrolled(Vec<String>),
}

/// Checks a six-digit code against the person's TOTP (each step once), or anything else as a
/// recovery code (each once).
async fn check_code(
    state: &ProviderState,
    key: &SealingKey,
    subject: &str,
    sealed: &str,
    code: &str,
    now: i64,
) -> Result<Proved, crate::store::StoreError> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        let Some(secret) = key.open(sealed, subject) else {
            tracing::error!(subject, "a second-factor secret does not open with this kauth's key");
            return Ok(Proved::No(
                "Your second factor cannot be read by this kauth. Use a recovery code, or ask your platform team.",
            ));
        };
        return Ok(match second_factors::matching_step(&secret, &digits, now as u64) {
            None => Proved::No("That code is not right. Try the current one."),
            Some(step) if state.store.use_totp_step(subject, step as i64).await? => Proved::Code,
            Some(_) => Proved::No("That code was used already. Wait for the next one."),
        });
    }
    Ok(
        if state
            .store
            .use_recovery_code(subject, &key.recovery_digest(subject, code))
            .await?
        {
            Proved::RecoveryCode
        } else {
            Proved::No("That code is not right. Try the current one.")
        },
    )
}
