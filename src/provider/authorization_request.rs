//! What an authorization request may ask for, checked the same way whether it arrives at
//! /authorize or is pushed first to /par (RFC 9126): its shape, PKCE, prompt, max_age,
//! resources and scopes, for a client and redirect URI already known to be genuine.

use jiff::Timestamp;

use super::browser_flow::AuthRequest;
use super::browser_flow::requested::{Refused, audiences, requested_scopes, resources};
use super::error::OAuthError;
use super::form::Form;
use crate::crd::GrantType;
use crate::registry::RegisteredClient;

/// Longest `state` and `nonce` kept.
pub(super) const MAX_OPAQUE_LEN: usize = 1024;

/// An error on the way to the client, before or after the redirect URI is trusted.
pub(super) enum Refusal {
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

impl Refusal {
    /// The refusal as an RFC 6749 error (for /par, which answers the client directly).
    pub(super) fn into_oauth(self) -> OAuthError {
        match self {
            Refusal::Page(text) => OAuthError::invalid_request(text),
            Refusal::Client(code, d) => OAuthError::refused(code, d),
        }
    }
}

/// Checks everything but the client and redirect URI (already trusted).
pub(super) fn check(form: &Form, client: &RegisteredClient, redirect_uri: &str) -> Result<AuthRequest, Refusal> {
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
    if client.fapi2 && code_challenge.is_none() {
        return Err(client_error(
            "invalid_request",
            "spec.profile FAPI2: PKCE with S256 is required (FAPI 2.0 §5.3.2.2)",
        ));
    }
    // RFC 9449 §10: the code is bound to this DPoP key (a SHA-256 thumbprint, base64url).
    let dpop_jkt = match form.get("dpop_jkt") {
        None => None,
        Some(jkt) if jkt.len() == 43 && jkt.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
            Some(jkt.to_string())
        }
        Some(_) => {
            return Err(client_error(
                "invalid_request",
                "dpop_jkt is not a base64url SHA-256 JWK thumbprint",
            ));
        }
    };
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
        dpop_jkt,
        acr: wanted_acr(form, client),
        first_factor: None,
        account: false,
    })
}

/// The `acr` the sign-in must reach: the strongest of the client's `spec.requiredAcr` and the
/// request's `acr_values` that kauth knows (others are voluntary, OIDC Core §3.1.2.1, and
/// ignored).
fn wanted_acr(form: &Form, client: &RegisteredClient) -> Option<String> {
    let asked = form.get("acr_values").unwrap_or("").split(' ');
    crate::second_factors::ACR_VALUES
        .iter()
        .rev()
        .find(|known| client.required_acr == Some(**known) || asked.clone().any(|a| a == **known))
        .map(|a| a.to_string())
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
            "invalid_request",
            "request_uri is only accepted alone with client_id, for a request pushed to /par",
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
            require_par: false,
            require_dpop: false,
            required_acr: None,
            fapi2: false,
            require_signed_request_object: false,
            backchannel_logout_uri: None,
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
