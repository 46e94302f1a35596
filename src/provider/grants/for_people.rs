//! What the grants for people share: `authorization_code`, the device grant and
//! `refresh_token` issue an access token for the person, an ID token when `openid` was
//! granted, and a refresh token when the client has that grant. The first two redeem a code
//! once (the device grant's approval is stored as one).

use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::TokenRequest;
use crate::crd::GrantType;
use crate::keys::jose_algorithm;
use crate::provider::browser::{handle_digest, random_handle};
use crate::provider::browser_flow::IDENTITY_SCOPES;
use crate::provider::error::OAuthError;
use crate::provider::issuance::{AccessTokenFor, TokenResponse, access_token};
use crate::provider::sender;
use crate::registry::RegisteredClient;
use crate::store::{Grant, Issued, Redemption, StoreError};
use crate::tokens::{IdTokenClaims, new_jti, sign_id_token};

/// Longest a refresh family lives, however often it is used: people sign in again after it.
pub const FAMILY_LIFETIME_SECS: i64 = 90 * 24 * 3600;

pub(super) fn store_failed(e: StoreError) -> OAuthError {
    tracing::error!(error = %e, "grant store unavailable at the token endpoint");
    OAuthError::unavailable("the grant store is unavailable; retry shortly")
}

/// Redeems the code `code_id` for the request's client: the grant, and the jti its access
/// token will carry (recorded with the redemption, so a replay however soon revokes it). The
/// code is spent whatever follows.
pub(super) async fn redeem(request: &TokenRequest<'_>, code_id: &str) -> Result<(Grant, String), OAuthError> {
    let (state, client, now) = (request.state, &*request.client, request.now);
    // A code bound to a DPoP key is checked before it is spent (RFC 9449 §10).
    let bound = state
        .store
        .code_binding(code_id, now.as_second())
        .await
        .map_err(store_failed)?;
    sender::check_bound(&request.binding, bound.flatten().as_deref())?;
    let jti = new_jti();
    let exp = now.as_second() + client.access_token_lifetime.as_secs() as i64;
    let issued = Issued { jti: jti.clone(), exp };
    let grant = match state
        .store
        .redeem_code(code_id, now.as_second(), &issued)
        .await
        .map_err(store_failed)?
    {
        Redemption::Granted(g) => g,
        Redemption::Replayed(revoked) => {
            state.revocations.remember(&revoked);
            tracing::warn!(client_id = %client.client_id, revoked = revoked.len(), "code replayed; its tokens are revoked");
            return Err(OAuthError::invalid_grant(
                "the code was already used; the tokens it issued are revoked",
            ));
        }
        Redemption::Invalid => return Err(OAuthError::invalid_grant("the code is unknown or expired")),
    };
    if grant.client_id != client.client_id || grant.client_uid != client.uid {
        return Err(OAuthError::invalid_grant("the code was issued to another client"));
    }
    Ok((grant, jti))
}

