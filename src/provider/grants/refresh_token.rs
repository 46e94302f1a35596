//! grant_type=refresh_token (RFC 6749 §6): rotated on every use; a reused token revokes its
//! whole family; a narrower scope may be asked for, never a wider one.

use axum::response::Response;

use super::TokenRequest;
use super::for_people::{Issue, respond, store_failed};
use crate::people::Standing;
use crate::provider::browser::{handle_digest, random_handle};
use crate::provider::error::OAuthError;
use crate::store::{ClientObject, Issued, RefreshUse};
use crate::tokens::new_jti;

/// grant_type=refresh_token
pub async fn grant(request: &TokenRequest<'_>) -> Result<Response, OAuthError> {
    let (state, client, form, now) = (request.state, &request.client, request.form, request.now);
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    // A refresh token bound to a DPoP key is checked before it is used (RFC 9449 §5).
    let family = state
        .store
        .refresh_grant(
            &handle_digest(presented),
            &ClientObject {
                id: &client.client_id,
                uid: &client.uid,
            },
        )
        .await
        .map_err(store_failed)?;
    crate::provider::sender::check_bound(&request.binding, family.as_ref().and_then(|g| g.dpop_jkt.as_deref()))?;
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
            // The client is told its person's session there is over (back-channel logout).
            if let Some(family) = family {
                crate::provider::backchannel::family_revoked(state, family);
            }
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
    // What was withdrawn since the sign-in is checked by `respond`, for every redemption.
    let issue = Issue {
        grant: &grant,
        scopes: &scopes,
        jti,
        refresh_token: Some(next),
        with_nonce: false,
    };
    respond(request, issue, "refresh_token").await
}
