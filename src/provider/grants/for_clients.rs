//! What the grants for clients share (client_credentials, token exchange): the scopes and
//! audiences of a token the client holds for itself, and its issuance.

use axum::response::{IntoResponse, Response};

use super::TokenRequest;
use crate::provider::error::OAuthError;
use crate::provider::issuance::{AccessTokenFor, TokenResponse, access_token};
use crate::registry::RegisteredClient;
use crate::tokens::{client_subject, new_jti};
use crate::validation::{is_client_audience, is_resource_uri, is_scope_token};
use crate::workload_identity::ACCESS_TOKEN_TYPE;

/// Issues the request's client a token for itself with the scopes it asked for (`scope`)
/// among those it was granted, for the `resources` it named. `exchange`: the answer of a
/// token exchange.
pub(super) fn issue(
    request: &TokenRequest<'_>,
    scope: Option<&str>,
    resources: &[&str],
    exchange: bool,
) -> Result<Response, OAuthError> {
    let (state, client) = (request.state, &*request.client);
    let (scopes, audiences) = decide_scopes_and_audience(client, scope, resources)?;
    let minted = access_token(
        request,
        AccessTokenFor {
            acr: None,
            subject: client_subject(&client.client_id),
            scopes: &scopes,
            audiences,
            jti: new_jti(),
        },
    )?;
    let grant_label = if exchange {
        "token_exchange"
    } else {
        "client_credentials"
    };
    state.metrics.token_issued(&client.client_id, grant_label);
    let mut response = TokenResponse::of(minted);
    response.issued_token_type = exchange.then_some(ACCESS_TOKEN_TYPE);
    Ok(response.into_response())
}

