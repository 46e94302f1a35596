//! Who may use an access token: whoever holds it (Bearer, RFC 6750), or only the holder of a
//! key it is bound to (sender-constrained: DPoP, RFC 9449; mutual TLS, RFC 8705). The token
//! endpoint asks [`Binding::of_token_request`] once per request; issuance writes the binding
//! into the token (`cnf`, RFC 7800) and names its `token_type`; resource endpoints read the
//! presented token with [`presented`] and check it with [`check_presented`]. A new kind of
//! constraint is a variant of [`Binding`] here and its confirmation in the token; the grants
//! do not change.

use axum::http::{HeaderMap, header};

use super::error::OAuthError;
use crate::registry::RegisteredClient;
use crate::tokens::{AccessTokenClaims, Confirmation};

/// What the tokens of one token request are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Nothing: whoever holds the token may use it.
    Bearer,
}

impl Binding {
    /// The binding of a token request's tokens, from its headers (a proof of possession rides
    /// in one) and the client's settings. kauth verifies no proof of possession yet, so every
    /// token is a Bearer token; a `DPoP` header is ignored, as RFC 9449 §5 has a server that
    /// does not support it do, and `token_type: Bearer` tells the client so.
    pub fn of_token_request(_headers: &HeaderMap, _client: &RegisteredClient) -> Result<Self, OAuthError> {
        Ok(Self::Bearer)
    }

    /// The `token_type` of the token response.
    pub fn token_type(&self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
        }
    }

    /// The token's `cnf` claim.
    pub fn confirmation(&self) -> Option<Confirmation> {
        match self {
            Self::Bearer => None,
        }
    }
}

/// The `token_type` of an issued token, as introspection reports it.
pub fn token_type_of(claims: &AccessTokenClaims) -> &'static str {
    match claims.cnf {
        None => "Bearer",
        Some(_) => "DPoP",
    }
}

/// The access token a request to a resource endpoint presents (`Authorization: Bearer`).
pub fn presented(headers: &HeaderMap) -> Result<&str, OAuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| OAuthError::invalid_token("a Bearer access token is required"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| OAuthError::invalid_token("a Bearer access token is required"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(OAuthError::invalid_token("a Bearer access token is required"));
    }
    Ok(token.trim())
}

/// Whether the token may be used the way it was presented: a Bearer token by anyone; a bound
/// token only with the proof its binding asks for (none of which kauth verifies yet).
pub fn check_presented(claims: &AccessTokenClaims) -> Result<(), OAuthError> {
    match &claims.cnf {
        None => Ok(()),
        Some(_) => Err(OAuthError::invalid_token(
            "this access token is bound to a key: present it with its proof",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(cnf: Option<Confirmation>) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://kauth.example.com".into(),
            sub: "alice".into(),
            aud: crate::tokens::Audience::from_list(vec!["https://api.example.com".into()]),
            client_id: "shop.web".into(),
            scope: None,
            jti: "j".into(),
            iat: 0,
            exp: 60,
            cnf,
        }
    }

    #[test]
    fn a_bound_token_is_not_a_bearer_token() {
        let bound = claims(Some(Confirmation {
            jkt: "thumbprint".into(),
        }));
        assert_eq!(token_type_of(&bound), "DPoP");
        assert!(check_presented(&bound).is_err(), "no proof, no use");
        let bearer = claims(None);
        assert_eq!(token_type_of(&bearer), "Bearer");
        assert!(check_presented(&bearer).is_ok());
    }

    #[test]
    fn only_the_bearer_scheme_presents_a_token() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc ".parse().unwrap());
        assert_eq!(presented(&headers).unwrap(), "abc");
        headers.insert(header::AUTHORIZATION, "DPoP abc".parse().unwrap());
        assert!(presented(&headers).is_err());
        headers.remove(header::AUTHORIZATION);
        assert!(presented(&headers).is_err());
    }
}
