//! The browser flow every way of signing in shares: a request parked while the person signs
//! in and consents (bound to the browser that started it), their session, and the decision
//! what comes next. The endpoints that start or continue a request (/authorize, the sign-in
//! and consent pages, upstream identity providers) call [`proceed`]; how an approved request
//! ends is [`completion`]'s business, so a new way in reuses sign-in and consent as they are.

pub mod completion;
pub mod consent;
pub mod requested;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use self::consent::{IDENTITY_SCOPES, consent_needed, first_party};
use super::browser::{CookieName, handle_digest, random_handle, read_cookie, same_secret, set_cookie};
use super::pages;
use super::state::ProviderState;
use crate::people::Standing;
use crate::registry::Snapshot;
use crate::store::{PendingRequest, Session, StoreError};

/// How long a person has to sign in and consent.
pub const PENDING_LIFETIME_SECS: i64 = 10 * 60;
/// How long a sign-in lasts without another.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 3600;

/// A checked authorization request, kept while the person signs in and consents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthRequest {
    pub client_id: String,
    /// The OAuthClient object the request was made for: the code, refresh family and consent
    /// belong to it.
    #[serde(default)]
    pub client_uid: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    /// `prompt=login`: sign in again whatever the session.
    pub force_login: bool,
    /// `prompt=consent`: ask again whatever was remembered.
    pub force_consent: bool,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// When the request arrived: with `prompt=login` the sign-in must be newer.
    pub started_at: i64,
    /// The device authorization request (its id) this sign-in answers, when it came from the
    /// device verification page rather than /authorize: it completes there, not by redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The DPoP key (RFC 7638 thumbprint) the code is bound to (`dpop_jkt`, RFC 9449 §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// The authentication context the sign-in must reach: the strongest of the client's
    /// `spec.requiredAcr` and the request's `acr_values` that kauth knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The person who passed the first factor (their password) or whose session must step up,
    /// while the second-factor page asks for a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_factor: Option<FirstFactor>,
    /// A sign-in to the person's own account page: no client, no consent; it completes there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub account: bool,
}

/// Who passed the first factor of a sign-in that needs a second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstFactor {
    pub subject: String,
    /// Which password ([`crate::people::LocalUser::credential`]).
    pub credential: String,
}

/// A 303 to `location`: after a POST the browser follows with GET.
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    super::browser::page_headers(&mut r);
    r
}