/// Picks the token's scopes and audiences. Requested scopes must all be granted; requested
/// resources must be allowed, and every requested scope must belong to one of them.
fn decide_scopes_and_audience(
    client: &RegisteredClient,
    scope: Option<&str>,
    resources: &[&str],
) -> Result<(Vec<String>, Vec<String>), OAuthError> {
    for r in resources {
        if !is_resource_uri(r) {
            return Err(OAuthError::invalid_target(format!(
                "resource '{r}' is not an absolute URI without a fragment"
            )));
        }
        if !client.may_target(r) {
            return Err(OAuthError::invalid_target(format!(
                "resource '{r}' is not allowed for this client"
            )));
        }
    }
    let in_resources = |aud: &Option<String>| aud.as_deref().is_none_or(|a| resources.contains(&a));
    let scopes: Vec<String> = match scope {
        Some(requested) => {
            let mut out: Vec<String> = Vec::new();
            for value in requested.split(' ') {
                if !is_scope_token(value) {
                    return Err(OAuthError::invalid_scope(
                        "scope must be scope-tokens separated by single spaces",
                    ));
                }
                let Some(audience) = client.scopes.get(value) else {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope '{value}' is not granted to this client"
                    )));
                };
                if !resources.is_empty() && !in_resources(audience) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope '{value}' belongs to audience '{}', which was not requested as a resource",
                        audience.as_deref().unwrap_or_default()
                    )));
                }
                if !out.iter().any(|s| s == value) {
                    out.push(value.to_string());
                }
            }
            out
        }
        None => {
            // No scope parameter: every granted scope that fits the requested resources, but
            // none for an OpenID client's audience (the cluster's): that one is asked for alone.
            let mut all: Vec<String> = client
                .scopes
                .iter()
                .filter(|(_, aud)| resources.is_empty() || in_resources(aud))
                .filter(|(_, aud)| !aud.as_deref().is_some_and(is_client_audience))
                .map(|(v, _)| v.clone())
                .collect();
            all.sort();
            all
        }
    };
    let mut audiences: Vec<String> = if resources.is_empty() {
        let mut from_scopes: Vec<String> = scopes
            .iter()
            .filter_map(|s| client.scopes.get(s).cloned().flatten())
            .collect();
        if from_scopes.is_empty() {
            from_scopes = client.audiences.clone();
        }
        from_scopes
    } else {
        resources.iter().map(|r| r.to_string()).collect()
    };
    audiences.sort();
    audiences.dedup();
    // A token another API receives must never be one the cluster accepts (kube-apiserver only
    // checks that `aud` contains its client id): an OpenID client's audience stands alone.
    if audiences.len() > 1
        && let Some(alone) = audiences.iter().find(|a| is_client_audience(a))
    {
        return Err(OAuthError::invalid_scope(format!(
            "a token for '{alone}' carries no other audience: ask for its scope by itself"
        )));
    }
    if audiences.is_empty() {
        return Err(OAuthError::invalid_target(
            "the token would have no audience: request a resource, or a scope that belongs to an API",
        ));
    }
    Ok((scopes, audiences))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GrantType;
    use crate::credentials::CredentialState;
    use crate::registry::ClientCredential;
    use jiff::Timestamp;
    use std::time::Duration;

    fn client() -> RegisteredClient {
        RegisteredClient {
            client_id: "shop.web".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "uid-web".into(),
            auth_method: Default::default(),
            credential: ClientCredential::Secret(CredentialState::first(None, Timestamp::now()).verifier()),
            grant_types: vec![GrantType::ClientCredentials],
            scopes: [
                ("orders.read".to_string(), Some("https://orders".to_string())),
                ("stock.read".to_string(), Some("https://stock".to_string())),
                ("reports.read".to_string(), Some("https://reports".to_string())),
                ("misc".to_string(), None),
            ]
            .into(),
            audiences: vec!["https://reports".into()],
            access_token_lifetime: Duration::from_secs(60),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            id_token_alg: crate::crd::KeyAlgorithm::RS256,
            refresh_token_lifetime: Duration::from_secs(3600),
            require_par: false,
            require_dpop: false,
            required_acr: None,
            fapi2: false,
            require_signed_request_object: false,
            backchannel_logout_uri: None,
            built_from: None,
        }
    }

    #[test]
    fn audience_follows_scopes_or_resources() {
        let c = client();
        let (s, a) = decide_scopes_and_audience(&c, Some("orders.read"), &[]).unwrap();
        assert_eq!(
            (s, a),
            (vec!["orders.read".to_string()], vec!["https://orders".to_string()])
        );
        let (s, a) = decide_scopes_and_audience(&c, None, &["https://stock"]).unwrap();
        assert_eq!(
            (s, a),
            (
                vec!["misc".to_string(), "stock.read".to_string()],
                vec!["https://stock".to_string()]
            )
        );
        let (s, a) = decide_scopes_and_audience(&c, Some("misc"), &[]).unwrap();
        assert_eq!((s, a), (vec!["misc".to_string()], vec!["https://reports".to_string()]));
        let (s, a) = decide_scopes_and_audience(&c, None, &["https://reports"]).unwrap();
        assert_eq!(
            (s, a),
            (
                vec!["misc".to_string(), "reports.read".to_string()],
                vec!["https://reports".to_string()]
            )
        );
    }

    #[test]
    fn refusals() {
        let c = client();
        let code = |r: Result<_, OAuthError>| r.unwrap_err().code;
        assert_eq!(
            code(decide_scopes_and_audience(&c, Some("admin"), &[])),
            "invalid_scope"
        );
        assert_eq!(
            code(decide_scopes_and_audience(&c, Some("orders.read  misc"), &[])),
            "invalid_scope"
        );
        assert_eq!(
            code(decide_scopes_and_audience(&c, None, &["https://elsewhere"])),
            "invalid_target"
        );
        assert_eq!(
            code(decide_scopes_and_audience(&c, None, &["relative"])),
            "invalid_target"
        );
        assert_eq!(
            code(decide_scopes_and_audience(&c, Some("orders.read"), &["https://stock"])),
            "invalid_scope"
        );
    }
}
