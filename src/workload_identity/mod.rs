//! Workload identity: a pod's projected ServiceAccount token as its client credential
//! (RFC 7523 client assertion, and the subject of an RFC 8693 token exchange). Tokens are
//! verified offline against the cluster's service-account issuer keys, which are cached and
//! fetched again (at most once per interval) when a token names an unknown key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

pub use kauth_core::service_account::ServiceAccountRef;

mod kube_adapters;
pub use kube_adapters::{KubeIssuerKeys, KubeTokenReviewer};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The token exchange grant type (RFC 8693).
pub const TOKEN_EXCHANGE_GRANT: &str = crate::crd::GrantType::TokenExchange.as_str();
/// Token type of a JWT subject token (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Token type of an issued access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Allowed clock difference for `exp` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Shortest interval between two key fetches, so unknown kids cannot flood the issuer.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Why a ServiceAccount token was refused. Callers answer every one with `invalid_client`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a JWT.
    #[error("the assertion is not a JWT")]
    Malformed,
    /// No `kid` in the header.
    #[error("the assertion has no key id")]
    MissingKid,
    /// The key is not among the issuer's keys, even after fetching them again.
    #[error("the assertion is signed by an unknown key")]
    UnknownKey,
    /// The header's algorithm is not the key's (or is none/HMAC).
    #[error("the assertion's algorithm does not match its key")]
    AlgorithmMismatch,
    /// Signature, issuer, audience, expiry or subject is wrong.
    #[error("the assertion is not valid: {0}")]
    Invalid(&'static str),
    /// Workload identity is not configured.
    #[error("ServiceAccount tokens are not accepted by this provider")]
    Disabled,
}

/// Where the issuer's public keys come from.
pub trait KeySource: Send + Sync {
    /// Fetches the current JWKS.
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>>;
}

/// Asks the cluster whether a token is still valid (TokenReview): a pod-bound token stops
/// being valid when its pod (or other bound object) is deleted, which a signature cannot tell.
/// The apiserver itself remembers positive answers for about 10 s.
pub trait TokenReviewer: Send + Sync {
    /// The username the token authenticates as, or None when the cluster refuses it.
    fn review<'a>(&'a self, token: &'a str, audiences: &'a [String]) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// How long a TokenReview answer is reused.
pub const REVIEW_CACHE_TTL: Duration = Duration::from_secs(5);

/// Verifies ServiceAccount tokens.
pub struct ServiceAccountTokens {
    issuer: String,
    audiences: Vec<String>,
    source: Arc<dyn KeySource>,
    keys: RwLock<Arc<JwkSet>>,
    last_fetch: Mutex<Option<Instant>>,
    reviewer: Option<Arc<dyn TokenReviewer>>,
    reviewed: RwLock<HashMap<[u8; 32], (bool, Instant)>>,
    max_lifetime: Duration,
}

/// Longest lifetime (`exp - iat`) of a ServiceAccount token kauth accepts by default: the
/// kubelet's projected tokens last an hour unless asked otherwise, and a stolen token should
/// not work for a year.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iat: Option<u64>,
    exp: u64,
}

/// The algorithm a published key is used with; symmetric keys are refused outright.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

