//! OpenID Connect endpoints beside sign-in: `/userinfo` (Core §5.3) and RP-initiated logout
//! (`/end_session`, which only redirects to a post-logout URI the client registered).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::Value;

use super::browser::{CookieName, handle_digest, read_cookie, same_secret, set_cookie};
use super::browser_flow::{current_session, see_other};
use super::error::{OAuthError, no_store};
use super::form::Form;
use super::grants::released_claims;
use super::pages;
use super::sender;
use super::state::ProviderState;
use crate::tokens::read_id_token_hint;

/// GET or POST /userinfo with an access token that carries `openid`: Bearer, or DPoP with a
/// proof when the token is bound.
pub async fn userinfo(State(state): State<ProviderState>, method: Method, headers: HeaderMap) -> Response {
    let result = async {
        let presented = sender::presented(&headers)?;
        let token = presented.0;
        let snapshot = state.registry.load();
        let now = Timestamp::now();
        let claims = state
            .verified
            .verify(&snapshot.keys, &state.issuer.url, token, now)
            .filter(|c| !state.revocations.is_revoked(&c.jti) && snapshot.clients.contains_key(&c.client_id))
            .ok_or_else(|| OAuthError::invalid_token("the access token is invalid, expired or revoked"))?;
        let url = state.issuer.endpoint("/userinfo");
        sender::check_presented(&state, &headers, presented, &claims, &method, &url).await?;
        let scopes: Vec<String> = claims
            .scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .map(str::to_string)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            return Err(OAuthError::insufficient_scope(
                "the access token was not granted openid",
            ));
        }
        let person = state.store.subject(&claims.sub).await.map_err(|e| {
            tracing::error!(error = %e, "grant store unavailable at userinfo");
            OAuthError::unavailable("retry shortly")
        })?;
        let mut body = person.map(|p| released_claims(&p, &scopes)).unwrap_or_default();
        body.insert("sub".into(), Value::String(claims.sub.clone()));
        let mut response = Json(body).into_response();
        no_store(&mut response);
        Ok::<_, OAuthError>(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// GET or POST /end_session (OpenID Connect RP-Initiated Logout 1.0).
///
/// With a valid `id_token_hint` for the signed-in person the session ends at once; without
/// one, the person confirms on a page (so a third-party link cannot sign them out). A
/// `post_logout_redirect_uri` is followed only when the client registered it exactly.
pub async fn end_session(State(state): State<ProviderState>, request: Request) -> Response {
    let source = super::browser::client_ip(&request);
    let (parts, body) = request.into_parts();
    let form = match parts.method {
        Method::GET => Form::parse(parts.uri.query().unwrap_or("").as_bytes()),
        Method::POST => Form::read(&parts.headers, body).await,
        _ => Err(OAuthError::method_not_allowed()),
    };
    let form = match form {
        Ok(f) => f,
        Err(e) => return pages::logout_error(StatusCode::BAD_REQUEST, &e.description),
    };
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let hint = match form.get("id_token_hint") {
        Some(t) => match read_id_token_hint(&snapshot.keys, &state.issuer.url, t, now) {
            Some(c) => Some(c),
            None => {
                return pages::logout_error(
                    StatusCode::BAD_REQUEST,
                    "The logout request carried an ID token kauth did not issue.",
                );
            }
        },
        None => None,
    };
    let client_id = match (form.get("client_id"), &hint) {
        (Some(id), Some(h)) if id != h.aud => {
            return pages::logout_error(
                StatusCode::BAD_REQUEST,
                "client_id and id_token_hint name different clients.",
            );
        }
        (Some(id), _) => Some(id.to_string()),
        (None, Some(h)) => Some(h.aud.clone()),
        (None, None) => None,
    };
    let redirect = match form.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let registered = client_id
                .as_deref()
                .and_then(|id| snapshot.clients.get(id))
                .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                tracing::info!(
                    client_id = %client_id.as_deref().filter(|id| snapshot.clients.contains_key(*id)).unwrap_or("unknown"),
                    "sign-out refused: post_logout_redirect_uri not registered"
                );
                return pages::logout_error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "The application{} asked to be sent to {uri} after sign-out, an address it has not registered (spec.postLogoutRedirectUris).",
                        client_id.as_deref().map(|id| format!(" {id}")).unwrap_or_default()
                    ),
                );
            }
            let mut url = match url::Url::parse(uri) {
                Ok(u) => u,
                Err(_) => {
                    return pages::logout_error(StatusCode::BAD_REQUEST, "The post-logout address cannot be used.");
                }
            };
            if let Some(s) = form.get("state") {
                url.query_pairs_mut().append_pair("state", s);
            }
            Some(url.to_string())
        }
    };
    let session = match current_session(&state, &parts.headers, now.as_second()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "grant store unavailable at logout");
            return pages::logout_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing out is not possible right now. Try again shortly.",
            );
        }
    };
    // Confirmation: the CSRF token is the browser-binding cookie's digest, which a third
    // party can neither read nor set.
    let browser = read_cookie(&parts.headers, &state.issuer, CookieName::Browser).map(|b| handle_digest(&b));
    let confirmed = parts.method == Method::POST
        && form.get("confirm") == Some("yes")
        && matches!((form.get("csrf"), &browser), (Some(c), Some(b)) if same_secret(c, b));
    let proven = hint
        .as_ref()
        .zip(session.as_ref())
        .is_some_and(|(h, (_, s))| h.sub == s.subject);
    let carried: Vec<(&str, &str)> = ["post_logout_redirect_uri", "state", "client_id"]
        .into_iter()
        .filter_map(|k| Some((k, form.get(k)?)))
        .collect();
    let client_id_known = client_id.clone();
    let carried: Vec<(&str, &str)> = carried
        .into_iter()
        .filter(|(k, _)| *k != "client_id")
        .chain(client_id_known.as_deref().map(|c| ("client_id", c)))
        .collect();
    if let Some((id, s)) = &session {
        if !proven && !confirmed {
            let Some(csrf) = browser else {
                // No binding cookie yet: set one and ask.
                let fresh = super::browser::random_handle();
                let mut r =
                    pages::confirm_logout(&state.issuer.endpoint("/end_session"), &handle_digest(&fresh), &carried);
                set_cookie(
                    &mut r,
                    &state.issuer,
                    CookieName::Browser,
                    Some(&fresh),
                    400 * 24 * 3600,
                );
                return r;
            };
            return pages::confirm_logout(&state.issuer.endpoint("/end_session"), &csrf, &carried);
        }
        if let Err(e) = state.store.end_session(id).await {
            tracing::error!(error = %e, "cannot end a session");
            return pages::logout_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing out is not possible right now. Try again shortly.",
            );
        }
        // The clients this session signed in to are told (back-channel logout).
        super::backchannel::session_ended(&state, super::browser_flow::session_sid(id));
        tracing::info!(subject = %s.subject, "signed out");
        let record = crate::audit::Record {
            subject: Some(&s.subject),
            source,
            ..Default::default()
        };
        state.audit_event(crate::audit::Event::Logout, &record);
    }
    let mut response = match redirect {
        Some(to) => see_other(&to),
        None => pages::message("Signed out", "You are signed out of kauth on this browser."),
    };
    set_cookie(&mut response, &state.issuer, CookieName::Session, None, 0);
    response
}
