//! Signed request objects (RFC 9101) pushed to /par: the authorization parameters as the
//! claims of a JWT signed by one of the client's keys (`iss` the client, `aud` the issuer, a
//! short `exp`). The pushed request then holds only what the signature covers: the other form
//! parameters, but for client authentication, are ignored. A client with
//! `spec.requireSignedRequestObject` may push nothing else; unsigned (`alg: none`) objects are
//! refused for everyone.

use serde_json::{Map, Value};

use super::assertions::verify_signed;
use super::error::OAuthError;
use super::form::Form;
use super::state::ProviderState;
use crate::registry::RegisteredClient;

/// Longest a request object may live (`exp` from now; FAPI asks for at most an hour).
const MAX_LIFETIME: i64 = 3600;

/// JWT claims that are not authorization parameters.
const JWT_CLAIMS: &[&str] = &["iss", "aud", "exp", "nbf", "iat", "jti", "sub"];

/// The authorization parameters a pushed request stands for: the verified request object's
/// when `form` carries one (`client_id` checked against it), or the form's own, unless the
/// client must sign its requests.
pub async fn parameters(state: &ProviderState, client: &RegisteredClient, form: Form) -> Result<Form, OAuthError> {
    let Some(jwt) = form.get("request") else {
        if client.require_signed_request_object {
            return Err(invalid(
                "this client must sign its requests: push them as a request object (spec.requireSignedRequestObject)",
            ));
        }
        return Ok(form);
    };
    let issuer = state.issuer.url.clone();
    let claims: Map<String, Value> = verify_signed(state, client, jwt, |validation| {
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_issuer(&[&client.client_id]);
        validation.set_audience(&[&issuer]);
    })
    .await
    .map_err(|e| invalid(&format!("the request object is refused: {e}")))?;
    let now = jiff::Timestamp::now().as_second();
    // An integer, and within the hour (a float or a huge number is refused, not skipped).
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp.saturating_sub(now) <= MAX_LIFETIME => {}
        Some(_) => return Err(invalid("the request object lives longer than an hour (exp)")),
        None => return Err(invalid("the request object's exp must be an integer")),
    }
    if claims.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return Err(invalid(
            "the request object's client_id is not the authenticated client",
        ));
    }
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &claims {
        if JWT_CLAIMS.contains(&name.as_str()) || name == "request" || name == "request_uri" {
            continue;
        }
        match value {
            Value::String(s) => pairs.append_pair(name, s),
            Value::Number(n) => pairs.append_pair(name, &n.to_string()),
            _ => return Err(invalid(&format!("the request object's {name} is not a string"))),
        };
    }
    Form::parse(pairs.finish().as_bytes())
}

fn invalid(d: &str) -> OAuthError {
    OAuthError::refused("invalid_request_object", d)
}