/// Issues the tokens of a redeemed code: a refresh family first when the client may refresh
/// (refused if the code was replayed meanwhile), then the response.
pub(super) async fn issue_for_code(
    request: &TokenRequest<'_>,
    code_id: &str,
    grant: &Grant,
    jti: String,
    kind: GrantType,
) -> Result<Response, OAuthError> {
    let (state, client, now) = (request.state, &*request.client, request.now);
    sender::check_grant(&request.binding, grant)?;
    let refresh_token = if client.allows(GrantType::RefreshToken) {
        let token = random_handle();
        // A public client's family is bound to the key of its first tokens (RFC 9449 §5).
        let grant = &sender::bind_family(&request.binding, client, grant);
        let started = state
            .store
            .start_family(
                code_id,
                &random_handle(),
                &handle_digest(&token),
                grant,
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
        grant,
        scopes: &grant.scopes,
        jti,
        refresh_token,
        // A device request carries no nonce; a code request's goes into the ID token.
        with_nonce: true,
    };
    respond(request, issue, kind.as_str()).await
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
pub(super) struct Issue<'a> {
    pub grant: &'a Grant,
    /// The scopes of this issuance (the grant's, or fewer on refresh).
    pub scopes: &'a [String],
    /// The access token's jti, chosen before the store records it.
    pub jti: String,
    pub refresh_token: Option<String>,
    /// Whether the ID token carries the grant's nonce (only the code's tokens do).
    pub with_nonce: bool,
}

/// What of a grant is still granted at its redemption (T11): the API team may have withdrawn a
/// Scope, or its grant to this client, since the person signed in. A scope this issuance would
/// carry that is no longer granted refuses it (the app signs the person in again); an audience
/// no longer granted is left out of the token, and one with none left is addressed to kauth
/// (an identity-only token, as if no API had been asked for). The resource server never sees
/// a withdrawn audience again.
fn still_granted(
    client: &RegisteredClient,
    scopes: &[String],
    grant: &Grant,
    issuer: &str,
) -> Result<Vec<String>, OAuthError> {
    let identity = |s: &String| IDENTITY_SCOPES.iter().any(|(v, _)| v == s);
    if let Some(gone) = scopes
        .iter()
        .find(|s| !identity(s) && !client.scopes.contains_key(s.as_str()))
    {
        return Err(OAuthError::invalid_grant(format!(
            "scope '{gone}' is no longer granted to this client"
        )));
    }
    let audiences: Vec<String> = grant
        .audiences
        .iter()
        .filter(|aud| client.may_target(aud))
        .cloned()
        .collect();
    Ok(if audiences.is_empty() {
        vec![issuer.to_string()]
    } else {
        audiences
    })
}

pub(super) async fn respond(
    request: &TokenRequest<'_>,
    issue: Issue<'_>,
    grant_label: &str,
) -> Result<Response, OAuthError> {
    let (state, snapshot, client, now) = (request.state, request.snapshot, &*request.client, request.now);
    // A code or family bound to a DPoP key is redeemed only with a proof of it.
    sender::check_grant(&request.binding, issue.grant)?;
    // Local people sign in with a password (and maybe a second factor, as the grant
    // recorded); for federated ones (`<connector>:<sub>`) kauth says only what a trusted
    // upstream vouched for (the grant's amr), and nothing otherwise.
    let federated = issue.grant.subject.contains(':');
    let amr = match (federated, issue.grant.amr.is_empty()) {
        (true, _) => issue.grant.amr.clone(),
        (false, true) => vec!["pwd".to_string()],
        (false, false) => issue.grant.amr.clone(),
    };
    let vouched = !amr.is_empty();
    let acr = vouched.then(|| crate::second_factors::acr_of(&amr).to_string());
    let audiences = still_granted(client, issue.scopes, issue.grant, &state.issuer.url)?;
    let minted = access_token(
        request,
        AccessTokenFor {
            subject: issue.grant.subject.clone(),
            scopes: issue.scopes,
            audiences,
            jti: issue.jti,
            acr: acr.clone(),
        },
    )?;
    let (lifetime, iat) = (minted.lifetime, minted.claims.iat);
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
            amr: amr.clone(),
            acr,
            person: person.map(|p| released_claims(&p, issue.scopes)).unwrap_or_default(),
            sid: issue.grant.sid.clone(),
        };
        let alg = jose_algorithm(client.id_token_alg);
        Some(
            sign_id_token(&snapshot.keys, alg, id, Some(&minted.token), now).map_err(|e| {
                tracing::error!(error = %e, alg = ?alg, "cannot sign ID token");
                OAuthError::unavailable(format!("no {alg:?} signing key is available for ID tokens"))
            })?,
        )
    } else {
        None
    };
    state.metrics.token_issued(&client.client_id, grant_label);
    let mut response = TokenResponse::of(minted);
    response.id_token = id_token;
    response.refresh_token = issue.refresh_token;
    let mut response = response.into_response();
    response
        .extensions_mut()
        .insert(crate::provider::issuance::IssuedTo(issue.grant.subject.clone()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

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
