//! Who may use an access token: whoever holds it (Bearer, RFC 6750), or only the holder of the
//! key it is bound to (DPoP, RFC 9449; mutual TLS would be another binding). The token endpoint
//! asks [`Binding::of_token_request`] once per request (it verifies the `DPoP` proof there);
//! issuance writes the binding into the token (`cnf.jkt`) and names its `token_type`; the
//! grants for people keep codes and refresh families bound ([`check_grant`], [`bind_family`]);
//! resource endpoints read the presented token with [`presented`] and check it with
//! [`check_presented`]. A new kind of constraint is a variant of [`Binding`] here and its
//! confirmation in the token; the grants do not change.

use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use super::error::{OAuthError, USE_DPOP_NONCE};
use super::state::ProviderState;
use crate::registry::RegisteredClient;
use crate::store::Grant;
use crate::tokens::{AccessTokenClaims, Confirmation, DPOP_ALGORITHMS};

/// How far a proof's `iat` may be from the server's clock, either way.
pub const DPOP_IAT_WINDOW_SECS: i64 = 60;

/// Longest proof read (a JWS with one public key in its header is well under this).
const MAX_PROOF_LEN: usize = 8 * 1024;

/// What the tokens of one token request are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Nothing: whoever holds the token may use it.
    Bearer,
    /// The DPoP key with this RFC 7638 thumbprint.
    Dpop {
        /// The key's SHA-256 thumbprint (base64url).
        jkt: String,
        /// The proof's one-time record, spent once the grant succeeded ([`Binding::spend`]).
        once: (String, i64),
    },
}

impl Binding {
    /// The binding of a token request's tokens: a DPoP proof, when the request carries one,
    /// checked against the token endpoint's URL and used once; refused when the client
    /// requires DPoP and none came.
    pub async fn of_token_request(
        state: &ProviderState,
        headers: &HeaderMap,
        client: &RegisteredClient,
    ) -> Result<Self, OAuthError> {
        match proof_header(headers)? {
            Some(proof) => {
                let url = state.issuer.endpoint("/token");
                let checked = verify_proof(state, proof, &Method::POST, &url, None).await?;
                // FAPI 2.0 §5.4.1: PS256, ES256 or EdDSA only.
                if client.fapi2 && !crate::client_keys::ASSERTION_ALGORITHMS.contains(&checked.alg.as_str()) {
                    return Err(invalid_proof(format!(
                        "spec.profile FAPI2: DPoP proofs are signed PS256, ES256 or EdDSA, not {} (FAPI 2.0 §5.4.1)",
                        checked.alg
                    )));
                }
                Ok(Self::Dpop {
                    jkt: checked.jkt,
                    once: checked.once,
                })
            }
            None if client.require_dpop => Err(OAuthError::refused(
                "invalid_dpop_proof",
                if client.fapi2 {
                    "spec.profile FAPI2: tokens are sender-constrained (FAPI 2.0 §5.3.2.2): send a DPoP proof (RFC 9449)"
                } else {
                    "this client's tokens must be DPoP-bound: send a DPoP proof (RFC 9449)"
                },
            )),
            None => Ok(Self::Bearer),
        }
    }

    /// Refuses a request whose proof was spent already, before its grant runs: a replayed
    /// request must not have the grant's side effects (a reused token revoking its family).
    /// Recording the proof waits for the grant's success ([`Binding::spend`]).
    pub async fn check_unspent(&self, state: &ProviderState) -> Result<(), OAuthError> {
        let Self::Dpop { once, .. } = self else { return Ok(()) };
        let used = state
            .store
            .was_used(&once.0, jiff::Timestamp::now().as_second())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "grant store unavailable for a DPoP proof");
                OAuthError::unavailable("retry shortly")
            })?;
        if used {
            return Err(invalid_proof("this DPoP proof was already used (jti)"));
        }
        Ok(())
    }

    /// Spends the request's proof in all replicas, after its grant succeeded: refused when it
    /// was used before. A request refused earlier stores nothing (no row for a stranger's
    /// bad refresh token or code).
    pub async fn spend(&self, state: &ProviderState) -> Result<(), OAuthError> {
        match self {
            Self::Bearer => Ok(()),
            Self::Dpop { once, .. } => spend_once(state, once).await,
        }
    }

    /// The `token_type` of the token response.
    pub fn token_type(&self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::Dpop { .. } => "DPoP",
        }
    }

    /// The token's `cnf` claim.
    pub fn confirmation(&self) -> Option<Confirmation> {
        match self {
            Self::Bearer => None,
            Self::Dpop { jkt, .. } => Some(Confirmation { jkt: jkt.clone() }),
        }
    }

    /// The key's thumbprint, for a DPoP binding.
    pub fn jkt(&self) -> Option<&str> {
        match self {
            Self::Bearer => None,
            Self::Dpop { jkt, .. } => Some(jkt),
        }
    }
}

