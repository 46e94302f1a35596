//! Signing in with a passkey (`POST /login/passkey`): passwordless from the sign-in page (the
//! browser finds the person's passkey), or as the second factor after a password or for a
//! step-up (one of that person's passkeys). The ceremony's state comes back sealed for this
//! pending request and is spent at once; the passkey must belong to a person who still stands,
//! under the password it was added with; attempts are reserved before the signature is
//! checked: per person and address like codes after a password, per address when passwordless.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;

use super::browser_flow::{FirstFactor, Pending, Person, live_factors, start_session, unavailable};
use super::pages;
use super::second_factor::{Shown, continue_proved, form as second_factor_form};
use super::signin::{EXPIRED, audit_sign_in, form_and_pending, login_again};
use super::state::ProviderState;
use crate::audit::Event;
use crate::people::Standing;

/// POST /login/passkey
pub async fn submit(State(state): State<ProviderState>, request: Request) -> Response {
    let (headers, form, pending, ip) = match form_and_pending(&state, request).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(passkeys), Some(key)) = (state.passkeys.clone(), state.second_factor_key.clone()) else {
        return pages::error(StatusCode::NOT_FOUND, "Passkeys are not set up on this kauth.");
    };
    let client_id = pending.request.client_id.clone();
    let first = pending.request.first_factor.clone();
    let now = Timestamp::now().as_second();
    // Every answer counts against its address before anything is spent or stored (T9: a
    // caller posting answers at will writes at most the address's limit of spent ceremonies);
    // a right one gives it back.
    let at_address = match state.throttle.reserve_for_address(ip, Instant::now()).await {
        Ok(a) => a,
        Err(wait) => {
            audit_sign_in(
                &state,
                Event::SecondFactorFailed,
                &client_id,
                "",
                ip,
                "passkey: throttled",
            );
            let why = format!(
                "Too many attempts. Try again in {} minute(s).",
                wait.as_secs().div_ceil(60)
            );
            return again(&state, &pending, StatusCode::TOO_MANY_REQUESTS, &why).await;
        }
    };
    let answer = match passkeys
        .open_sign_in(
            &key,
            &state.store,
            form.get("ceremony").unwrap_or(""),
            &pending.id,
            form.get("credential").unwrap_or(""),
            now,
        )
        .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => return again(&state, &pending, StatusCode::BAD_REQUEST, why.0).await,
        Err(e) => return unavailable(e),
    };
    // A ceremony for a second factor is for the person who passed the first, and no other.
    if answer.for_person() != first.as_ref().map(|f| f.subject.as_str()) {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    }
    let stored = match state.store.passkey(&answer.credential_id).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    // It counts only for a person who stands, under the password it was added with (a new
    // password, a removed or disabled person void it), and for the person of the first factor.
    let live = stored.filter(|p| {
        state.standing(&p.subject, Some(&p.credential)) == Standing::Stays
            && first
                .as_ref()
                .is_none_or(|f| f.subject == p.subject && f.credential == p.credential)
    });
    let Some(stored) = live else {
        audit_sign_in(
            &state,
            Event::SecondFactorFailed,
            &client_id,
            "",
            ip,
            "passkey: unknown or void",
        );
        return again(&state, &pending, StatusCode::UNAUTHORIZED, super::passkeys::UNKNOWN.0).await;
    };
    // After a password, attempts also count against the person's codes (whoever knows the
    // password is the one guessing); a passwordless attempt knows only a credential id, which
    // is no secret, so it counts against its address alone: naming someone's passkey locks no
    // one out.
    let for_person = match &first {
        Some(_) => match state
            .throttle
            .reserve_second_factor(&stored.subject, None, Instant::now())
            .await
        {
            Ok(a) => Some(a),
            Err(wait) => {
                audit_sign_in(
                    &state,
                    Event::SecondFactorFailed,
                    &client_id,
                    &stored.subject,
                    ip,
                    "passkey: throttled",
                );
                let why = format!(
                    "Too many attempts. Try again in {} minute(s).",
                    wait.as_secs().div_ceil(60)
                );
                return again(&state, &pending, StatusCode::TOO_MANY_REQUESTS, &why).await;
            }
        },
        None => None,
    };
    let answered = match passkeys.verify(&key, answer, &stored) {
        Ok(a) => a,
        Err(why) => {
            audit_sign_in(
                &state,
                Event::SecondFactorFailed,
                &client_id,
                &stored.subject,
                ip,
                "passkey",
            );
            return again(&state, &pending, StatusCode::UNAUTHORIZED, why.0).await;
        }
    };
    match state
        .store
        .passkey_used(
            &stored.subject,
            &stored.credential_id,
            answered.resealed.as_deref(),
            now,
        )
        .await
    {
        Ok(true) => {}
        // Removed meanwhile, on the account page.
        Ok(false) => return again(&state, &pending, StatusCode::UNAUTHORIZED, super::passkeys::UNKNOWN.0).await,
        Err(e) => return unavailable(e),
    }
    state.throttle.succeeded(at_address).await;
    if let Some(attempt) = for_person {
        state.throttle.succeeded(attempt).await;
    }
    audit_sign_in(
        &state,
        Event::SecondFactorUsed,
        &client_id,
        &stored.subject,
        ip,
        "passkey",
    );
    let amr = crate::second_factors::passkey_amr(answered.backup_eligible, first.is_some());
    if let Some(first) = &first {
        return continue_proved(&state, &headers, &pending, first, amr, None).await;
    }
    tracing::info!(subject = %stored.subject, client_id = %client_id, "signed in with a passkey");
    audit_sign_in(&state, Event::SignIn, &client_id, &stored.subject, ip, "passkey");
    let people = state.people.load();
    let Some(user) = people.user(&stored.subject) else {
        return pages::error(StatusCode::FORBIDDEN, EXPIRED);
    };
    let person = Person {
        subject: &stored.subject,
        claims: &user.claims(),
        credential: &stored.credential,
        amr,
    };
    start_session(&state, &headers, &pending, person)
        .await
        .unwrap_or_else(unavailable)
}

/// The page the passkey was used from, again, with `why` and a fresh ceremony.
async fn again(state: &ProviderState, pending: &Pending, status: StatusCode, why: &str) -> Response {
    let Some(first) = &pending.request.first_factor else {
        return login_again(state, pending, status, why);
    };
    let first = FirstFactor::clone(first);
    match live_factors(state, &first.subject).await {
        Ok(factors) => second_factor_form(state, pending, &first, Shown::Factors(&factors), status, Some(why)),
        Err(e) => unavailable(e),
    }
}
