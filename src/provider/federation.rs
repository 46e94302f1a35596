//! Sign-in through an upstream OpenID Connect provider: kauth is the relying party upstream
//! (authorization code with PKCE, state bound to the browser, nonce, RFC 9207 `iss` check)
//! and continues the pending downstream request with a session for the mapped person.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::browser::{CookieName, handle_digest, random_handle, read_cookie, same_secret};
use super::browser_flow::{PENDING_LIFETIME_SECS, Person, load_pending, see_other, start_session};
use super::pages;
use super::state::ProviderState;
use crate::connectors::Connector;
use crate::outbound::Discovered;
use crate::store::PendingRequest;

/// What kauth remembers between sending the browser upstream and its return.
#[derive(Serialize, Deserialize)]
struct Upstream {
    /// The downstream pending request this sign-in continues.
    pending: String,
    connector: String,
    nonce: String,
    verifier: String,
}

#[derive(Deserialize)]
pub struct StartQuery {
    request: Option<String>,
}

fn callback_url(state: &ProviderState, id: &str) -> String {
    state.issuer.endpoint(&format!("/connector/{id}/callback"))
}

async fn client_for(state: &ProviderState, c: &Connector) -> Result<Discovered, String> {
    let metadata = state.upstream.get(&c.issuer).await?;
    let redirect = RedirectUrl::new(callback_url(state, &c.id)).map_err(|e| e.to_string())?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(c.client_id.clone()),
        Some(ClientSecret::new(c.client_secret.clone())),
    )
    .set_redirect_uri(redirect))
}

fn upstream_failed(connector: &Connector, e: impl std::fmt::Display) -> Response {
    tracing::warn!(connector = %connector.id, error = %e, "upstream sign-in failed");
    pages::error(
        StatusCode::BAD_GATEWAY,
        &format!(
            "Signing in with {} did not work. Try again, or ask your administrator.",
            connector.name
        ),
    )
}

const EXPIRED: &str = "This sign-in has expired or was already used. Go back to the application and start again.";

/// GET /connector/{id}/start?request=ID: off to the upstream provider.
pub async fn start(
    State(state): State<ProviderState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
    from: Option<axum::Extension<super::serve::ClientAddress>>,
) -> Response {
    let Some(connector) = state.connectors.load().get(&id).cloned() else {
        return pages::error(StatusCode::NOT_FOUND, "There is no such sign-in option.");
    };
    let pending = match load_pending(&state, &headers, q.request.as_deref()).await {
        Ok(Some(p)) => p,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return upstream_failed(&connector, e),
    };
    // Each start stores a row of its own: counted like a parked sign-in, before it is written
    // (T12), or one parked request could store rows without end.
    let namespace = state
        .registry
        .load()
        .clients
        .get(&pending.request.client_id)
        .map(|c| c.namespace.clone())
        .unwrap_or_default();
    let address = from.map(|axum::Extension(a)| a.0);
    if let Err(wait) = state
        .parked_requests
        .reserve(address, &namespace, std::time::Instant::now())
    {
        return pages::error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many sign-ins were started from your network. Try again in {} minutes.",
                wait.as_secs().div_ceil(60)
            ),
        );
    }
    let client = match client_for(&state, &connector).await {
        Ok(c) => c,
        Err(e) => return upstream_failed(&connector, e),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let upstream_state = random_handle();
    let nonce = random_handle();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            {
                let s = upstream_state.clone();
                move || CsrfToken::new(s)
            },
            {
                let n = nonce.clone();
                move || Nonce::new(n)
            },
        )
        .set_pkce_challenge(challenge);
    for s in connector.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, _, _) = request.url();
    let remembered = Upstream {
        pending: pending.id.clone(),
        connector: connector.id.clone(),
        nonce,
        verifier: verifier.secret().clone(),
    };
    let stored = PendingRequest {
        browser: pending.stored.browser.clone(),
        csrf: String::new(),
        request: serde_json::to_string(&remembered).expect("serialises"),
    };
    let now = Timestamp::now().as_second();
    if let Err(e) = state
        .store
        .put_auth_request(&handle_digest(&upstream_state), &stored, now + PENDING_LIFETIME_SECS)
        .await
    {
        return upstream_failed(&connector, e);
    }
    see_other(url.as_str())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// GET /connector/{id}/callback: back from upstream; sign the person in and continue.