/// The key of the request's DPoP proof, when it carries one, verified for `method` at `url`
/// (at /par, it binds the code the pushed request will get, RFC 9449 §10.1).
pub async fn proof_key(
    state: &ProviderState,
    headers: &HeaderMap,
    method: &Method,
    url: &str,
) -> Result<Option<String>, OAuthError> {
    match proof_header(headers)? {
        Some(proof) => {
            let checked = verify_proof(state, proof, method, url, None).await?;
            spend_once(state, &checked.once).await?;
            Ok(Some(checked.jkt))
        }
        None => Ok(None),
    }
}

/// A code or refresh family bound to a key (`dpop_jkt` at /authorize, or a public client's
/// family) is redeemed only with a proof of that key.
pub fn check_grant(binding: &Binding, grant: &Grant) -> Result<(), OAuthError> {
    match (&grant.dpop_jkt, binding.jkt()) {
        (None, _) => Ok(()),
        (Some(bound), Some(jkt)) if bound == jkt => Ok(()),
        (Some(_), _) => Err(OAuthError::invalid_grant(
            "this grant is bound to a DPoP key: send a proof of that key",
        )),
    }
}

/// A code or refresh token bound to the key `bound` (read from the store before it is spent)
/// is refused for a request without a proof of that key, leaving it unspent: a thief without
/// the key can neither use it nor burn it.
pub fn check_bound(binding: &Binding, bound: Option<&str>) -> Result<(), OAuthError> {
    match (bound, binding.jkt()) {
        (None, _) => Ok(()),
        (Some(bound), Some(jkt)) if bound == jkt => Ok(()),
        (Some(_), _) => Err(OAuthError::invalid_grant(
            "this grant is bound to a DPoP key: send a proof of that key",
        )),
    }
}

/// The grant a refresh family keeps: a public client's family is bound to the key its first
/// tokens were (RFC 9449 §5), so a stolen refresh token is useless without it; a confidential
/// client's family is bound by its client authentication already.
pub fn bind_family(binding: &Binding, client: &RegisteredClient, grant: &Grant) -> Grant {
    let mut grant = grant.clone();
    if client.is_public()
        && let Some(jkt) = binding.jkt()
    {
        grant.dpop_jkt.get_or_insert_with(|| jkt.to_string());
    }
    grant
}

/// The `token_type` of an issued token, as introspection reports it.
pub fn token_type_of(claims: &AccessTokenClaims) -> &'static str {
    match claims.cnf {
        None => "Bearer",
        Some(_) => "DPoP",
    }
}

/// How a resource request presents its access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: DPoP` with a `DPoP` proof header.
    Dpop,
}

/// The access token a request to a resource endpoint presents, and how.
pub fn presented(headers: &HeaderMap) -> Result<(&str, Scheme), OAuthError> {
    let missing = || OAuthError::invalid_token("an access token is required (Authorization: Bearer or DPoP)");
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(missing());
    };
    Ok((token.trim(), scheme))
}

