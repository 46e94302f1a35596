//! The authorization endpoint (RFC 6749 §4.1, OpenID Connect Core §3.1.2): checks a request,
//! then sends the browser to sign in, to consent, or straight back with a code.
//!
//! Until the client and its redirect URI are known to be genuine, errors are shown on a page
//! and never redirected. After that they go back to the client with `state` and RFC 9207's
//! `iss`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use jiff::Timestamp;

use super::browser_flow::completion::ClientRedirect;
use super::browser_flow::requested::{Refused, audiences, requested_scopes, resources};
use super::browser_flow::{AuthRequest, Stage, current_session, proceed};
use super::error::OAuthError;
use super::form::Form;
use super::pages;
use super::state::ProviderState;
use crate::crd::GrantType;
use crate::registry::RegisteredClient;

/// Longest `state` and `nonce` kept.
const MAX_OPAQUE_LEN: usize = 1024;

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

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        Refusal::Client(r.code, r.description)
    }
}

/// GET or POST /authorize
pub async fn authorize(State(state): State<ProviderState>, request: Request) -> Response {
    let from = super::browser::client_ip(&request);
    let (parts, body) = request.into_parts();
    let form = match read_params(&parts.method, &parts.headers, parts.uri.query(), body).await {
        Ok(f) => f,
        Err(e) => return pages::error(StatusCode::BAD_REQUEST, &e.description),
    };
    let snapshot = state.registry.load();
    // A refusal page names what it refuses (the page escapes it); the log names only a
    // registered client (a caller may type anything there, T12).
    let Some(client) = form.get("client_id").and_then(|id| snapshot.clients.get(id)).cloned() else {
        tracing::info!(
            client_id = "unknown",
            "authorization request refused: unknown client_id"
        );
        return pages::error(
            StatusCode::BAD_REQUEST,
            &match form.get("client_id") {
                Some(id) => format!("The application that sent you here is not registered: there is no client {id}."),
                None => "The application that sent you here did not say who it is (no client_id).".into(),
            },
        );
    };
    // Exact string comparison, as registered (no normalising of case or slashes); only a
    // native app's loopback URI may differ, in its port.
    let Some(redirect_uri) = form.get("redirect_uri").filter(|uri| client.accepts_redirect(uri)) else {
        tracing::info!(client_id = %client.client_id, "authorization request refused: redirect_uri not registered");
        return pages::error(
            StatusCode::BAD_REQUEST,
            &format!(
                "The application {} sent you here with the redirect address {}, which it has not registered (spec.redirectUris).",
                client.client_id,
                form.get("redirect_uri").unwrap_or("(none)")
            ),
        );
    };
    let back = ClientRedirect {
        redirect_uri,
        state: form.get("state").filter(|s| s.len() <= MAX_OPAQUE_LEN),
        issuer: &state.issuer.url,
    };
    let req = match check(&form, &client, redirect_uri) {
        Ok(req) => req,
        Err(Refusal::Page(text)) => {
            tracing::info!(client_id = %client.client_id, reason = %text, "authorization request refused");
            return pages::error(StatusCode::BAD_REQUEST, &text);
        }
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
        proceed(
            &state,
            &snapshot,
            &parts.headers,
            session,
            &req,
            Stage::New { from },
            prompt_none,
        )
        .await
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
    check_shape(form, client)?;
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
    let code_challenge = code_challenge(form, client)?;
    let (force_login, force_consent) = prompt(form)?;
    let max_age = max_age(form)?;
    let resources = resources(form, client)?;
    let scopes = requested_scopes(form.get("scope"), client)?;
    let audiences = audiences(&resources, client, &scopes);
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
        device: None,
    })
}

/// The shape of the request: a plain code request (no request objects, no implicit or hybrid
/// response, query responses) from a client allowed the code flow.
fn check_shape(form: &Form, client: &RegisteredClient) -> Result<(), Refusal> {
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
    Ok(())
}

/// The PKCE challenge (RFC 7636): S256 only, and required of public clients.
fn code_challenge(form: &Form, client: &RegisteredClient) -> Result<Option<String>, Refusal> {
    let challenge = match (form.get("code_challenge"), form.get("code_challenge_method")) {
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
    Ok(challenge)
}

/// `prompt`: (sign in again, ask consent again); `none` is handled by the caller.
fn prompt(form: &Form) -> Result<(bool, bool), Refusal> {
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
    Ok((force_login, force_consent))
}

/// `max_age`: the oldest sign-in (in seconds) the client accepts.
fn max_age(form: &Form) -> Result<Option<i64>, Refusal> {
    Ok(match form.get("max_age") {
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
    })
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
            built_from: None,
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
    fn only_a_public_clients_loopback_redirect_may_change_its_port() {
        let mut native = client(true);
        native.redirect_uris = vec!["http://127.0.0.1/callback".into()];
        assert!(native.accepts_redirect("http://127.0.0.1/callback"));
        assert!(native.accepts_redirect("http://127.0.0.1:49152/callback"));
        assert!(!native.accepts_redirect("http://127.0.0.1:49152/other"));
        let mut confidential = native.clone();
        confidential.credential = client(false).credential;
        assert!(!confidential.accepts_redirect("http://127.0.0.1:49152/callback"));
        assert!(
            !client(true).accepts_redirect("https://app:8443/cb"),
            "others stay exact"
        );
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