/// The live session of this browser: its stored id (the cookie's digest) and contents.
pub async fn current_session(
    state: &ProviderState,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<(String, Session)>, StoreError> {
    let Some(cookie) = read_cookie(headers, &state.issuer, CookieName::Session) else {
        return Ok(None);
    };
    let id = handle_digest(&cookie);
    let Some(session) = state.store.session(&id, now).await? else {
        return Ok(None);
    };
    // Someone who left (or changed their password) is not signed in any more.
    if state.standing(&session.subject, Some(&session.credential)) != Standing::Stays {
        state.store.end_session(&id).await?;
        // The session ended: its clients are told (back-channel logout).
        super::backchannel::session_ended(state, session_sid(&id));
        return Ok(None);
    }
    Ok(Some((id, session)))
}

/// The `sid` of the session `id` (its cookie's digest): what relying parties see of it, in ID
/// and logout tokens; derived, so neither the cookie nor the store's key leaves kauth.
pub fn session_sid(id: &str) -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("sid\n{id}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18])
}

/// The page shown when the grant store does not answer during a sign-in.
pub fn unavailable(e: StoreError) -> Response {
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

/// What a checked request needs next.
enum Step {
    /// The person signs in (again).
    SignIn,
    /// The person agrees to scopes not allowed before.
    Consent,
    /// The person of this session proves a second factor (step-up).
    SecondFactor(Session),
    /// The request wants more than kauth can vouch for this person (an upstream provider's
    /// person asked for a second factor).
    Unmet,
    /// Nothing more: the request is approved for the person of this session (and its id).
    Approved(String, Session),
}

/// Decides the next step for `req`, given the session of this browser (if any).
async fn next_step(
    state: &ProviderState,
    snapshot: &Snapshot,
    session: Option<(String, Session)>,
    req: &AuthRequest,
) -> Result<Step, StoreError> {
    let now = Timestamp::now().as_second();
    // max_age bounds the sign-in's age; prompt=login wants one made for this request (the
    // consent page of a pending request cannot stand in for the password).
    let fresh_enough = |s: &Session| {
        req.max_age.is_none_or(|m| now - s.auth_time <= m) && (!req.force_login || s.auth_time >= req.started_at)
    };
    let Some((session_id, session)) = session.filter(|(_, s)| fresh_enough(s)) else {
        return Ok(Step::SignIn);
    };
    if session.subject.contains(':')
        && req.acr.as_deref().is_some_and(|wanted| {
            !crate::second_factors::satisfies(crate::second_factors::acr_of(&session.amr), wanted)
        })
    {
        return Ok(Step::Unmet);
    }
    if wants_second_factor(state, req, &session).await? {
        return Ok(Step::SecondFactor(session));
    }
    // The person's own account page: nothing to consent to.
    if req.account {
        return Ok(Step::Approved(session_id, session));
    }
    // A device is always confirmed on the consent page (RFC 8628 §5.4): a code typed on
    // someone's word must not sign a device in unseen, remembered consent or not.
    if req.device.is_some() && req.force_consent {
        return Ok(Step::Consent);
    }
    let remembered = state.store.consent(&session.subject, &req.client_uid).await?;
    if !consent_needed(snapshot, req, remembered.as_deref(), first_party(state, snapshot, req)).is_empty() {
        return Ok(Step::Consent);
    }
    Ok(Step::Approved(session_id, session))
}

/// Whether `session` is too weak for `req`: the request (or its client) wants more than the
/// session reached, or the person enrolled a second factor the session did not use, or the
/// platform requires one for everyone. People of upstream providers are never asked.
pub async fn wants_second_factor(
    state: &ProviderState,
    req: &AuthRequest,
    session: &Session,
) -> Result<bool, StoreError> {
    let reached = crate::second_factors::acr_of(&session.amr);
    if crate::second_factors::satisfies(reached, crate::second_factors::ACR_MFA) || session.subject.contains(':') {
        return Ok(false);
    }
    if state.second_factor_required(&session.subject)
        || req
            .acr
            .as_deref()
            .is_some_and(|wanted| !crate::second_factors::satisfies(reached, wanted))
    {
        return Ok(true);
    }
    Ok(live_factors(state, &session.subject).await?.any())
}

/// Where a request stands: new, from a caller at this address (storing it counts against the
/// address, T12), or stored under an id.
#[derive(Clone, Copy, Debug)]
pub enum Stage<'a> {
    /// Not stored yet.
    New {
        /// The caller's address, as the server resolved it.
        from: Option<std::net::IpAddr>,
    },
    /// Stored under this id.
    Stored(&'a str),
}

/// Takes a checked request one step on: to the sign-in page, to the consent page, or (once
/// approved) to its completion. `session` is the person signed in on this browser (if any).
/// With `prompt_none` a page is an error sent back instead.
pub async fn proceed(
    state: &ProviderState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    session: Option<(String, Session)>,
    req: &AuthRequest,
    stage: Stage<'_>,
    prompt_none: bool,
) -> Result<Response, StoreError> {
    match next_step(state, snapshot, session, req).await? {
        Step::SignIn if prompt_none => {
            completion::refused(state, req, "login_required", "the person is not signed in").await
        }
        Step::Consent if prompt_none => {
            completion::refused(
                state,
                req,
                "consent_required",
                "the person has not allowed this client these scopes",
            )
            .await
        }
        Step::SecondFactor(_) if prompt_none => {
            completion::refused(
                state,
                req,
                "interaction_required",
                "the person must prove a second factor",
            )
            .await
        }
        Step::Unmet => {
            completion::refused(
                state,
                req,
                "unmet_authentication_requirements",
                "kauth cannot vouch for a second factor of a person of an upstream provider",
            )
            .await
        }
        Step::SignIn => park(state, headers, req, stage, "/login").await,
        Step::Consent => park(state, headers, req, stage, "/consent").await,
        Step::SecondFactor(session) => {
            let mut stepping_up = req.clone();
            stepping_up.first_factor = Some(FirstFactor {
                subject: session.subject,
                credential: session.credential,
            });
            match stage {
                Stage::New { .. } => park(state, headers, &stepping_up, stage, SECOND_FACTOR_PAGE).await,
                Stage::Stored(id) => park_again(state, id, &stepping_up, SECOND_FACTOR_PAGE).await,
            }
        }
        Step::Approved(session_id, session) => {
            if let Stage::Stored(id) = stage
                && !state.store.finish_auth_request(id).await?
            {
                // Finished by a parallel submission: that one completed it.
                return Ok(pages::error(
                    StatusCode::BAD_REQUEST,
                    "This sign-in was already completed.",
                ));
            }
            completion::approved(state, req, &session_id, &session).await
        }
    }
}

/// Stores the request (bound to this browser) and sends the browser to `page`. A new request
/// is stored only within its caller's share of parked requests (T12).
async fn park(
    state: &ProviderState,
    headers: &HeaderMap,
    req: &AuthRequest,
    stage: Stage<'_>,
    page: &str,
) -> Result<Response, StoreError> {
    let now = Timestamp::now().as_second();
    let (id, new_browser) = match stage {
        Stage::Stored(id) => (id.to_string(), None),
        Stage::New { from } => {
            let namespace = state
                .registry
                .load()
                .clients
                .get(&req.client_id)
                .map(|c| c.namespace.clone())
                .unwrap_or_default();
            if let Err(wait) = state
                .parked_requests
                .reserve(from, &namespace, std::time::Instant::now())
            {
                tracing::warn!(address = ?from, "too many sign-ins started from one address; refused");
                return Ok(pages::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Too many sign-ins were started from your network. Try again in {} minutes.",
                        wait.as_secs().div_ceil(60)
                    ),
                ));
            }
            let browser = read_cookie(headers, &state.issuer, CookieName::Browser);
            let (browser, new_browser) = match browser {
                Some(b) => (b, None),
                None => {
                    let b = random_handle();
                    (b.clone(), Some(b))
                }
            };
            let id = random_handle();
            let stored = PendingRequest {
                browser: handle_digest(&browser),
                csrf: random_handle(),
                request: serde_json::to_string(req).expect("a request serialises"),
            };
            state
                .store
                .put_auth_request(&id, &stored, now + PENDING_LIFETIME_SECS)
                .await?;
            (id, new_browser)
        }
    };
    let mut r = see_other(&format!("{}?request={id}", state.issuer.endpoint(page)));
    if let Some(b) = new_browser {
        set_cookie(&mut r, &state.issuer, CookieName::Browser, Some(&b), 400 * 24 * 3600);
    }
    Ok(r)
}

