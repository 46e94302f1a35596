//! The token endpoint's grants for people: `authorization_code` (with PKCE) and
//! `refresh_token` (rotated on every use; a reused one revokes its whole family). Both issue
//! an access token for the person, an ID token when `openid` was granted, and a refresh
//! token when the client has that grant.

use std::sync::Arc;

use aws_lc_rs::digest;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde_json::{Map, Value};

use super::ProviderState;
use super::browser::{handle_digest, random_handle, same_secret};
use super::error::OAuthError;
use super::form::Form;
use super::token_response::TokenResponse;
use crate::crd::GrantType;
use crate::keys::jose_algorithm;
use crate::people::Standing;
use crate::registry::{RegisteredClient, Snapshot};
use crate::store::{ClientObject, Grant, Issued, Redemption, RefreshUse, StoreError};
use crate::tokens::{AccessTokenClaims, Audience, IdTokenClaims, new_jti, sign, sign_id_token};

/// Longest a refresh family lives, however often it is used: people sign in again after it.
pub const FAMILY_LIFETIME_SECS: i64 = 90 * 24 * 3600;

fn store_failed(e: StoreError) -> OAuthError {
    tracing::error!(error = %e, "grant store unavailable at the token endpoint");
    OAuthError::unavailable("the grant store is unavailable; retry shortly")
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// The person's claims the granted scopes release (ID token and userinfo).
pub fn released_claims(claims: &Value, scopes: &[String]) -> Map<String, Value> {
    let has = |s: &str| scopes.iter().any(|v| v == s);
    let mut out = Map::new();
    let mut take = |names: &[&str]| {
        for n in names {
            if let Some(v) = claims.get(*n).filter(|v| !v.is_null()) {
                out.insert(n.to_string(), v.clone());
            }
        }
    };
    if has("profile") {
        take(&["name", "preferred_username"]);
    }
    if has("email") {
        take(&["email", "email_verified"]);
    }
    if has("groups") {
        take(&["groups"]);
    }
    out
}

/// What one issuance produces.
struct Issue<'a> {
    client: &'a RegisteredClient,
    grant: &'a Grant,
    /// The scopes of this issuance (the grant's, or fewer on refresh).
    scopes: &'a [String],
    /// The access token's jti, chosen before the store records it.
    jti: String,
    refresh_token: Option<String>,
    /// Whether the ID token carries the grant's nonce (only the code's tokens do).
    with_nonce: bool,
}

async fn respond(
    state: &ProviderState,
    snapshot: &Snapshot,
    issue: Issue<'_>,
    now: Timestamp,
    grant_label: &str,
) -> Result<Response, OAuthError> {
    let client = issue.client;
    let lifetime = client.access_token_lifetime.as_secs();
    let iat = now.as_second();
    let audiences = if issue.grant.audiences.is_empty() {
        vec![state.issuer.url.clone()]
    } else {
        issue.grant.audiences.clone()
    };
    let scope = (!issue.scopes.is_empty()).then(|| issue.scopes.join(" "));
    let claims = AccessTokenClaims {
        iss: state.issuer.url.clone(),
        sub: issue.grant.subject.clone(),
        aud: Audience::from_list(audiences),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        jti: issue.jti,
        iat,
        exp: iat + lifetime as i64,
    };
    let access_token = sign(&snapshot.keys, &claims, now).map_err(|e| {
        tracing::error!(error = %e, "cannot sign access token");
        OAuthError::unavailable("no signing key is available yet")
    })?;
    let id_token = if issue.scopes.iter().any(|s| s == "openid") {
        let person = state.store.subject(&issue.grant.subject).await.map_err(store_failed)?;
        let id = IdTokenClaims {
            iss: state.issuer.url.clone(),
            sub: issue.grant.subject.clone(),
            aud: client.client_id.clone(),
            azp: client.client_id.clone(),
            iat,
            exp: iat + lifetime as i64,
            auth_time: issue.grant.auth_time,
            nonce: if issue.with_nonce {
                issue.grant.nonce.clone()
            } else {
                None
            },
            at_hash: None,
            // Local people sign in with a password; for federated ones (`<connector>:<sub>`)
            // the upstream knows how, kauth does not.
            amr: if issue.grant.subject.contains(':') {
                Vec::new()
            } else {
                vec!["pwd".into()]
            },
            person: person.map(|p| released_claims(&p, issue.scopes)).unwrap_or_default(),
        };
        let alg = jose_algorithm(client.id_token_alg);
        Some(
            sign_id_token(&snapshot.keys, alg, id, Some(&access_token), now).map_err(|e| {
                tracing::error!(error = %e, alg = ?alg, "cannot sign ID token");
                OAuthError::unavailable(format!("no {alg:?} signing key is available for ID tokens"))
            })?,
        )
    } else {
        None
    };
    state.metrics.token_issued(&client.client_id, grant_label);
    let mut response = TokenResponse::bearer(access_token, lifetime, scope);
    response.id_token = id_token;
    response.refresh_token = issue.refresh_token;
    Ok(response.into_response())
}

