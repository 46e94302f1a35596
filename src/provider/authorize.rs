//! The authorization endpoint (RFC 6749 §4.1, OpenID Connect Core §3.1.2): checks a request,
//! then sends the browser to sign in, to consent, or straight back with a code.
//!
//! Until the client and its redirect URI are known to be genuine, errors are shown on a page
//! and never redirected. After that they go back to the client with `state` and RFC 9207's
//! `iss`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ProviderState;
use super::browser::{CookieName, handle_digest, random_handle, read_cookie, set_cookie};
use super::error::OAuthError;
use super::form::Form;
use super::pages;
use crate::crd::GrantType;
use crate::people::Standing;
use crate::registry::{RegisteredClient, Snapshot};
use crate::store::{Grant, PendingRequest, Session};
use crate::validation::{RESERVED_SCOPES, is_resource_uri, is_scope_token};

/// How long a person has to sign in and consent.
pub const PENDING_LIFETIME_SECS: i64 = 10 * 60;
/// How long a code may wait for redemption (RFC 6749 §4.1.2: short).
pub const CODE_LIFETIME_SECS: i64 = 60;
/// How long a sign-in lasts without another.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 3600;
/// Longest `state` and `nonce` kept.
const MAX_OPAQUE_LEN: usize = 1024;

/// The identity scopes kauth implements, with what the consent page says of them.
/// `openid` itself asks for nothing beyond signing in.
pub const IDENTITY_SCOPES: &[(&str, &str)] = &[
    ("openid", "Know who you are (your account id)"),
    ("profile", "See your name and username"),
    ("email", "See your email address"),
    ("groups", "See which groups you belong to"),
    ("offline_access", "Keep access while you are away"),
];

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
}

/// Where an authorization response goes: the client's exact redirect URI.
pub struct ClientRedirect<'a> {
    pub redirect_uri: &'a str,
    pub state: Option<&'a str>,
    pub issuer: &'a str,
}

impl ClientRedirect<'_> {
    fn with(&self, params: &[(&str, &str)]) -> Response {
        let Ok(mut url) = url::Url::parse(self.redirect_uri) else {
            // Registered URIs are validated; this cannot happen for a served client.
            return pages::error(StatusCode::BAD_REQUEST, "the redirect URI cannot be used");
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = self.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", self.issuer);
        }
        see_other(url.as_str())
    }

    /// Sends the browser back with an error (RFC 6749 §4.1.2.1).
    pub fn error(&self, code: &str, description: &str) -> Response {
        self.with(&[("error", code), ("error_description", description)])
    }

    /// Sends the browser back with a code.
    pub fn code(&self, code: &str) -> Response {
        self.with(&[("code", code)])
    }
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