/// Where passkey sign-ins post.
pub const PASSKEY_SIGN_IN: &str = "/login/passkey";

/// The passkey form of the pending request `pending_id`: any passkey (passwordless), or one
/// of `person`'s. None when passkeys are off (or the person has none that opens).
pub fn passkey_form(
    state: &ProviderState,
    person: Option<(&str, &[crate::store::StoredPasskey])>,
    pending_id: &str,
) -> Option<super::pages::PasskeyForm> {
    let (passkeys, key) = (state.passkeys.as_ref()?, state.second_factor_key.as_ref()?);
    if person.is_some_and(|(_, stored)| stored.is_empty()) {
        return None;
    }
    let ceremony = passkeys.sign_in(key, person, pending_id, Timestamp::now().as_second())?;
    Some(super::pages::PasskeyForm {
        action: state.issuer.endpoint(PASSKEY_SIGN_IN),
        options: ceremony.options,
        sealed: ceremony.sealed,
    })
}

/// Where a person proves a second factor.
pub const SECOND_FACTOR_PAGE: &str = "/login/second-factor";

/// Replaces the stored request `id` with `req` under a new id (for the same browser), and
/// sends the browser to `page` with it: the old id is spent, so a form of the earlier page
/// cannot continue.
pub async fn park_again(
    state: &ProviderState,
    id: &str,
    req: &AuthRequest,
    page: &str,
) -> Result<Response, StoreError> {
    let now = Timestamp::now().as_second();
    let Some(old) = state.store.auth_request(id, now).await? else {
        return Ok(pages::error(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired. Start again from the application.",
        ));
    };
    if !state.store.finish_auth_request(id).await? {
        return Ok(pages::error(
            StatusCode::BAD_REQUEST,
            "This sign-in was already completed.",
        ));
    }
    let new_id = random_handle();
    let stored = PendingRequest {
        browser: old.browser,
        csrf: random_handle(),
        request: serde_json::to_string(req).expect("a request serialises"),
    };
    state
        .store
        .put_auth_request(&new_id, &stored, now + PENDING_LIFETIME_SECS)
        .await?;
    Ok(see_other(&format!("{}?request={new_id}", state.issuer.endpoint(page))))
}

