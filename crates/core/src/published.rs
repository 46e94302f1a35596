//! What kauth publishes for verifiers: the discovery document and the JWKS. Served by the
//! provider and delivered into namespaces by the controller, so both say the same.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::crd::GrantType;
use crate::issuer::Issuer;
use crate::keys::KeyRing;

/// The identity scopes kauth implements, with what the consent page says of them.
/// `openid` itself asks for nothing beyond signing in.
pub const IDENTITY_SCOPES: &[(&str, &str)] = &[
    ("openid", "Know who you are (your account id)"),
    ("profile", "See your name and username"),
    ("email", "See your email address"),
    ("groups", "See which groups you belong to"),
    ("offline_access", "Keep access while you are away"),
];

/// The discovery document (RFC 8414 and OpenID Connect Discovery share their names) of
/// `issuer` with `keys`; `secretless` when ServiceAccount tokens are accepted as credentials.
pub fn discovery(issuer: &Issuer, keys: &KeyRing, secretless: bool, now: Timestamp) -> Value {
    let mut algs: Vec<String> = keys.published(now).map(|k| format!("{:?}", k.algorithm)).collect();
    algs.sort();
    algs.dedup();
    // private_key_jwt: a JWT client assertion signed with the client's own keys, or a
    // projected ServiceAccount token.
    let auth_methods = vec!["client_secret_basic", "client_secret_post", "private_key_jwt"];
    let mut assertion_algs = crate::client_keys::ASSERTION_ALGORITHMS.to_vec();
    if secretless {
        // ServiceAccount tokens are signed by the cluster, usually RS256.
        assertion_algs.push("RS256");
    }
    let grants: Vec<&str> = GrantType::ALL
        .into_iter()
        .filter(|g| secretless || !g.needs_cluster())
        .map(GrantType::as_str)
        .collect();
    // Public clients authenticate with none at the token endpoint (never at introspection).
    let mut token_auth_methods = auth_methods.clone();
    token_auth_methods.push("none");
    let id_token_algs: Vec<&str> = ["RS256", "ES256", "EdDSA"]
        .into_iter()
        .filter(|a| algs.iter().any(|have| have == a))
        .collect();
    json!({
        "issuer": issuer.url,
        "authorization_endpoint": issuer.endpoint("/authorize"),
        "pushed_authorization_request_endpoint": issuer.endpoint("/par"),
        "token_endpoint": issuer.endpoint("/token"),
        "device_authorization_endpoint": issuer.endpoint("/device_authorization"),
        "userinfo_endpoint": issuer.endpoint("/userinfo"),
        "end_session_endpoint": issuer.endpoint("/end_session"),
        "jwks_uri": issuer.endpoint("/jwks"),
        "introspection_endpoint": issuer.endpoint("/introspect"),
        "revocation_endpoint": issuer.endpoint("/revoke"),
        "scopes_supported": IDENTITY_SCOPES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grants,
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": crate::tokens::DPOP_ALGORITHMS,
        "token_endpoint_auth_methods_supported": token_auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": token_auth_methods,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": id_token_algs,
        "access_token_signing_alg_values_supported": algs,
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "amr", "acr", "sid",
            "name", "preferred_username", "email", "email_verified", "groups"
        ],
        "acr_values_supported": crate::second_factors::ACR_VALUES,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        // Request objects are accepted at /par only (RFC 9101 with RFC 9126), signed.
        "request_parameter_supported": false,
        "request_object_signing_alg_values_supported": crate::client_keys::ASSERTION_ALGORITHMS,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    })
}

/// Every published key (pending, active and retired), as a JWK Set.
pub fn jwks(keys: &KeyRing, now: Timestamp) -> Value {
    let keys: Vec<_> = keys.published(now).map(|k| &k.jwk).collect();
    json!({ "keys": keys })
}