/// An error on the way to the client, before or after the redirect URI is trusted.
enum Refusal {
    /// Shown on a page: the client or its redirect URI are not established.
    Page(String),
    /// Sent back to the client.
    Client(&'static str, String),
}

fn client_error(code: &'static str, d: impl Into<String>) -> Refusal {
    Refusal::Client(code, d.into())
}

/// GET or POST /authorize
pub async fn authorize(State(state): State<ProviderState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let form = match read_params(&parts.method, &parts.headers, parts.uri.query(), body).await {
        Ok(f) => f,
        Err(e) => return pages::error(StatusCode::BAD_REQUEST, &e.description),
    };
    let snapshot = state.registry.load();
    let Some(client) = form.get("client_id").and_then(|id| snapshot.clients.get(id)).cloned() else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The application that sent you here is not registered (unknown client_id).",
        );
    };
    // Exact string comparison, as registered: no normalising of case, slashes or ports.
    let Some(redirect_uri) = form
        .get("redirect_uri")
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
    else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The application sent you here with a redirect address it has not registered.",
        );
    };
    let back = ClientRedirect {
        redirect_uri,
        state: form.get("state").filter(|s| s.len() <= MAX_OPAQUE_LEN),
        issuer: &state.issuer.url,
    };
    let req = match check(&form, &client, redirect_uri) {
        Ok(req) => req,
        Err(Refusal::Page(text)) => return pages::error(StatusCode::BAD_REQUEST, &text),
        Err(Refusal::Client(code, d)) => return back.error(code, &d),
    };
    let prompt_none = form.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none"));
    let now = Timestamp::now().as_second();
    let step = async {
        // prompt=login ignores the session; the sign-in page makes a new one.
        let session = match current_session(&state, &parts.headers, now).await? {
            Some((_, s)) if !req.force_login => Some(s),
            _ => None,
        };
        proceed(&state, &snapshot, &parts.headers, session, &req, None, prompt_none).await
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

/// Checks everything but the client and redirect URI (already trusted).
fn check(form: &Form, client: &RegisteredClient, redirect_uri: &str) -> Result<AuthRequest, Refusal> {
    if form.get("request").is_some() {
        return Err(client_error(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if form.get("request_uri").is_some() {
        return Err(client_error(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    match form.get("response_type") {
        Some("code") => {}
        None => return Err(client_error("invalid_request", "response_type is required")),
        Some(other) => {
            return Err(client_error(
                "unsupported_response_type",
                format!(
                    "response_type '{other}' is not supported: only code (the implicit and hybrid flows are refused)"
                ),
            ));
        }
    }
    if form.get("response_mode").is_some_and(|m| m != "query") {
        return Err(client_error("invalid_request", "only response_mode=query is supported"));
    }
    if !client.allows(GrantType::AuthorizationCode) {
        return Err(client_error(
            "unauthorized_client",
            "this client may not use the authorization code flow",
        ));
    }
    if form.get("state").is_some_and(|s| s.len() > MAX_OPAQUE_LEN) {
        return Err(Refusal::Page(format!(
            "state is longer than {MAX_OPAQUE_LEN} characters"
        )));
    }
    let nonce = form.get("nonce").map(str::to_string);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_OPAQUE_LEN) {
        return Err(client_error(
            "invalid_request",
            format!("nonce is longer than {MAX_OPAQUE_LEN} characters"),
        ));
    }
    let code_challenge = match (form.get("code_challenge"), form.get("code_challenge_method")) {
        (None, Some(_)) => {
            return Err(client_error(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ));
        }
        (None, None) if client.is_public() => {
            return Err(client_error(
                "invalid_request",
                "PKCE is required for public clients: send code_challenge with code_challenge_method=S256",
            ));
        }
        (None, None) => None,
        (Some(_), None | Some("plain")) => {
            return Err(client_error(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not allowed)",
            ));
        }
        (Some(_), Some(m)) if m != "S256" => {
            return Err(client_error(
                "invalid_request",
                format!("code_challenge_method '{m}' is not supported: use S256"),
            ));
        }
        (Some(c), Some(_)) => {
            // BASE64URL(SHA-256(verifier)) without padding is always 43 characters.
            if c.len() != 43 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(client_error(
                    "invalid_request",
                    "code_challenge is not a base64url SHA-256 digest",
                ));
            }
            Some(c.to_string())
        }
    };
    let mut force_login = false;
    let mut force_consent = false;
    if let Some(prompt) = form.get("prompt") {
        let values: Vec<&str> = prompt.split(' ').collect();
        for v in &values {
            match *v {
                "none" if values.len() > 1 => {
                    return Err(client_error(
                        "invalid_request",
                        "prompt=none cannot be combined with other values",
                    ));
                }
                "none" | "select_account" => {}
                "login" => force_login = true,
                "consent" => force_consent = true,
                other => {
                    return Err(client_error(
                        "invalid_request",
                        format!("prompt value '{other}' is not supported"),
                    ));
                }
            }
        }
    }
    let max_age = match form.get("max_age") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(client_error(
                    "invalid_request",
                    "max_age must be a non-negative integer",
                ));
            }
        },
    };
    let resources = form.all("resource");
    for r in &resources {
        if !is_resource_uri(r) || !client.may_target(r) {
            return Err(client_error(
                "invalid_target",
                format!("resource '{r}' is not allowed for this client"),
            ));
        }
    }
    let scopes = requested_scopes(form.get("scope"), client)?;
    let mut audiences: Vec<String> = if resources.is_empty() {
        scopes
            .iter()
            .filter_map(|s| client.scopes.get(s).cloned().flatten())
            .collect()
    } else {
        resources.iter().map(|r| r.to_string()).collect()
    };
    audiences.sort();
    audiences.dedup();
    Ok(AuthRequest {
        client_id: client.client_id.clone(),
        client_uid: client.uid.clone(),
        redirect_uri: redirect_uri.to_string(),
        scopes,
        audiences,
        state: form.get("state").map(str::to_string),
        nonce,
        code_challenge,
        force_login,
        force_consent,
        max_age,
        login_hint: form.get("login_hint").map(|h| h.chars().take(128).collect()),
        started_at: Timestamp::now().as_second(),
    })
}

/// The requested scopes: identity scopes kauth implements, and API scopes granted to the
/// client. `offline_access` needs the refresh_token grant.
fn requested_scopes(scope: Option<&str>, client: &RegisteredClient) -> Result<Vec<String>, Refusal> {
    let mut out: Vec<String> = Vec::new();
    for value in scope.unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
        if !is_scope_token(value) {
            return Err(client_error(
                "invalid_scope",
                "scope must be scope-tokens separated by spaces",
            ));
        }
        let identity = IDENTITY_SCOPES.iter().any(|(s, _)| *s == value);
        if identity {
            if value == "offline_access" && !client.allows(GrantType::RefreshToken) {
                return Err(client_error(
                    "invalid_scope",
                    "offline_access needs the refresh_token grant",
                ));
            }
        } else if RESERVED_SCOPES.contains(&value) {
            return Err(client_error(
                "invalid_scope",
                format!("scope '{value}' is not supported"),
            ));
        } else if !client.scopes.contains_key(value) {
            return Err(client_error(
                "invalid_scope",
                format!("scope '{value}' is not granted to this client"),
            ));
        }
        if !out.iter().any(|s| s == value) {
            out.push(value.to_string());
        }
    }
    Ok(out)
}