pub async fn callback(
    State(state): State<ProviderState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(connector) = state.connectors.load().get(&id).cloned() else {
        return pages::error(StatusCode::NOT_FOUND, "There is no such sign-in option.");
    };
    let now = Timestamp::now().as_second();
    // The state is single-use and bound to the browser that left.
    let Some(upstream_state) = q.state.as_deref() else {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    };
    let key = handle_digest(upstream_state);
    let stored = match state.store.auth_request(&key, now).await {
        Ok(Some(s)) => s,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return upstream_failed(&connector, e),
    };
    let browser = read_cookie(&headers, &state.issuer, CookieName::Browser).map(|b| handle_digest(&b));
    if !browser.is_some_and(|b| same_secret(&b, &stored.browser)) {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    }
    match state.store.finish_auth_request(&key).await {
        Ok(true) => {}
        Ok(false) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return upstream_failed(&connector, e),
    }
    let Ok(remembered) = serde_json::from_str::<Upstream>(&stored.request) else {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    };
    if remembered.connector != connector.id {
        return pages::error(StatusCode::BAD_REQUEST, EXPIRED);
    }
    // RFC 9207: a response that names another issuer is a mix-up attack.
    if q.iss.as_deref().is_some_and(|iss| iss != connector.issuer) {
        return upstream_failed(&connector, "the response names another issuer");
    }
    if let Some(error) = &q.error {
        // The upstream's word, as the caller sent it: quoted and escaped, never a line of its own.
        tracing::info!(connector = %connector.id, error = ?error.chars().take(64).collect::<String>(), "upstream refused the sign-in");
        return pages::error(
            StatusCode::FORBIDDEN,
            &format!("{} did not sign you in ({error}).", connector.name),
        );
    }
    let Some(code) = q.code.clone() else {
        return upstream_failed(&connector, "no code in the response");
    };
    let client = match client_for(&state, &connector).await {
        Ok(c) => c,
        Err(e) => return upstream_failed(&connector, e),
    };
    let exchange = match client.exchange_code(AuthorizationCode::new(code)) {
        Ok(x) => x,
        Err(e) => return upstream_failed(&connector, e),
    };
    let tokens = match exchange
        .set_pkce_verifier(PkceCodeVerifier::new(remembered.verifier.clone()))
        .request_async(&state.upstream.http)
        .await
    {
        Ok(t) => t,
        Err(e) => return upstream_failed(&connector, format!("token exchange: {e:?}")),
    };
    let Some(id_token) = tokens.id_token() else {
        return upstream_failed(&connector, "no ID token in the token response");
    };
    let verifier = client.id_token_verifier().set_allowed_algs(vec![
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::EdDsa,
    ]);
    let verified = match id_token.claims(&verifier, &Nonce::new(remembered.nonce.clone())) {
        Ok(c) => c,
        Err(e) => return upstream_failed(&connector, format!("ID token refused: {e}")),
    };
    let Some(upstream_claims) = crate::tokens::unverified_claims(&id_token.to_string()) else {
        return upstream_failed(&connector, "unreadable ID token");
    };
    let subject = connector.subject(verified.subject().as_str());
    let pending = match load_pending(&state, &headers, Some(&remembered.pending)).await {
        Ok(Some(p)) => p,
        Ok(None) => return pages::error(StatusCode::BAD_REQUEST, EXPIRED),
        Err(e) => return upstream_failed(&connector, e),
    };
    tracing::info!(subject = %subject, connector = %connector.id, "signed in upstream");
    let how = format!("upstream {}", connector.id);
    let record = crate::audit::Record {
        client_id: Some(&pending.request.client_id),
        subject: Some(&subject),
        reason: Some(&how),
        ..Default::default()
    };
    state.audit_event(crate::audit::Event::SignIn, &record);
    let person = Person {
        subject: &subject,
        claims: &connector.map_claims(&upstream_claims),
        credential: "",
        // The upstream knows how the person signed in; kauth passes it on only from an
        // upstream the platform trusts for it (`authContext.trust`).
        amr: connector.auth_methods(&upstream_claims),
    };
    match start_session(&state, &headers, &pending, person).await {
        Ok(r) => r,
        Err(e) => upstream_failed(&connector, e),
    }
}

/// Sign-in buttons for the login page: (name, start URL).
pub fn options(state: &ProviderState, request: &str) -> Vec<(String, String)> {
    state
        .connectors
        .load()
        .list
        .iter()
        .map(|c| {
            let url = format!(
                "{}?request={request}",
                state.issuer.endpoint(&format!("/connector/{}/start", c.id))
            );
            (c.name.clone(), url)
        })
        .collect()
}