/// A pending request this browser started, with its checked contents.
pub struct Pending {
    pub id: String,
    pub stored: PendingRequest,
    pub request: AuthRequest,
}

/// The pending request `id`, if it is live and this browser started it.
pub async fn load_pending(
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

/// A person who just proved who they are.
pub struct Person<'a> {
    /// Their subject (a username, or `<connector>:<sub>`).
    pub subject: &'a str,
    /// Their claims, as kauth will release them.
    pub claims: &'a serde_json::Value,
    /// Which password they used ([`crate::people::LocalUser::credential`]); empty upstream.
    pub credential: &'a str,
    /// How they proved it (RFC 8176 `amr`).
    pub amr: Vec<String>,
}

/// Records the person's claims, starts a fresh session for them, and continues the pending
/// request with it (consent or a code). Every sign-in gets a new session id, so a cookie
/// planted before it never becomes a session.
pub async fn start_session(
    state: &ProviderState,
    headers: &HeaderMap,
    pending: &Pending,
    person: Person<'_>,
) -> Result<Response, StoreError> {
    let (cookie, session_id, session) = open_session(state, person).await?;
    continue_in_session(state, headers, pending, session_id, session, Some(&cookie)).await
}

/// Records the person's claims and starts a fresh session for them: its cookie, stored id and
/// contents.
pub async fn open_session(state: &ProviderState, person: Person<'_>) -> Result<(String, String, Session), StoreError> {
    let now = Timestamp::now().as_second();
    let session = Session {
        subject: person.subject.to_string(),
        auth_time: now,
        credential: person.credential.to_string(),
        amr: person.amr,
    };
    let cookie = random_handle();
    let session_id = handle_digest(&cookie);
    state.store.save_subject(person.subject, person.claims, now).await?;
    state
        .store
        .create_session(&session_id, &session, now + SESSION_LIFETIME_SECS)
        .await?;
    Ok((cookie, session_id, session))
}

/// Continues the pending request in the session `session_id` (consent or a code), setting its
/// `cookie` when the session is new.
pub async fn continue_in_session(
    state: &ProviderState,
    headers: &HeaderMap,
    pending: &Pending,
    session_id: String,
    session: Session,
    cookie: Option<&str>,
) -> Result<Response, StoreError> {
    let snapshot = state.registry.load();
    let mut response = proceed(
        state,
        &snapshot,
        headers,
        Some((session_id, session)),
        &pending.request,
        Stage::Stored(&pending.id),
        false,
    )
    .await?;
    if let Some(cookie) = cookie {
        set_cookie(
            &mut response,
            &state.issuer,
            CookieName::Session,
            Some(cookie),
            SESSION_LIFETIME_SECS,
        );
    }
    Ok(response)
}

/// The second factors of a person that still count: their authenticator app, and their
/// passkeys (when passkeys are on).
pub struct LiveFactors {
    pub totp: Option<crate::store::StoredTotp>,
    pub passkeys: Vec<crate::store::StoredPasskey>,
}

impl LiveFactors {
    pub fn any(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }
}

/// The person's second factors that still count (see [`live_second_factor`]; a passkey, like
/// the app, counts only under the password it was added with).
pub async fn live_factors(state: &ProviderState, subject: &str) -> Result<LiveFactors, StoreError> {
    let totp = live_second_factor(state, subject).await?;
    let passkeys = match &state.passkeys {
        Some(_) => {
            let current = state.people.load().user(subject).map(|u| u.credential());
            let mut passkeys = state.store.passkeys_of(subject).await?;
            passkeys.retain(|p| current.as_ref() == Some(&p.credential));
            passkeys
        }
        None => Vec::new(),
    };
    Ok(LiveFactors { totp, passkeys })
}

/// The person's authenticator app, if they have one that still counts: one enrolled with the
/// password the directory holds for them now. A new password (the platform's reset, or a
/// re-created person) voids an older factor, and the person enrolls afresh (the enrollment
/// replaces the void one). Only reads: a sign-in begun with an old password, or a replica that
/// has not read the new password yet, can void nothing and delete nothing.
pub async fn live_second_factor(
    state: &ProviderState,
    subject: &str,
) -> Result<Option<crate::store::StoredTotp>, StoreError> {
    let Some(factor) = state.store.totp_of(subject).await? else {
        return Ok(None);
    };
    let current = state.people.load().user(subject).map(|u| u.credential());
    Ok(current.is_some_and(|c| c == factor.credential).then_some(factor))
}
