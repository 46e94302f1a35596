//! What a request for a person's authorization may ask for: scopes (identity scopes kauth
//! implements, API scopes granted to the client) and audiences. /authorize and the device
//! grant ask alike.

use super::IDENTITY_SCOPES;
use crate::crd::GrantType;
use crate::provider::form::Form;
use crate::registry::RegisteredClient;
use crate::validation::{RESERVED_SCOPES, is_client_audience, is_resource_uri, is_scope_token};

/// Why a request was refused: an OAuth error code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub description: String,
}

fn client_error(code: &'static str, description: impl Into<String>) -> Refused {
    Refused {
        code,
        description: description.into(),
    }
}

/// The `resource`s asked for (RFC 8707), each one allowed to the client.
pub fn resources<'f>(form: &'f Form, client: &RegisteredClient) -> Result<Vec<&'f str>, Refused> {
    let resources = form.all("resource");
    for r in &resources {
        if !is_resource_uri(r) || !client.may_target(r) {
            return Err(client_error(
                "invalid_target",
                format!("resource '{r}' is not allowed for this client"),
            ));
        }
    }
    Ok(resources)
}

/// The audiences of the tokens: the resources asked for, or else those of the scopes.
pub fn audiences(resources: &[&str], client: &RegisteredClient, scopes: &[String]) -> Vec<String> {
    let mut audiences: Vec<String> = if resources.is_empty() {
        scopes
            .iter()
            .filter_map(|s| client.scopes.get(s).cloned().flatten())
            .collect()
    } else {
        resources.iter().map(|r| r.to_string()).collect()
    };
    audiences.sort();
    audiences.dedup();
    audiences
}

/// The requested scopes: identity scopes kauth implements, and API scopes granted to the
/// client. `offline_access` needs the refresh_token grant.
pub fn requested_scopes(scope: Option<&str>, client: &RegisteredClient) -> Result<Vec<String>, Refused> {
    let mut out: Vec<String> = Vec::new();
    for value in scope.unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
        if !is_scope_token(value) {
            return Err(client_error(
                "invalid_scope",
                "scope must be scope-tokens separated by spaces",
            ));
        }
        let identity = IDENTITY_SCOPES.iter().any(|(s, _)| *s == value);
        if identity {
            if value == "offline_access" && !client.allows(GrantType::RefreshToken) {
                return Err(client_error(
                    "invalid_scope",
                    "offline_access needs the refresh_token grant",
                ));
            }
        } else if RESERVED_SCOPES.contains(&value) {
            return Err(client_error(
                "invalid_scope",
                format!("scope '{value}' is not supported"),
            ));
        } else if !client.scopes.contains_key(value) {
            return Err(client_error(
                "invalid_scope",
                format!("scope '{value}' is not granted to this client"),
            ));
        } else if let Some(Some(aud)) = client.scopes.get(value)
            && is_client_audience(aud)
        {
            // A person's token for an OpenID client's audience would be their sign-in to that
            // client (the cluster: kubectl's own ID token), made by another app.
            return Err(client_error(
                "invalid_scope",
                format!("scope '{value}' is for a client's own tokens; a person signs in to {aud} with that client"),
            ));
        }
        if !out.iter().any(|s| s == value) {
            out.push(value.to_string());
        }
    }
    Ok(out)
}
