//! Client authentication at the token, introspection, revocation and /par endpoints:
//! `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1), a JWT assertion (signed
//! with the client's own keys, `private_key_jwt`, see `assertions.rs`; or a ServiceAccount
//! token), or, for public clients, `none` (just `client_id`): exactly one per request.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;

use super::error::OAuthError;
use super::form::Form;
use super::state::ProviderState;
use crate::crd::TokenEndpointAuthMethod;
use crate::credentials::{MatchedSecret, digest_secret, digests_match};
use crate::registry::{ClientCredential, RegisteredClient, Snapshot};
use crate::workload_identity::{AssertionError, JWT_BEARER_ASSERTION, ServiceAccountRef};

struct Presented {
    client_id: String,
    secret: String,
    method: TokenEndpointAuthMethod,
}

fn percent_decode(s: &str) -> Option<String> {
    // Basic credentials are form-urlencoded before base64 (RFC 6749 §2.3.1).
    let decoded: String = form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()?
        .1
        .into_owned();
    Some(decoded)
}

fn from_basic(headers: &HeaderMap) -> Result<Option<Presented>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed HTTP Basic credentials").with_basic_challenge();
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(
            OAuthError::invalid_client("only HTTP Basic client authentication is supported").with_basic_challenge(),
        );
    }
    let raw = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Some(Presented {
        client_id: percent_decode(id).ok_or_else(bad)?,
        secret: percent_decode(secret).ok_or_else(bad)?,
        method: TokenEndpointAuthMethod::ClientSecretBasic,
    }))
}

/// The client id of well-formed HTTP Basic credentials, unverified (for the audit trail of a
/// refused request).
pub fn basic_user(headers: &HeaderMap) -> Option<String> {
    from_basic(headers)
        .ok()
        .flatten()
        .map(|p| p.client_id.chars().take(128).collect())
}

/// True when the request carries any client credentials.
pub fn presents_credentials(headers: &HeaderMap, form: &Form) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || form.get("client_secret").is_some()
        || form.get("client_assertion").is_some()
}

/// The client bound to a ServiceAccount; `client_id`, when sent, must be one of them.
pub fn client_for_service_account(
    snapshot: &Snapshot,
    sa: &ServiceAccountRef,
    client_id: Option<&str>,
) -> Result<Arc<RegisteredClient>, OAuthError> {
    let ids = snapshot.by_service_account.get(sa).map(Vec::as_slice).unwrap_or(&[]);
    let id = match (client_id, ids) {
        (Some(id), _) if ids.iter().any(|i| i == id) => id,
        (Some(_), _) => {
            return Err(OAuthError::invalid_client(
                "this client is not bound to the token's ServiceAccount",
            ));
        }
        (None, [one]) => one.as_str(),
        (None, []) => {
            let msg = format!("no OAuthClient is bound to ServiceAccount {}/{}", sa.namespace, sa.name);
            return Err(OAuthError::invalid_client(msg));
        }
        (None, _) => {
            return Err(OAuthError::invalid_client(
                "several OAuthClients use this ServiceAccount: send client_id",
            ));
        }
    };
    snapshot
        .clients
        .get(id)
        .cloned()
        .ok_or_else(|| OAuthError::invalid_client("client authentication failed"))
}

/// Verifies a ServiceAccount token presented as a credential and returns its ServiceAccount.
pub async fn verify_service_account_token(state: &ProviderState, token: &str) -> Result<ServiceAccountRef, OAuthError> {
    let verifier = state
        .service_accounts
        .as_ref()
        .ok_or_else(|| OAuthError::invalid_client(AssertionError::Disabled.to_string()))?;
    let now = Timestamp::now().as_second().max(0) as u64;
    verifier
        .verify(token, now)
        .await
        .map_err(|e| OAuthError::invalid_client(format!("ServiceAccount token refused: {e}")))
}

/// Authenticates the calling client: a client secret (HTTP Basic or in the body) or a
/// ServiceAccount token as a JWT client assertion, exactly one. Every failure is
/// `invalid_client`, with no hint whether the id or the secret was wrong.
pub async fn authenticate(
    state: &ProviderState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    form: &Form,
    now: Timestamp,
) -> Result<Arc<RegisteredClient>, OAuthError> {
    if let Some(assertion) = form.get("client_assertion") {
        if headers.contains_key(header::AUTHORIZATION) || form.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not a secret and an assertion",
            ));
        }
        if form.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        // An assertion naming a private_key_jwt client (iss = sub = its id) is checked with
        // that client's keys; any other is a ServiceAccount token.
        if let Some(client) = super::assertions::claimed_client(snapshot, assertion) {
            if form.get("client_id").is_some_and(|id| id != client.client_id) {
                return Err(OAuthError::invalid_client("client_id differs from the assertion's iss"));
            }
            super::assertions::verify(state, &client, assertion).await?;
            return Ok(client);
        }
        let sa = verify_service_account_token(state, assertion).await?;
        return client_for_service_account(snapshot, &sa, form.get("client_id"));
    }
    let basic = from_basic(headers)?;
    let post_secret = form.get("client_secret");
    let presented = match (basic, post_secret) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not HTTP Basic and client_secret together",
            ));
        }
        (Some(basic), None) => {
            if form.get("client_id").is_some_and(|id| id != basic.client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the HTTP Basic user",
                ));
            }
            basic
        }
        (None, Some(secret)) => Presented {
            client_id: form
                .get("client_id")
                .ok_or_else(|| OAuthError::invalid_request("client_secret given without client_id"))?
                .to_string(),
            secret: secret.to_string(),
            method: TokenEndpointAuthMethod::ClientSecretPost,
        },
        (None, None) => {
            // A public client names itself and proves nothing here (PKCE binds its code).
            if let Some(client) = form.get("client_id").and_then(|id| snapshot.clients.get(id))
                && client.is_public()
            {
                return Ok(client.clone());
            }
            return Err(OAuthError::invalid_client("client authentication is required").with_basic_challenge());
        }
    };
    let challenge = |e: OAuthError| {
        if presented.method == TokenEndpointAuthMethod::ClientSecretBasic {
            e.with_basic_challenge()
        } else {
            e
        }
    };
    let client = snapshot.clients.get(&presented.client_id);
    // Unknown ids, public clients and ServiceAccount-bound clients fail alike, with the same
    // work and the same words: a caller without the secret learns nothing about an id.
    let matched = match client.map(|c| &c.credential) {
        Some(ClientCredential::Secret(secret)) => secret.matched(&presented.secret, now),
        _ => {
            let _ = digests_match(&digest_secret(&presented.secret), &[0; 32]);
            None
        }
    };
    let (Some(client), Some(matched)) = (client, matched) else {
        return Err(challenge(OAuthError::invalid_client("client authentication failed")));
    };
    state.secret_uses.note(matched.digest(), now);
    if let MatchedSecret::Previous(_) = matched {
        state.metrics.previous_secret_used(&client.client_id);
    }
    if client.auth_method != presented.method {
        return Err(challenge(OAuthError::invalid_client(format!(
            "this client is registered for {}",
            client.auth_method.as_str()
        ))));
    }
    Ok(client.clone())
}