impl ServiceAccountTokens {
    /// A verifier for tokens of `issuer` addressed to one of `audiences`.
    pub fn new(issuer: String, audiences: Vec<String>, source: Arc<dyn KeySource>) -> Self {
        Self {
            issuer,
            audiences,
            source,
            keys: RwLock::new(Arc::new(JwkSet { keys: vec![] })),
            last_fetch: Mutex::new(None),
            reviewer: None,
            reviewed: RwLock::new(HashMap::new()),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// Refuses tokens that live longer than `max` (`exp - iat`).
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max;
        self
    }

    /// Also asks the cluster (TokenReview) whether each token is still valid, answers cached
    /// for [`REVIEW_CACHE_TTL`].
    pub fn with_token_review(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// The cluster's answer for a token that verified offline as `sa`.
    async fn still_valid(
        &self,
        reviewer: &dyn TokenReviewer,
        token: &str,
        sa: &ServiceAccountRef,
    ) -> Result<bool, AssertionError> {
        let id: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("32 bytes");
        if let Some((valid, at)) = self.reviewed.read().unwrap_or_else(|p| p.into_inner()).get(&id)
            && at.elapsed() < REVIEW_CACHE_TTL
        {
            return Ok(*valid);
        }
        let username = reviewer.review(token, &self.audiences).await.map_err(|e| {
            tracing::warn!(error = %e, "TokenReview failed");
            AssertionError::Invalid("the cluster could not review the token")
        })?;
        let expected = format!("system:serviceaccount:{}:{}", sa.namespace, sa.name);
        let valid = username.as_deref() == Some(expected.as_str());
        let mut reviewed = self.reviewed.write().unwrap_or_else(|p| p.into_inner());
        reviewed.retain(|_, (_, at)| at.elapsed() < REVIEW_CACHE_TTL);
        reviewed.insert(id, (valid, Instant::now()));
        Ok(valid)
    }

    /// Fetches the keys (rate-limited); returns whether a fetch happened and succeeded.
    pub async fn refresh(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match self.source.fetch().await {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), issuer = %self.issuer, "fetched the ServiceAccount issuer's keys");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the ServiceAccount issuer's keys");
                false
            }
        }
    }

    fn key(&self, kid: &str) -> Option<Jwk> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).find(kid).cloned()
    }

    /// Verifies a token at Unix time `now` and returns its ServiceAccount.
    pub async fn verify(&self, token: &str, now: u64) -> Result<ServiceAccountRef, AssertionError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AssertionError::Malformed)?;
        let kid = header.kid.ok_or(AssertionError::MissingKid)?;
        let jwk = match self.key(&kid) {
            Some(jwk) => jwk,
            None => {
                self.refresh().await;
                self.key(&kid).ok_or(AssertionError::UnknownKey)?
            }
        };
        let alg = algorithm_of(&jwk).ok_or(AssertionError::AlgorithmMismatch)?;
        if header.alg != alg {
            return Err(AssertionError::AlgorithmMismatch);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| AssertionError::UnknownKey)?;
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = CLOCK_SKEW.as_secs();
        v.validate_nbf = true;
        let claims = decode_at::<Claims>(token, &key, &v, now).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AssertionError::Invalid("expired"),
            ErrorKind::ImmatureSignature => AssertionError::Invalid("not yet valid"),
            ErrorKind::InvalidIssuer => AssertionError::Invalid("wrong issuer"),
            ErrorKind::InvalidAudience => AssertionError::Invalid("wrong audience"),
            ErrorKind::InvalidSignature => AssertionError::Invalid("bad signature"),
            ErrorKind::InvalidAlgorithm => AssertionError::AlgorithmMismatch,
            _ => AssertionError::Invalid("malformed claims"),
        })?;
        let lifetime = claims
            .iat
            .map(|iat| claims.exp.saturating_sub(iat))
            .ok_or(AssertionError::Invalid("no iat: the token's lifetime is unknown"))?;
        if lifetime > self.max_lifetime.as_secs() {
            return Err(AssertionError::Invalid(
                "the token lives too long: mount one with a shorter expirationSeconds",
            ));
        }
        let sa = ServiceAccountRef::from_subject(&claims.sub)
            .ok_or(AssertionError::Invalid("subject is not a ServiceAccount"))?;
        if let Some(reviewer) = &self.reviewer
            && !self.still_valid(reviewer.as_ref(), token, &sa).await?
        {
            return Err(AssertionError::Invalid(
                "the cluster no longer accepts the token (its pod or bound object is gone)",
            ));
        }
        Ok(sa)
    }
}

/// jsonwebtoken checks `exp`/`nbf` against the system clock; tests pass their own `now`
/// by checking the time claims here first and letting jsonwebtoken do the rest.
fn decode_at<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    v: &Validation,
    now: u64,
) -> Result<T, jsonwebtoken::errors::Error> {
    #[derive(Deserialize)]
    struct Times {
        exp: Option<u64>,
        nbf: Option<u64>,
    }
    let mut system_clock = v.clone();
    system_clock.validate_exp = false;
    system_clock.validate_nbf = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &system_clock)?;
    let times: Times = serde_json::from_value(data.claims.clone()).map_err(|_| ErrorKind::InvalidToken)?;
    let exp = times.exp.ok_or(ErrorKind::MissingRequiredClaim("exp".into()))?;
    if exp + v.leeway <= now {
        return Err(ErrorKind::ExpiredSignature.into());
    }
    if times.nbf.is_some_and(|nbf| nbf > now + v.leeway) {
        return Err(ErrorKind::ImmatureSignature.into());
    }
    serde_json::from_value(data.claims).map_err(|_| ErrorKind::InvalidToken.into())
}

/// A fixed key set (tests, and keys supplied from a file).
pub struct StaticKeys(pub RwLock<JwkSet>);

impl KeySource for StaticKeys {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move { Ok(set) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyAlgorithm;
    use crate::keys::generate_key;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jiff::Timestamp;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://kubernetes.default.svc";
    const AUD: &str = "https://auth.example.com";
    const NOW: u64 = 1_800_000_000;

    struct Signer {
        kid: String,
        key: EncodingKey,
        jwk: Jwk,
    }

