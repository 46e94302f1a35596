//! The second-factor page of a pending sign-in (`/login/second-factor`): after the password,
//! or when a session must step up, the person enters a code from their authenticator app
//! (TOTP) or a recovery code; a person without a factor enrolls one here first. Codes are
//! throttled per account and address like passwords (each attempt reserved before the check),
//! each time step is accepted once in all replicas, and a recovery code once. Only then does a
//! session start, with `amr` `pwd otp mfa`.

use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use jiff::Timestamp;

use super::browser_flow::{FirstFactor, Pending, Person, load_pending, start_session, unavailable};
use super::pages::{self, Enrollment, SecondFactorForm};
use super::signin::{EXPIRED, PendingQuery, audit_sign_in, client_label, form_and_pending};
use super::state::ProviderState;
use crate::audit::Event;
use crate::people::Standing;
use crate::second_factors::{self, SealingKey};

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
    let Some(first) = pending.request.first_factor.clone() else {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    };
    let Some(key) = state.second_factor_key.clone() else {
        return pages::error(StatusCode::SERVICE_UNAVAILABLE, NOT_SET_UP);
    };
    match state.store.totp_of(&first.subject).await {
        Ok(Some(_)) => form(&state, &pending, &first, None, StatusCode::OK, None),
        Ok(None) => {
            let enrollment = enrollment(&state, &key, &pending, &first, &second_factors::new_totp_secret());
            form(&state, &pending, &first, Some(&enrollment), StatusCode::OK, None)
        }
        Err(e) => unavailable(e),
    }
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

fn form(
    state: &ProviderState,
    pending: &Pending,
    first: &FirstFactor,
    enroll: Option<&Enrollment>,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let client = client_label(state, &pending.request.client_id);
    let action = state.issuer.endpoint(super::browser_flow::SECOND_FACTOR_PAGE);
    pages::second_factor(
        status,
        &SecondFactorForm {
            client: &client,
            person: &first.subject,
            action: &action,
            request: &pending.id,
            csrf: &pending.stored.csrf,
            enroll,
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
    let Some(first) = pending.request.first_factor.clone() else {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    };
    let Some(key) = state.second_factor_key.clone() else {
        return pages::error(StatusCode::SERVICE_UNAVAILABLE, NOT_SET_UP);
    };
    // Someone removed, disabled or with a new password since the first factor goes no further.
    if state.standing(&first.subject, Some(&first.credential)) != Standing::Stays {
        return pages::error(StatusCode::FORBIDDEN, EXPIRED);
    }
    let client_id = pending.request.client_id.clone();
    let code = form_data.get("code").unwrap_or("").trim().to_string();
    let stored = match state.store.totp_of(&first.subject).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
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
            form(&state, &pending, &first, Some(&enrollment), status, Some(error))
        }
        None => form(&state, &pending, &first, None, status, Some(error)),
    };
    // Counted before the check, so parallel guesses count (T8); its own account key, so a
    // right password does not clear the count of wrong codes.
    let attempt = match state
        .throttle
        .reserve(&format!("second-factor:{}", first.subject), ip, Instant::now())
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
                let digests: Vec<String> = codes.iter().map(|c| second_factors::recovery_digest(c)).collect();
                let sealed = key.seal(secret, &first.subject);
                let stored = async {
                    state.store.enroll_totp(&first.subject, &sealed, &digests, now).await?;
                    state.store.use_totp_step(&first.subject, step as i64).await
                };
                if let Err(e) = stored.await {
                    return unavailable(e);
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
    state.throttle.succeeded(attempt);
    audit_sign_in(&state, Event::SecondFactorUsed, &client_id, &first.subject, ip, how);
    let people = state.people.load();
    let Some(user) = people.user(&first.subject) else {
        return pages::error(StatusCode::FORBIDDEN, EXPIRED);
    };
    let person = Person {
        subject: &first.subject,
        claims: &user.claims(),
        credential: &first.credential,
        amr: AMR_SECOND_FACTOR.iter().map(|m| m.to_string()).collect(),
    };
    let response = match start_session(&state, &headers, &pending, person).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    match recovery_codes {
        None => response,
        // Shown once, before the way on; the session cookie comes with the page.
        Some(codes) => {
            let next = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("/")
                .to_string();
            let mut page = pages::recovery_codes(&codes, &next);
            for cookie in response.headers().get_all(header::SET_COOKIE) {
                page.headers_mut().append(header::SET_COOKIE, cookie.clone());
            }
            page
        }
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
            .use_recovery_code(subject, &second_factors::recovery_digest(code))
            .await?
        {
            Proved::RecoveryCode
        } else {
            Proved::No("That code is not right. Try the current one.")
        },
    )
}
