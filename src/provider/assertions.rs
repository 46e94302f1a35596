//! Client assertions signed with a client's own keys (`private_key_jwt`, RFC 7523 §2.2): the
//! keys an OAuthClient registers inline or publishes at its `jwksUri` (`client_key_cache.rs`).
//! An assertion names its client in `iss` and `sub`; it is refused unless one of that
//! client's keys signed it with an accepted algorithm, `aud` is the issuer, it expires within
//! ten minutes, and its `jti` is used once in all replicas.

use std::sync::Arc;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use super::error::OAuthError;
use super::state::ProviderState;
use crate::client_keys::{ASSERTION_ALGORITHMS, ClientKeys};
use crate::registry::{ClientCredential, RegisteredClient, Snapshot};

/// Longest an assertion may live (`exp` from now): its `jti` is kept that long.
const MAX_ASSERTION_LIFETIME: i64 = 600;
/// How far `iat` may be ahead of the server's clock.
const CLOCK_SKEW: i64 = 60;

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
    sub: Option<String>,
}

/// The `private_key_jwt` client an assertion names (`iss` and `sub`, equal), when there is
/// one: other assertions (ServiceAccount tokens) are for the caller to try.
pub fn claimed_client(snapshot: &Snapshot, assertion: &str) -> Option<Arc<RegisteredClient>> {
    let claims: Unverified = jsonwebtoken::dangerous::insecure_decode(assertion).ok()?.claims;
    let (iss, sub) = (claims.iss?, claims.sub?);
    let client = snapshot.clients.get(&iss)?;
    (iss == sub && matches!(client.credential, ClientCredential::Keys(_))).then(|| client.clone())
}

#[derive(Deserialize)]
struct AssertionClaims {
    jti: String,
    exp: i64,
    aud: serde_json::Value,
    #[serde(default)]
    iat: Option<i64>,
}

/// The claims of a JWT signed by one of `client`'s keys with an accepted algorithm, as
/// `configure` sets up the validation (made for the JWT's algorithm, no leeway); why not
/// otherwise. Client assertions and request objects (`request_object.rs`) are both such JWTs.
pub(super) async fn verify_signed<T: serde::de::DeserializeOwned>(
    state: &ProviderState,
    client: &RegisteredClient,
    jwt: &str,
    configure: impl FnOnce(&mut Validation),
) -> Result<T, String> {
    let ClientCredential::Keys(registered) = &client.credential else {
        return Err("this client has no keys (spec.jwks or spec.jwksUri)".into());
    };
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "not a JWS".to_string())?;
    let alg = format!("{:?}", header.alg);
    if !ASSERTION_ALGORITHMS.contains(&alg.as_str()) {
        return Err(format!(
            "alg {alg} is not accepted (use one of {})",
            ASSERTION_ALGORITHMS.join(", ")
        ));
    }
    let keys: Arc<Vec<Jwk>> = match registered {
        ClientKeys::Inline(keys) => Arc::new(keys.clone()),
        ClientKeys::Uri(uri) => state
            .client_keys
            .keys(uri, header.kid.as_deref())
            .await
            .inspect_err(|e| {
                tracing::info!(client_id = %client.client_id, error = %e, "client keys unavailable");
            })?,
    };
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = 0;
    configure(&mut validation);
    keys.iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .find_map(|key| jsonwebtoken::decode::<T>(jwt, &key, &validation).ok())
        .map(|data| data.claims)
        .ok_or_else(|| "no key of this client verifies it, or its iss, sub, aud or exp are wrong".into())
}

/// Verifies a client assertion for `client` (already named by it).
pub async fn verify(state: &ProviderState, client: &RegisteredClient, assertion: &str) -> Result<(), OAuthError> {
    let refused = |why: &str| OAuthError::invalid_client(format!("client assertion refused: {why}"));
    let issuer = state.issuer.url.clone();
    let endpoints: Vec<String> = ["/token", "/par", "/introspect", "/revoke"]
        .iter()
        .map(|p| state.issuer.endpoint(p))
        .collect();
    // FAPI 2.0 §5.3.2.1 (and RFC 7523bis): the issuer, as a single string.
    let strict = state.strict_assertion_audience || client.fapi2;
    let claims: AssertionClaims = verify_signed(state, client, assertion, |validation| {
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.set_issuer(&[&client.client_id]);
        validation.sub = Some(client.client_id.clone());
        let mut audiences = vec![issuer.as_str()];
        if !strict {
            audiences.extend(endpoints.iter().map(String::as_str));
        }
        validation.set_audience(&audiences);
    })
    .await
    .map_err(|e| refused(&e))?;
    if client.fapi2 && !claims.aud.is_string() {
        return Err(refused(
            "spec.profile FAPI2: aud must be the issuer as a single string (FAPI 2.0 §5.3.2.1)",
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    if claims.exp.saturating_sub(now) > MAX_ASSERTION_LIFETIME {
        return Err(refused("it lives longer than ten minutes (exp)"));
    }
    if claims.iat.is_some_and(|iat| iat.saturating_sub(now) > CLOCK_SKEW) {
        return Err(refused("it was issued in the future (iat)"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(refused("it needs a jti of at most 256 characters"));
    }
    // Once in all replicas while it could still be accepted.
    let id = crate::store::once_id("assertion", &client.client_id, &claims.jti);
    let fresh = state
        .store
        .use_once(&id, claims.exp.saturating_add(1))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "grant store unavailable for a client assertion");
            OAuthError::unavailable("retry shortly")
        })?;
    if !fresh {
        return Err(refused("it was already used (jti)"));
    }
    Ok(())
}
