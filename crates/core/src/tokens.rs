//! RFC 9068 JWT access tokens: the claims, signing, and verification against the key ring.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::{digest, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::KeyRing;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// One or several audiences; a single one serialises as a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// From a list (one element serialises as a plain string).
    pub fn from_list(mut list: Vec<String>) -> Self {
        if list.len() == 1 {
            Self::One(list.remove(0))
        } else {
            Self::Many(list)
        }
    }

    /// The audiences as a slice-like iterator.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Self::One(a) => (Some(a.as_str()), &[][..]),
            Self::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// What every client's own subject starts with. People's subjects are local usernames (no
/// ':') or `<connector>:<upstream sub>`, and no connector may be called `client`, so a token a
/// client obtains for itself never carries a person's subject (RFC 9068 §5).
pub const CLIENT_SUBJECT_PREFIX: &str = "client:";

/// The subject of tokens a client obtains for itself (client_credentials, token exchange).
pub fn client_subject(client_id: &str) -> String {
    format!("{CLIENT_SUBJECT_PREFIX}{client_id}")
}

/// Claims of a kauth access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// Subject: a person, or `client:<client id>` for a client's own tokens.
    pub sub: String,
    /// Audiences (resource indicators).
    pub aud: Audience,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Unique token id (for revocation).
    pub jti: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// What the token is bound to (RFC 7800), when it is sender-constrained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// How the person signed in (`urn:kauth:acr:1fa` or `urn:kauth:acr:mfa`; RFC 9068 §2.2.1),
    /// so an API can ask for a second factor of the people whose tokens reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

/// The algorithms of DPoP proofs kauth accepts (asymmetric only, RFC 9449 §4.3).
pub const DPOP_ALGORITHMS: &[&str] = &["ES256", "ES384", "PS256", "RS256", "EdDSA"];

/// The key a sender-constrained token is bound to (RFC 7800 `cnf`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint of a DPoP key (RFC 9449 §6.1).
    pub jkt: String,
}

/// A fresh 128-bit token id.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes).expect("the OS random number generator is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No key is in its signing period.
    #[error("no signing key is active")]
    NoActiveKey,
    /// The crypto backend failed.
    #[error("signing failed: {0}")]
    Crypto(#[from] jsonwebtoken::errors::Error),
}

/// Signs claims with the key active at `now`.
pub fn sign(keys: &KeyRing, claims: &AccessTokenClaims, now: Timestamp) -> Result<String, SignError> {
    let signer = keys.signer(now).ok_or(SignError::NoActiveKey)?;
    let mut header = Header::new(signer.algorithm);
    header.kid = Some(signer.kid.clone());
    header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
    Ok(jsonwebtoken::encode(&header, claims, &signer.encoding)?)
}

/// Claims of an OpenID Connect ID token (Core §2), plus the person's claims the granted
/// scopes release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The relying party (one audience).
    pub aud: String,
    /// Authorized party: the client, as the only audience.
    pub azp: String,
    pub iat: i64,
    pub exp: i64,
    /// When the person authenticated.
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Hash of the access token issued beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// How the person authenticated (RFC 8176), where known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The authentication context reached (`urn:kauth:acr:1fa` or `urn:kauth:acr:mfa`), for
    /// local people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The session at kauth (OIDC Back-Channel Logout 1.0 §2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Profile, email and groups claims, as the scopes allow.
    #[serde(flatten)]
    pub person: serde_json::Map<String, serde_json::Value>,
}

