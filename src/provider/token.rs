//! The token endpoint: reads the request, parses its grant type, authenticates the client and
//! hands over to the grant's module under `grants/`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::browser::client_ip;
use super::client_auth::authenticate;
use super::error::OAuthError;
use super::form::Form;
use super::grants;
use super::sender::Binding;
use super::state::ProviderState;
use crate::crd::GrantType;

/// What the audit trail says of one token request.
#[derive(Default)]
struct Asked {
    client_id: Option<String>,
    grant_type: Option<String>,
}

/// POST /token
pub async fn token(State(state): State<ProviderState>, request: Request) -> Response {
    let source = client_ip(&request);
    let (parts, body) = request.into_parts();
    let mut asked = Asked::default();
    let result = issue(&state, parts.method, &parts.headers, body, &mut asked).await;
    let mut record = crate::audit::Record {
        client_id: asked.client_id.as_deref(),
        source,
        grant_type: asked.grant_type.as_deref(),
        ..Default::default()
    };
    match result {
        Ok(response) => {
            let person = response
                .extensions()
                .get::<super::issuance::IssuedTo>()
                .map(|p| p.0.clone());
            record.subject = person.as_deref();
            state.audit_event(crate::audit::Event::TokenIssued, &record);
            response
        }
        Err(e) => {
            let reason = format!("{}: {}", e.code, e.description);
            record.reason = Some(&reason);
            state.audit_event(crate::audit::Event::TokenRefused, &record);
            e.into_response()
        }
    }
}

async fn issue(
    state: &ProviderState,
    method: Method,
    headers: &HeaderMap,
    body: axum::body::Body,
    asked: &mut Asked,
) -> Result<Response, OAuthError> {
    if method != Method::POST {
        return Err(OAuthError::method_not_allowed());
    }
    let form = Form::read(headers, body).await?;
    asked.grant_type = form.get("grant_type").map(|g| g.chars().take(128).collect());
    // Whom the request names, until it is authenticated (then: whom it proved to be).
    asked.client_id = form
        .get("client_id")
        .map(str::to_string)
        .or_else(|| super::client_auth::basic_user(headers));
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let snapshot = state.registry.load();
    let now = Timestamp::now();
    let grant = GrantType::parse(grant_type);
    // The client, once: a grant that identifies its client itself does so (a token exchange by
    // its subject token); every other request authenticates here (an unknown grant type too:
    // an unknown client learns nothing about what is supported).
    let client = match grant {
        Some(g) if g.identifies_its_client() => {
            grants::token_exchange::identify(state, &snapshot, headers, &form, now).await?
        }
        _ => authenticate(state, &snapshot, headers, &form, now).await?,
    };
    asked.client_id = Some(client.client_id.clone());
    let Some(grant) = grant else {
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant type '{grant_type}' is not supported"
        )));
    };
    // Each client uses the grants its spec lists, and no other.
    if !client.allows(grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use {} (add it to spec.grantTypes)",
            grant.as_str()
        )));
    }
    let binding = Binding::of_token_request(state, headers, &client).await?;
    let request = grants::TokenRequest {
        state,
        snapshot: &snapshot,
        headers,
        form: &form,
        client,
        binding,
        now,
    };
    request.binding.check_unspent(state).await?;
    let granted = match grant {
        GrantType::ClientCredentials => grants::client_credentials::grant(&request).await,
        GrantType::AuthorizationCode => grants::authorization_code::grant(&request).await,
        GrantType::RefreshToken => grants::refresh_token::grant(&request).await,
        GrantType::DeviceCode => grants::device_code::grant(&request).await,
        GrantType::TokenExchange => grants::token_exchange::grant(&request).await,
    };
    // The proof is spent only now: a refused request stores nothing.
    let response = granted?;
    request.binding.spend(state).await?;
    Ok(response)
}