    fn signer(alg: KeyAlgorithm) -> Signer {
        let stored = generate_key(alg, Timestamp::from_second(0).unwrap()).unwrap();
        Signer {
            kid: stored.kid.clone(),
            key: stored.encoding_key().unwrap(),
            jwk: stored.public_jwk().unwrap(),
        }
    }

    fn sign(s: &Signer, alg: Algorithm, claims: serde_json::Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(s.kid.clone());
        jsonwebtoken::encode(&h, &claims, &s.key).unwrap()
    }

    fn claims(sub: &str, exp: u64) -> serde_json::Value {
        json!({"iss": ISSUER, "aud": [AUD], "sub": sub, "exp": exp, "iat": NOW - 60, "nbf": NOW - 60})
    }

    fn verifier(keys: &[&Signer]) -> ServiceAccountTokens {
        let set = JwkSet {
            keys: keys.iter().map(|s| s.jwk.clone()).collect(),
        };
        ServiceAccountTokens::new(ISSUER.into(), vec![AUD.into()], Arc::new(StaticKeys(RwLock::new(set))))
    }

    const SUB: &str = "system:serviceaccount:shop:backend";

    #[tokio::test]
    async fn long_lived_tokens_and_tokens_without_iat_are_refused() {
        let s = signer(KeyAlgorithm::ES256);
        let v = verifier(&[&s]);
        let mut long = claims("system:serviceaccount:shop:backend", NOW + 600);
        long["iat"] = json!(NOW + 600 - 3601);
        assert_eq!(
            v.verify(&sign(&s, Algorithm::ES256, long.clone()), NOW).await,
            Err(AssertionError::Invalid(
                "the token lives too long: mount one with a shorter expirationSeconds"
            ))
        );
        long["iat"] = json!(NOW + 600 - 3600);
        assert!(
            v.verify(&sign(&s, Algorithm::ES256, long.clone()), NOW).await.is_ok(),
            "an hour is fine"
        );
        long.as_object_mut().unwrap().remove("iat");
        assert!(v.verify(&sign(&s, Algorithm::ES256, long), NOW).await.is_err());
    }

    #[tokio::test]
    async fn a_valid_token_names_its_service_account() {
        let s = signer(KeyAlgorithm::RS256);
        let v = verifier(&[&s]);
        let got = v
            .verify(&sign(&s, Algorithm::RS256, claims(SUB, NOW + 600)), NOW)
            .await
            .unwrap();
        assert_eq!(
            got,
            ServiceAccountRef {
                namespace: "shop".into(),
                name: "backend".into()
            }
        );
    }