/// The live session of this browser: its stored id (the cookie's digest) and contents.
pub async fn current_session(
    state: &ProviderState,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<(String, Session)>, crate::store::StoreError> {
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
        return Ok(None);
    }
    Ok(Some((id, session)))
}

/// True when the platform declared the request's client first-party (its namespace is in
/// kauth's own configuration, which app teams cannot change).
pub fn first_party(state: &ProviderState, snapshot: &Snapshot, req: &AuthRequest) -> bool {
    snapshot
        .clients
        .get(&req.client_id)
        .filter(|c| c.uid == req.client_uid)
        .is_some_and(|c| state.first_party_namespaces.contains(&c.namespace))
}

/// What the person has to agree to, less what they allowed this client object before
/// (`remembered`, None when they never approved it):
/// - being identified at all (`openid`), the first time, so no client learns who is signed in
///   without the person's say;
/// - identity scopes;
/// - API scopes whose Scope requires consent.
///
/// A first-party client asks for none of the identity ones; API scopes are their API team's
/// call either way.
pub fn consent_needed(
    snapshot: &Snapshot,
    req: &AuthRequest,
    remembered: Option<&[String]>,
    first_party: bool,
) -> Vec<String> {
    let mut needed: Vec<String> = req
        .scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .filter(|s| {
            let identity = IDENTITY_SCOPES.iter().any(|(v, _)| v == s);
            if identity {
                !first_party
            } else {
                snapshot.scopes.get(s.as_str()).is_none_or(|i| i.consent_required)
            }
        })
        .filter(|s| req.force_consent || !remembered.unwrap_or_default().contains(s))
        .cloned()
        .collect();
    if !first_party && (remembered.is_none() || req.force_consent) {
        needed.insert(0, "openid".to_string());
    }
    needed
}

/// Decides the next step for a checked request: sign in, consent, or a code. `session` is
/// the person signed in on this browser (if any); `pending` is the stored request id once
/// there is one.
pub async fn proceed(
    state: &ProviderState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    session: Option<Session>,
    req: &AuthRequest,
    pending: Option<&str>,
    prompt_none: bool,
) -> Result<Response, crate::store::StoreError> {
    let now = Timestamp::now().as_second();
    let back = ClientRedirect {
        redirect_uri: &req.redirect_uri,
        state: req.state.as_deref(),
        issuer: &state.issuer.url,
    };
    // max_age bounds the sign-in's age; prompt=login wants one made for this request (the
    // consent page of a pending request cannot stand in for the password).
    let fresh_enough = |s: &Session| {
        req.max_age.is_none_or(|m| now - s.auth_time <= m) && (!req.force_login || s.auth_time >= req.started_at)
    };
    let Some(session) = session.filter(fresh_enough) else {
        if prompt_none {
            return Ok(back.error("login_required", "the person is not signed in"));
        }
        return to_page(state, headers, req, pending, "/login").await;
    };
    let remembered = state.store.consent(&session.subject, &req.client_uid).await?;
    if !consent_needed(snapshot, req, remembered.as_deref(), first_party(state, snapshot, req)).is_empty() {
        if prompt_none {
            return Ok(back.error(
                "consent_required",
                "the person has not allowed this client these scopes",
            ));
        }
        return to_page(state, headers, req, pending, "/consent").await;
    }
    if let Some(id) = pending
        && !state.store.finish_auth_request(id).await?
    {
        // Finished by a parallel submission: that one got the code.
        return Ok(pages::error(
            StatusCode::BAD_REQUEST,
            "This sign-in was already completed.",
        ));
    }
    issue_code(state, req, &session, &back).await
}