/// Whether the token may be used the way it was presented at `url` with `method`: a Bearer
/// token as Bearer; a DPoP-bound one only under the DPoP scheme with a fresh proof of its key
/// for this request and this token (`ath`).
pub async fn check_presented(
    state: &ProviderState,
    headers: &HeaderMap,
    (token, scheme): (&str, Scheme),
    claims: &AccessTokenClaims,
    method: &Method,
    url: &str,
) -> Result<(), OAuthError> {
    match (&claims.cnf, scheme) {
        (None, Scheme::Bearer) => Ok(()),
        (None, Scheme::Dpop) => Err(OAuthError::invalid_token(
            "this access token is not DPoP-bound: present it as Bearer",
        )),
        (Some(_), Scheme::Bearer) => Err(OAuthError::invalid_token(
            "this access token is DPoP-bound: present it with the DPoP scheme and a proof",
        )
        .with_dpop_challenge()),
        (Some(cnf), Scheme::Dpop) => {
            let proof = proof_header(headers)?.ok_or_else(|| {
                OAuthError::invalid_token("a DPoP proof is required with the DPoP scheme").with_dpop_challenge()
            })?;
            let ath = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()));
            let checked = verify_proof(state, proof, method, url, Some(&ath))
                .await
                .map_err(|e| at_resource(e).with_dpop_challenge())?;
            if checked.jkt != cnf.jkt {
                return Err(
                    OAuthError::invalid_token("the DPoP proof is of another key than the token's")
                        .with_dpop_challenge(),
                );
            }
            spend_once(state, &checked.once)
                .await
                .map_err(|e| at_resource(e).with_dpop_challenge())
        }
    }
}

/// A refused proof as a resource endpoint answers it (RFC 9449 §7.1): 401, `invalid_token`,
/// or `use_dpop_nonce` when only the nonce was missing.
fn at_resource(e: OAuthError) -> OAuthError {
    let code = if e.code == USE_DPOP_NONCE {
        USE_DPOP_NONCE
    } else {
        "invalid_token"
    };
    OAuthError {
        code,
        ..OAuthError::invalid_token(e.description)
    }
}

/// The one `DPoP` header of a request, if any.
fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let mut proofs = headers.get_all("dpop").iter();
    let Some(first) = proofs.next() else { return Ok(None) };
    if proofs.next().is_some() {
        return Err(invalid_proof("send one DPoP header"));
    }
    let proof = first
        .to_str()
        .map_err(|_| invalid_proof("the DPoP header is not a JWT"))?;
    if proof.len() > MAX_PROOF_LEN {
        return Err(invalid_proof("the DPoP proof is too long"));
    }
    Ok(Some(proof))
}

fn invalid_proof(d: impl Into<String>) -> OAuthError {
    OAuthError::refused("invalid_dpop_proof", d)
}

/// What a valid proof says, and the record that spends it.
struct CheckedProof {
    jkt: String,
    alg: String,
    /// Its one-time record: the digest of key and `jti`, and until when it is kept.
    once: (String, i64),
}