    #[tokio::test]
    async fn issuer_audience_subject_and_signature_are_checked() {
        let s = signer(KeyAlgorithm::ES256);
        let v = verifier(&[&s]);
        let mut c = claims(SUB, NOW + 600);
        c["iss"] = json!("https://other");
        assert_eq!(
            v.verify(&sign(&s, Algorithm::ES256, c), NOW).await,
            Err(AssertionError::Invalid("wrong issuer"))
        );
        let mut c = claims(SUB, NOW + 600);
        c["aud"] = json!(["https://elsewhere"]);
        assert_eq!(
            v.verify(&sign(&s, Algorithm::ES256, c), NOW).await,
            Err(AssertionError::Invalid("wrong audience"))
        );
        let c = claims("system:node:worker", NOW + 600);
        assert!(v.verify(&sign(&s, Algorithm::ES256, c), NOW).await.is_err());
        let stranger = signer(KeyAlgorithm::ES256);
        let mut forged = sign(&stranger, Algorithm::ES256, claims(SUB, NOW + 600));
        forged = forged.replace(&stranger.kid, &s.kid);
        let parts: Vec<&str> = forged.split('.').collect();
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, s.kid));
        let forged = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            v.verify(&forged, NOW).await,
            Err(AssertionError::Invalid("bad signature"))
        );
    }

    #[tokio::test]
    async fn alg_none_confusion_and_missing_kid_are_refused() {
        let s = signer(KeyAlgorithm::RS256);
        let v = verifier(&[&s]);
        let payload = URL_SAFE_NO_PAD.encode(claims(SUB, NOW + 600).to_string());
        let none = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, s.kid));
        assert!(v.verify(&format!("{none}.{payload}."), NOW).await.is_err(), "alg none");
        // HS256 "signed" with the public key's bytes: the classic confusion attack.
        let public = serde_json::to_vec(&s.jwk).unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(s.kid.clone());
        let hs = jsonwebtoken::encode(&h, &claims(SUB, NOW + 600), &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(v.verify(&hs, NOW).await, Err(AssertionError::AlgorithmMismatch));
        // An RSA key used with ES256 in the header.
        let es = signer(KeyAlgorithm::ES256);
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(s.kid.clone());
        let mixed = jsonwebtoken::encode(&h, &claims(SUB, NOW + 600), &es.key).unwrap();
        assert_eq!(v.verify(&mixed, NOW).await, Err(AssertionError::AlgorithmMismatch));
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(SUB, NOW + 600), &s.key).unwrap();
        assert_eq!(v.verify(&no_kid, NOW).await, Err(AssertionError::MissingKid));
        assert_eq!(v.verify("not.a.jwt", NOW).await, Err(AssertionError::Malformed));
    }

    #[tokio::test]
    async fn clock_skew_is_bounded() {
        let s = signer(KeyAlgorithm::ES256);
        let v = verifier(&[&s]);
        let skew = CLOCK_SKEW.as_secs();
        assert!(
            v.verify(&sign(&s, Algorithm::ES256, claims(SUB, NOW - skew + 1)), NOW)
                .await
                .is_ok(),
            "just inside the skew"
        );
        assert_eq!(
            v.verify(&sign(&s, Algorithm::ES256, claims(SUB, NOW - skew)), NOW)
                .await,
            Err(AssertionError::Invalid("expired"))
        );
        let mut early = claims(SUB, NOW + 600);
        early["nbf"] = json!(NOW + skew - 1);
        assert!(v.verify(&sign(&s, Algorithm::ES256, early.clone()), NOW).await.is_ok());
        early["nbf"] = json!(NOW + skew + 1);
        assert_eq!(
            v.verify(&sign(&s, Algorithm::ES256, early), NOW).await,
            Err(AssertionError::Invalid("not yet valid"))
        );
    }

    #[tokio::test]
    async fn unknown_kid_fetches_keys_again_at_most_once_per_interval() {
        let old = signer(KeyAlgorithm::ES256);
        let new = signer(KeyAlgorithm::ES256);
        let source = Arc::new(StaticKeys(RwLock::new(JwkSet {
            keys: vec![old.jwk.clone()],
        })));
        let v = ServiceAccountTokens::new(ISSUER.into(), vec![AUD.into()], source.clone());
        assert!(
            v.verify(&sign(&old, Algorithm::ES256, claims(SUB, NOW + 600)), NOW)
                .await
                .is_ok()
        );
        // The issuer rotates; the next unknown kid is within the interval of the first fetch.
        source.0.write().unwrap().keys.push(new.jwk.clone());
        assert_eq!(
            v.verify(&sign(&new, Algorithm::ES256, claims(SUB, NOW + 600)), NOW)
                .await,
            Err(AssertionError::UnknownKey)
        );
        *v.last_fetch.lock().await = Some(Instant::now() - MIN_REFRESH_INTERVAL);
        assert!(
            v.verify(&sign(&new, Algorithm::ES256, claims(SUB, NOW + 600)), NOW)
                .await
                .is_ok(),
            "refetched on unknown kid"
        );
    }

    struct Reviewer(std::sync::Mutex<(Option<String>, usize)>);

    impl TokenReviewer for Reviewer {
        fn review<'a>(&'a self, _: &'a str, _: &'a [String]) -> BoxFuture<'a, Result<Option<String>, String>> {
            let mut state = self.0.lock().unwrap();
            state.1 += 1;
            let answer = state.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn token_review_refuses_tokens_the_cluster_revoked_and_caches_briefly() {
        let s = signer(KeyAlgorithm::ES256);
        let reviewer = Arc::new(Reviewer(std::sync::Mutex::new((Some(SUB.to_string()), 0))));
        let v = verifier(&[&s]).with_token_review(reviewer.clone());
        let token = sign(&s, Algorithm::ES256, claims(SUB, NOW + 600));
        assert!(v.verify(&token, NOW).await.is_ok());
        assert!(v.verify(&token, NOW).await.is_ok());
        assert_eq!(reviewer.0.lock().unwrap().1, 1, "the second answer came from the cache");
        // The bound pod is deleted: the cluster stops vouching for the token.
        reviewer.0.lock().unwrap().0 = None;
        v.reviewed.write().unwrap().clear();
        assert!(matches!(v.verify(&token, NOW).await, Err(AssertionError::Invalid(_))));
        // A token the cluster attributes to someone else is refused too.
        reviewer.0.lock().unwrap().0 = Some("system:serviceaccount:shop:other".into());
        v.reviewed.write().unwrap().clear();
        assert!(v.verify(&token, NOW).await.is_err());
    }

    #[test]
    fn subjects() {
        assert_eq!(
            ServiceAccountRef::from_subject("system:serviceaccount:a:b")
                .unwrap()
                .name,
            "b"
        );
        assert!(ServiceAccountRef::from_subject("system:serviceaccount:a").is_none());
        assert!(ServiceAccountRef::from_subject("system:serviceaccount:a:b:c").is_none());
        assert!(ServiceAccountRef::from_subject("system:serviceaccount::b").is_none());
    }
}