/// grant_type=authorization_code
pub async fn authorization_code(
    state: &ProviderState,
    snapshot: &Snapshot,
    client: Arc<RegisteredClient>,
    form: &Form,
    now: Timestamp,
) -> Result<Response, OAuthError> {
    if !client.allows(GrantType::AuthorizationCode) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use authorization_code",
        ));
    }
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    let verifier = form.get("code_verifier");
    if verifier.is_some_and(|v| !valid_verifier(v)) {
        return Err(OAuthError::invalid_request(
            "code_verifier must be 43 to 128 unreserved characters",
        ));
    }
    let code_id = handle_digest(code);
    let jti = new_jti();
    let exp = now.as_second() + client.access_token_lifetime.as_secs() as i64;
    let issued = Issued { jti: jti.clone(), exp };
    let grant = match state
        .store
        .redeem_code(&code_id, now.as_second(), &issued)
        .await
        .map_err(store_failed)?
    {
        Redemption::Granted(g) => g,
        Redemption::Replayed(revoked) => {
            state.revocations.remember(&revoked);
            tracing::warn!(client_id = %client.client_id, revoked = revoked.len(), "authorization code replayed; its tokens are revoked");
            return Err(OAuthError::invalid_grant(
                "the code was already used; the tokens it issued are revoked",
            ));
        }
        Redemption::Invalid => return Err(OAuthError::invalid_grant("the code is unknown or expired")),
    };
    // The code is spent whatever follows: a wrong client or verifier cannot try again.
    if grant.client_id != client.client_id || grant.client_uid != client.uid {
        return Err(OAuthError::invalid_grant("the code was issued to another client"));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    match (&grant.code_challenge, verifier) {
        (Some(challenge), Some(v)) if same_secret(&s256(v), challenge) => {}
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required (PKCE)")),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "the authorization request had no code_challenge",
            ));
        }
        (None, None) => {}
    }
    let refresh_token = if client.allows(GrantType::RefreshToken) {
        let token = random_handle();
        let started = state
            .store
            .start_family(
                &code_id,
                &random_handle(),
                &handle_digest(&token),
                &grant,
                now.as_second() + client.refresh_token_lifetime.as_secs() as i64,
                now.as_second() + FAMILY_LIFETIME_SECS,
            )
            .await
            .map_err(store_failed)?;
        if !started {
            return Err(OAuthError::invalid_grant(
                "the code was already used; the tokens it issued are revoked",
            ));
        }
        Some(token)
    } else {
        None
    };
    let issue = Issue {
        client: &client,
        grant: &grant,
        scopes: &grant.scopes,
        jti,
        refresh_token,
        with_nonce: true,
    };
    respond(state, snapshot, issue, now, "authorization_code").await
}

/// grant_type=refresh_token
pub async fn refresh_token(
    state: &ProviderState,
    snapshot: &Snapshot,
    client: Arc<RegisteredClient>,
    form: &Form,
    now: Timestamp,
) -> Result<Response, OAuthError> {
    if !client.allows(GrantType::RefreshToken) {
        return Err(OAuthError::unauthorized_client("this client may not use refresh_token"));
    }
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let next = random_handle();
    let jti = new_jti();
    let exp = now.as_second() + client.access_token_lifetime.as_secs() as i64;
    let next_exp = now.as_second() + client.refresh_token_lifetime.as_secs() as i64;
    let used = state
        .store
        .use_refresh(
            &handle_digest(presented),
            &ClientObject {
                id: &client.client_id,
                uid: &client.uid,
            },
            now.as_second(),
            (&handle_digest(&next), next_exp),
            &Issued { jti: jti.clone(), exp },
        )
        .await
        .map_err(store_failed)?;
    let grant = match used {
        RefreshUse::Rotated(g) if state.standing(&g.subject, None) == Standing::Left => {
            let revoked = state
                .store
                .revoke_families_of_person(&g.subject, now.as_second())
                .await
                .map_err(store_failed)?;
            state.revocations.remember(&revoked);
            return Err(OAuthError::invalid_grant("the person no longer has access"));
        }
        RefreshUse::Rotated(g) => g,
        RefreshUse::Reused(revoked) => {
            state.revocations.remember(&revoked);
            tracing::warn!(client_id = %client.client_id, revoked = revoked.len(), "refresh token reused; its family is revoked");
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; its whole family is now revoked",
            ));
        }
        RefreshUse::Invalid => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown, expired or revoked",
            ));
        }
    };
    // A narrower scope may be asked for, never a wider one (RFC 6749 §6).
    let scopes: Vec<String> = match form.get("scope") {
        None => grant.scopes.clone(),
        Some(requested) => {
            let asked: Vec<String> = requested
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(extra) = asked.iter().find(|s| !grant.scopes.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope '{extra}' was not part of the original grant"
                )));
            }
            asked
        }
    };
    // A scope withdrawn from the client since the sign-in is no longer issued.
    if let Some(gone) = scopes.iter().find(|s| {
        !super::authorize::IDENTITY_SCOPES.iter().any(|(v, _)| v == s) && !client.scopes.contains_key(s.as_str())
    }) {
        return Err(OAuthError::invalid_grant(format!(
            "scope '{gone}' is no longer granted to this client"
        )));
    }
    let issue = Issue {
        client: &client,
        grant: &grant,
        scopes: &scopes,
        jti,
        refresh_token: Some(next),
        with_nonce: false,
    };
    respond(state, snapshot, issue, now, "refresh_token").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(valid_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn scopes_release_only_their_claims() {
        let claims = serde_json::json!({"name": "Alice", "preferred_username": "alice", "email": "a@x", "email_verified": true, "groups": ["g"], "secret": 1});
        let only_email = released_claims(&claims, &["openid".into(), "email".into()]);
        assert_eq!(
            Value::Object(only_email),
            serde_json::json!({"email": "a@x", "email_verified": true})
        );
        let all = released_claims(&claims, &["profile".into(), "email".into(), "groups".into()]);
        assert_eq!(all.len(), 5, "never the unrelated claim");
    }
}