/// Spends a proof's one-time record in all replicas; refused when it was used before.
async fn spend_once(state: &ProviderState, (id, until): &(String, i64)) -> Result<(), OAuthError> {
    let fresh = state.store.use_once(id, *until).await.map_err(|e| {
        tracing::error!(error = %e, "grant store unavailable for a DPoP proof");
        OAuthError::unavailable("retry shortly")
    })?;
    if fresh {
        Ok(())
    } else {
        Err(invalid_proof("this DPoP proof was already used (jti)"))
    }
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Verifies a DPoP proof (RFC 9449 §4.3): `typ` dpop+jwt, an asymmetric algorithm from
/// [`DPOP_ALGORITHMS`], a public JWK in the header (no private part) that verifies the
/// signature, `htm` and `htu` of this request, `iat` within the window, `ath` when a token
/// is presented, the server's nonce when it hands them out, and a `jti` used once in every replica while the proof could be accepted.
async fn verify_proof(
    state: &ProviderState,
    proof: &str,
    method: &Method,
    url: &str,
    ath: Option<&str>,
) -> Result<CheckedProof, OAuthError> {
    let header = jsonwebtoken::decode_header(proof).map_err(|_| invalid_proof("the DPoP proof is not a JWS"))?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(invalid_proof("the DPoP proof's typ must be dpop+jwt"));
    }
    let alg_name = format!("{:?}", header.alg);
    if !DPOP_ALGORITHMS.contains(&alg_name.as_str()) {
        return Err(invalid_proof(format!(
            "DPoP proofs signed with {alg_name} are not accepted"
        )));
    }
    let jwk: Jwk = header
        .jwk
        .ok_or_else(|| invalid_proof("the DPoP proof carries no jwk"))?;
    if has_private_part(proof) {
        return Err(invalid_proof("the DPoP proof's jwk must be a public key"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid_proof("the DPoP proof's jwk is not a usable key"))?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|_| invalid_proof("the DPoP proof's signature or claims are invalid"))?
        .claims;
    if claims.htm != method.as_str() {
        // The proof's own words are not echoed: a caller could write anything there.
        return Err(invalid_proof(format!("the DPoP proof's htm is not {method}")));
    }
    if !same_url(&claims.htu, url) {
        return Err(invalid_proof("the DPoP proof is for another URL (htu)"));
    }
    let now = jiff::Timestamp::now().as_second();
    if claims.iat.abs_diff(now) > DPOP_IAT_WINDOW_SECS as u64 {
        return Err(invalid_proof(format!(
            "the DPoP proof's iat is more than {DPOP_IAT_WINDOW_SECS} s from now"
        )));
    }
    if claims.ath.as_deref() != ath {
        return Err(invalid_proof(match ath {
            Some(_) => "the DPoP proof's ath is not the hash of this access token",
            None => "a DPoP proof at the token endpoint carries no ath",
        }));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(invalid_proof("the DPoP proof needs a jti of at most 256 characters"));
    }
    // Last, so a proof refused for its nonce is right in every other way: the client's
    // retry with the nonce succeeds.
    if let Some(nonces) = &state.dpop_nonces
        && !claims.nonce.as_deref().is_some_and(|n| nonces.accepts(n, now))
    {
        return Err(OAuthError::refused(
            USE_DPOP_NONCE,
            "send a DPoP proof with the nonce of the DPoP-Nonce header (RFC 9449 §8)",
        ));
    }
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| invalid_proof("the DPoP proof's jwk has no thumbprint"))?;
    // Spent once in all replicas (`spend_once`) while its iat could be accepted: by
    // the token endpoint only after the grant succeeded, so refused requests store nothing.
    let id = crate::store::once_id("dpop", &jkt, &claims.jti);
    Ok(CheckedProof {
        jkt,
        alg: alg_name,
        once: (id, claims.iat.saturating_add(DPOP_IAT_WINDOW_SECS + 1)),
    })
}

/// True when the proof's header JWK has a private member (`d`, or RSA's primes).
fn has_private_part(proof: &str) -> bool {
    let Some(encoded) = proof.split('.').next() else {
        return true;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(encoded) else {
        return true;
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return true;
    };
    crate::client_keys::has_private_member(&header["jwk"])
}

/// RFC 9449 §4.3: `htu` matches the request's URI without query and fragment, compared after
/// normalising scheme and host case and default ports.
fn same_url(htu: &str, expected: &str) -> bool {
    match (url::Url::parse(htu), url::Url::parse(expected)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path() == b.path()
        }
        _ => false,
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
            acr: None,
        }
    }

    #[test]
    fn a_bound_token_reports_its_type() {
        let bound = claims(Some(Confirmation {
            jkt: "thumbprint".into(),
        }));
        assert_eq!(token_type_of(&bound), "DPoP");
        assert_eq!(token_type_of(&claims(None)), "Bearer");
    }

    #[test]
    fn bearer_and_dpop_schemes_present_a_token() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc ".parse().unwrap());
        assert_eq!(presented(&headers).unwrap(), ("abc", Scheme::Bearer));
        headers.insert(header::AUTHORIZATION, "DPoP abc".parse().unwrap());
        assert_eq!(presented(&headers).unwrap(), ("abc", Scheme::Dpop));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(presented(&headers).is_err());
        headers.remove(header::AUTHORIZATION);
        assert!(presented(&headers).is_err());
    }

    #[test]
    fn htu_compares_without_query_and_with_default_ports() {
        assert!(same_url(
            "https://Kauth.example.com:443/token",
            "https://kauth.example.com/token"
        ));
        assert!(same_url(
            "https://kauth.example.com/token?x=1",
            "https://kauth.example.com/token"
        ));
        assert!(!same_url(
            "https://kauth.example.com/token2",
            "https://kauth.example.com/token"
        ));
        assert!(!same_url(
            "http://kauth.example.com/token",
            "https://kauth.example.com/token"
        ));
    }
}