/// The `at_hash` of `access_token` for an ID token signed with `algorithm` (Core §3.1.3.6):
/// the left half of the hash the algorithm uses, base64url.
pub fn at_hash(algorithm: jsonwebtoken::Algorithm, access_token: &str) -> String {
    let hash = match algorithm {
        jsonwebtoken::Algorithm::EdDSA => &digest::SHA512,
        jsonwebtoken::Algorithm::ES384 | jsonwebtoken::Algorithm::RS384 | jsonwebtoken::Algorithm::PS384 => {
            &digest::SHA384
        }
        _ => &digest::SHA256,
    };
    let d = digest::digest(hash, access_token.as_bytes());
    let bytes = d.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

/// Signs an ID token with the newest key of `algorithm`, filling in `at_hash` when an access
/// token is issued beside it.
pub fn sign_id_token(
    keys: &KeyRing,
    algorithm: jsonwebtoken::Algorithm,
    mut claims: IdTokenClaims,
    access_token: Option<&str>,
    now: Timestamp,
) -> Result<String, SignError> {
    let signer = keys.signer_for(algorithm, now).ok_or(SignError::NoActiveKey)?;
    claims.at_hash = access_token.map(|t| at_hash(signer.algorithm, t));
    let mut header = Header::new(signer.algorithm);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("JWT".to_string());
    Ok(jsonwebtoken::encode(&header, &claims, &signer.encoding)?)
}

/// The claims of a JWT, read without checking anything: for a token a library or the caller
/// has verified already, or only to learn when to get another.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let part = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Reads an ID token kauth issued, as `id_token_hint` at logout: signature and issuer are
/// checked; expiry is not (a hint may be an expired token, Core RP-Initiated Logout §2).
pub fn read_id_token_hint(keys: &KeyRing, issuer: &str, token: &str, now: Timestamp) -> Option<IdTokenClaims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    // Only an ID token hints (`typ` JWT or none): not an access token, not a logout token.
    if matches!(header.typ.as_deref(), Some(ACCESS_TOKEN_TYPE) | Some("logout+jwt")) {
        return None;
    }
    let key = keys.verifier(header.kid.as_deref()?, now)?;
    if header.alg != key.algorithm {
        return None;
    }
    let mut validation = Validation::new(key.algorithm);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    Some(
        jsonwebtoken::decode::<IdTokenClaims>(token, &key.decoding, &validation)
            .ok()?
            .claims,
    )
}

/// Verifies a token's signature, issuer, type and lifetime. The algorithm comes from the key
/// named by `kid`, never from the token, so `alg: none` and algorithm confusion fail.
pub fn verify(keys: &KeyRing, issuer: &str, token: &str, now: Timestamp) -> Option<AccessTokenClaims> {
    verify_with_kid(keys, issuer, token, now).map(|(_, claims)| claims)
}

fn verify_with_kid(keys: &KeyRing, issuer: &str, token: &str, now: Timestamp) -> Option<(String, AccessTokenClaims)> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return None;
    }
    let key = keys.verifier(header.kid.as_deref()?, now)?;
    if header.alg != key.algorithm {
        return None;
    }
    let mut validation = Validation::new(key.algorithm);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<AccessTokenClaims>(token, &key.decoding, &validation)
        .ok()?
        .claims;
    (claims.exp > now.as_second()).then(|| (key.kid.clone(), claims))
}

/// SHA-256 of a token's compact serialisation.
type TokenDigest = [u8; 32];

/// The kid that verified a token, and its claims.
type Verified = (String, Arc<AccessTokenClaims>);

/// Most tokens remembered by [`VerifiedTokens`]; past it, expired entries go, then all.
const VERIFIED_CAPACITY: usize = 50_000;

/// Claims of tokens whose signature already verified. A resource server introspects the same
/// token many times over its life; a repeat then costs a SHA-256 instead of an ECDSA
/// verification. Expiry and the signing key's publication are still checked on every use.
#[derive(Clone, Default)]
pub struct VerifiedTokens {
    seen: Arc<RwLock<HashMap<TokenDigest, Verified>>>,
}