/// Stores a code for the signed-in person and sends it back.
pub async fn issue_code(
    state: &ProviderState,
    req: &AuthRequest,
    session: &Session,
    back: &ClientRedirect<'_>,
) -> Result<Response, crate::store::StoreError> {
    let now = Timestamp::now().as_second();
    let code = random_handle();
    let grant = Grant {
        client_id: req.client_id.clone(),
        client_uid: req.client_uid.clone(),
        subject: session.subject.clone(),
        scopes: req.scopes.clone(),
        audiences: req.audiences.clone(),
        redirect_uri: req.redirect_uri.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        auth_time: session.auth_time,
    };
    state
        .store
        .insert_code(&handle_digest(&code), &grant, now + CODE_LIFETIME_SECS)
        .await?;
    tracing::info!(client_id = %req.client_id, subject = %session.subject, "authorization code issued");
    Ok(back.code(&code))
}

/// Stores the request (bound to this browser) and sends the browser to `page`.
async fn to_page(
    state: &ProviderState,
    headers: &HeaderMap,
    req: &AuthRequest,
    pending: Option<&str>,
    page: &str,
) -> Result<Response, crate::store::StoreError> {
    let now = Timestamp::now().as_second();
    let (id, new_browser) = match pending {
        Some(id) => (id.to_string(), None),
        None => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ClientCredential;
    use std::time::Duration;

    fn client(public: bool) -> RegisteredClient {
        RegisteredClient {
            client_id: "shop.web".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "uid-web".into(),
            auth_method: Default::default(),
            credential: if public {
                ClientCredential::None
            } else {
                ClientCredential::ServiceAccount(crate::workload_identity::ServiceAccountRef {
                    namespace: "shop".into(),
                    name: "web".into(),
                })
            },
            grant_types: vec![GrantType::AuthorizationCode],
            scopes: [("orders.read".to_string(), Some("https://orders".to_string()))].into(),
            audiences: vec![],
            access_token_lifetime: Duration::from_secs(60),
            redirect_uris: vec!["https://app/cb".into()],
            post_logout_redirect_uris: vec![],
            id_token_alg: crate::crd::KeyAlgorithm::RS256,
            refresh_token_lifetime: Duration::from_secs(3600),
        }
    }

    fn refused(query: &str, public: bool) -> String {
        let form = Form::parse(query.as_bytes()).unwrap();
        match check(&form, &client(public), "https://app/cb") {
            Ok(_) => "ok".into(),
            Err(Refusal::Client(code, d)) => format!("{code}: {d}"),
            Err(Refusal::Page(d)) => format!("page: {d}"),
        }
    }

    #[test]
    fn checks_response_type_pkce_prompt_and_scopes() {
        let s256 = "code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
        assert_eq!(
            refused(&format!("response_type=code&scope=openid+orders.read&{s256}"), true),
            "ok"
        );
        assert!(refused("response_type=token", false).starts_with("unsupported_response_type"));
        assert!(refused("response_type=code+id_token", false).starts_with("unsupported_response_type"));
        assert!(refused("response_type=code", true).contains("PKCE is required"));
        assert_eq!(
            refused("response_type=code", false),
            "ok",
            "PKCE is optional for confidential clients"
        );
        assert!(refused("response_type=code&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=plain", false).contains("plain is not allowed"));
        assert!(
            refused(
                "response_type=code&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                false
            )
            .contains("S256")
        );
        assert!(
            refused(
                "response_type=code&code_challenge=short&code_challenge_method=S256",
                false
            )
            .contains("base64url")
        );
        assert!(refused("response_type=code&prompt=none+login", false).contains("prompt=none"));
        assert!(refused("response_type=code&max_age=-1", false).contains("max_age"));
        assert!(refused("response_type=code&scope=orders.write", false).starts_with("invalid_scope"));
        assert!(refused("response_type=code&scope=phone", false).starts_with("invalid_scope"));
        assert!(refused("response_type=code&scope=offline_access", false).contains("refresh_token grant"));
        assert!(refused("response_type=code&resource=https://elsewhere", false).starts_with("invalid_target"));
        assert!(refused("response_type=code&request=eyJ", false).starts_with("request_not_supported"));
        assert!(refused("response_type=code&response_mode=fragment", false).contains("response_mode"));
    }
}
