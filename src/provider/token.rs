//! The token endpoint: `client_credentials` and token exchange with scope and RFC 8707
//! resource checks, issuing RFC 9068 JWT access tokens; the people's grants live in `grants`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::ProviderState;
use super::client_auth::{
    authenticate, client_for_service_account, presents_credentials, verify_service_account_token,
};
use super::error::OAuthError;
use super::form::Form;
use super::grants;
use super::token_response::TokenResponse;
use std::sync::Arc;

use crate::crd::GrantType;
use crate::registry::{ClientCredential, RegisteredClient, Snapshot};
use crate::tokens::{AccessTokenClaims, Audience, client_subject, new_jti, sign};
use crate::validation::{is_resource_uri, is_scope_token};
use crate::workload_identity::{ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE};

/// POST /token
pub async fn token(State(state): State<ProviderState>, method: Method, headers: HeaderMap, body: Body) -> Response {
    match issue(&state, method, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn issue(state: &ProviderState, method: Method, headers: &HeaderMap, body: Body) -> Result<Response, OAuthError> {
    if method != Method::POST {
        return Err(OAuthError::method_not_allowed());
    }
    let form = Form::read(headers, body).await?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let Some(grant) = GrantType::parse(grant_type) else {
        // Authenticated first, as for every grant: an unknown client learns nothing more.
        authenticate(state, &snapshot, headers, &form, now).await?;
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant type '{grant_type}' is not supported"
        )));
    };
    let (client, resources, exchange) = match grant {
        GrantType::TokenExchange => {
            let (client, resources) = token_exchange(state, &snapshot, headers, &form, now).await?;
            (client, resources, true)
        }
        GrantType::AuthorizationCode => {
            let client = authenticate(state, &snapshot, headers, &form, now).await?;
            return grants::authorization_code(state, &snapshot, client, &form, now).await;
        }
        GrantType::RefreshToken => {
            let client = authenticate(state, &snapshot, headers, &form, now).await?;
            return grants::refresh_token(state, &snapshot, client, &form, now).await;
        }
        GrantType::ClientCredentials => {
            let client = authenticate(state, &snapshot, headers, &form, now).await?;
            if !client.allows(GrantType::ClientCredentials) {
                return Err(OAuthError::unauthorized_client(
                    "this client may not use client_credentials",
                ));
            }
            (client, form.all("resource"), false)
        }
    };
    let (scopes, audiences) = decide_scopes_and_audience(&client, form.get("scope"), &resources)?;

    let lifetime = client.access_token_lifetime.as_secs();
    let iat = now.as_second();
    let claims = AccessTokenClaims {
        iss: state.issuer.url.clone(),
        sub: client_subject(&client.client_id),
        aud: Audience::from_list(audiences),
        client_id: client.client_id.clone(),
        scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        jti: new_jti(),
        iat,
        exp: iat + lifetime as i64,
    };
    let access_token = sign(&snapshot.keys, &claims, now).map_err(|e| {
        tracing::error!(error = %e, "cannot sign access token");
        OAuthError::unavailable("no signing key is available yet")
    })?;
    let grant_label = if exchange {
        "token_exchange"
    } else {
        "client_credentials"
    };
    state.metrics.token_issued(&client.client_id, grant_label);
    let mut response = TokenResponse::bearer(access_token, lifetime, claims.scope);
    response.issued_token_type = exchange.then_some(ACCESS_TOKEN_TYPE);
    Ok(response.into_response())
}

/// RFC 8693: a workload trades its ServiceAccount token for an access token. The subject
/// token identifies the client (or must match the client that authenticated), and the
/// requested `audience`/`resource` values must be ones the client was granted.
async fn token_exchange<'f>(
    state: &ProviderState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    form: &'f Form,
    now: Timestamp,
) -> Result<(Arc<RegisteredClient>, Vec<&'f str>), OAuthError> {
    let subject = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    if form.get("subject_token_type") != Some(JWT_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {JWT_TOKEN_TYPE}"
        )));
    }
    if form.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(format!(
            "only {ACCESS_TOKEN_TYPE} can be requested"
        )));
    }
    if form.get("actor_token").is_some() {
        return Err(OAuthError::invalid_request(
            "delegation with actor_token is not supported",
        ));
    }
    let client = if presents_credentials(headers, form) {
        let client = authenticate(state, snapshot, headers, form, now).await?;
        let sa = verify_service_account_token(state, subject)
            .await
            .map_err(|e| OAuthError::invalid_request(e.description))?;
        if client.credential != ClientCredential::ServiceAccount(sa) {
            return Err(OAuthError::invalid_request(
                "subject_token is not the token of this client's ServiceAccount",
            ));
        }
        client
    } else {
        let sa = verify_service_account_token(state, subject).await?;
        client_for_service_account(snapshot, &sa, form.get("client_id"))?
    };
    if !client.allows(GrantType::TokenExchange) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use token exchange (add it to spec.grantTypes)",
        ));
    }
    let mut resources = form.all("audience");
    resources.extend(form.all("resource"));
    Ok((client, resources))
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
            // No scope parameter: every granted scope that fits the requested resources.
            let mut all: Vec<String> = client
                .scopes
                .iter()
                .filter(|(_, aud)| resources.is_empty() || in_resources(aud))
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
    use crate::credentials::CredentialState;
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