impl VerifiedTokens {
    /// Like [`verify`], remembering the result.
    pub fn verify(&self, keys: &KeyRing, issuer: &str, token: &str, now: Timestamp) -> Option<Arc<AccessTokenClaims>> {
        let id: TokenDigest = digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("32 bytes");
        if let Some((kid, claims)) = self.seen.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            let live = claims.exp > now.as_second() && keys.verifier(kid, now).is_some();
            return live.then(|| claims.clone());
        }
        let (kid, claims) = verify_with_kid(keys, issuer, token, now)?;
        let claims = Arc::new(claims);
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= VERIFIED_CAPACITY {
            seen.retain(|_, (_, c)| c.exp > now.as_second());
            if seen.len() >= VERIFIED_CAPACITY {
                seen.clear();
            }
        }
        seen.insert(id, (kid, claims.clone()));
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyAlgorithm;
    use crate::keys::{KeySet, generate_key};

    fn ring(alg: KeyAlgorithm) -> KeyRing {
        let key = generate_key(alg, Timestamp::from_second(0).unwrap()).unwrap();
        KeyRing::from_sets([&KeySet {
            keys: vec![key],
            ..Default::default()
        }])
        .0
    }

    fn claims(exp: i64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://auth".into(),
            sub: "ns.app".into(),
            aud: Audience::from_list(vec!["https://api".into()]),
            client_id: "ns.app".into(),
            scope: Some("a b".into()),
            jti: new_jti(),
            iat: 10,
            exp,
            cnf: None,
            acr: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn round_trip_and_expiry() {
        let keys = ring(KeyAlgorithm::ES256);
        let token = sign(&keys, &claims(100), at(10)).unwrap();
        let got = verify(&keys, "https://auth", &token, at(99)).unwrap();
        assert_eq!(got, claims(100).clone_with_jti(&got.jti));
        assert!(
            verify(&keys, "https://auth", &token, at(100)).is_none(),
            "expired at exp"
        );
        assert!(verify(&keys, "https://other", &token, at(50)).is_none(), "wrong issuer");
    }

    #[test]
    fn foreign_keys_unsigned_and_tampered_tokens_fail() {
        let keys = ring(KeyAlgorithm::ES256);
        let other = ring(KeyAlgorithm::ES256);
        let token = sign(&other, &claims(100), at(10)).unwrap();
        assert!(verify(&keys, "https://auth", &token, at(50)).is_none(), "unknown kid");

        let token = sign(&keys, &claims(100), at(10)).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(br#"{"iss":"https://auth","sub":"x","aud":"y","client_id":"x","jti":"j","iat":1,"exp":99999}"#);
        parts[1] = &forged;
        assert!(
            verify(&keys, "https://auth", &parts.join("."), at(50)).is_none(),
            "tampered payload"
        );

        let kid = keys.signer(at(10)).unwrap().kid.clone();
        let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#));
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert!(verify(&keys, "https://auth", &unsigned, at(50)).is_none(), "alg none");
        let hs_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#));
        assert!(
            verify(&keys, "https://auth", &format!("{hs_header}.{}.AAAA", parts[1]), at(50)).is_none(),
            "alg confusion"
        );
    }

    #[test]
    fn remembered_tokens_still_expire_and_follow_key_removal() {
        let keys = ring(KeyAlgorithm::ES256);
        let cache = VerifiedTokens::default();
        let token = sign(&keys, &claims(100), at(10)).unwrap();
        assert!(cache.verify(&keys, "https://auth", &token, at(50)).is_some());
        assert!(
            cache.verify(&keys, "https://auth", &token, at(60)).is_some(),
            "served from the cache"
        );
        assert!(
            cache.verify(&keys, "https://auth", &token, at(100)).is_none(),
            "expiry is checked on hits"
        );
        let other = ring(KeyAlgorithm::ES256);
        assert!(
            cache.verify(&other, "https://auth", &token, at(60)).is_none(),
            "its key must still be published"
        );
        assert!(cache.verify(&keys, "https://auth", "not-a-token", at(60)).is_none());
    }

    impl AccessTokenClaims {
        fn clone_with_jti(&self, jti: &str) -> Self {
            Self {
                jti: jti.to_string(),
                ..self.clone()
            }
        }
    }
}
