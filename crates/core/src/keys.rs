//! Signing keys: generation, the rotation timeline, and the material the provider signs and
//! verifies with. A key's state is a pure function of its timestamps, so the provider picks
//! the right key even when the controller is late.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm as JwkAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::crd::KeyAlgorithm;
use crate::validation::KeySchedule;

/// One private key with its timeline, as stored in the SigningKey's Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// Signature algorithm.
    pub algorithm: KeyAlgorithm,
    /// PKCS#8 PEM private key.
    pub private_pem: String,
    /// When the key starts signing.
    pub activates_at: Timestamp,
    /// When it stops signing (set once its successor is scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<Timestamp>,
    /// When it leaves the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_at: Option<Timestamp>,
}

/// A key's state at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing.
    Active,
    /// Published so tokens it signed still verify; no longer signing.
    Retired,
    /// Past its removal time.
    Removed,
}

impl KeyState {
    /// Name used in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Active => "Active",
            Self::Retired => "Retired",
            Self::Removed => "Removed",
        }
    }
}

impl StoredKey {
    /// State of the key at `now`.
    pub fn state(&self, now: Timestamp) -> KeyState {
        if self.remove_at.is_some_and(|t| now >= t) {
            KeyState::Removed
        } else if self.retires_at.is_some_and(|t| now >= t) {
            KeyState::Retired
        } else if now >= self.activates_at {
            KeyState::Active
        } else {
            KeyState::Pending
        }
    }

    /// The private key as jsonwebtoken uses it.
    pub fn encoding_key(&self) -> Result<EncodingKey, KeyError> {
        let pem = self.private_pem.as_bytes();
        let key = match self.algorithm {
            KeyAlgorithm::ES256 => EncodingKey::from_ec_pem(pem),
            KeyAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            KeyAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        };
        key.map_err(|e| KeyError(format!("key {}: unreadable private key: {e}", self.kid)))
    }

    /// The public key as a JWK with kid, alg and use.
    pub fn public_jwk(&self) -> Result<Jwk, KeyError> {
        public_jwk(&self.encoding_key()?, self.algorithm)
    }
}

/// A key that cannot be generated or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The JOSE algorithm for a key algorithm.
pub fn jose_algorithm(alg: KeyAlgorithm) -> Algorithm {
    match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn public_jwk(key: &EncodingKey, alg: KeyAlgorithm) -> Result<Jwk, KeyError> {
    let mut jwk = Jwk::from_encoding_key(key, jose_algorithm(alg))
        .map_err(|e| KeyError(format!("cannot derive public key: {e}")))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| KeyError(format!("cannot compute key id: {e}")))?;
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match alg {
        KeyAlgorithm::ES256 => JwkAlgorithm::ES256,
        KeyAlgorithm::RS256 => JwkAlgorithm::RS256,
        KeyAlgorithm::EdDSA => JwkAlgorithm::EdDSA,
    });
    Ok(jwk)
}

/// Generates a new private key that starts signing at `activates_at`.
pub fn generate_key(alg: KeyAlgorithm, activates_at: Timestamp) -> Result<StoredKey, KeyError> {
    let fail = |what: &str| KeyError(format!("cannot generate {} key: {what}", alg.as_str()));
    let der: Vec<u8> = match alg {
        KeyAlgorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail("EC"))?
            .as_ref()
            .to_vec(),
        KeyAlgorithm::EdDSA => Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail("Ed25519"))?
            .as_ref()
            .to_vec(),
        KeyAlgorithm::RS256 => aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map_err(|_| fail("RSA"))?
            .as_ref()
            .to_vec(),
    };
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    let mut key = StoredKey {
        kid: String::new(),
        algorithm: alg,
        private_pem,
        activates_at,
        retires_at: None,
        remove_at: None,
    };
    let jwk = key.public_jwk()?;
    key.kid = jwk.common.key_id.unwrap_or_default();
    Ok(key)
}

/// The keys of one SigningKey resource, stored as JSON in its Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Keys, oldest first.
    pub keys: Vec<StoredKey>,
    /// The `rotation.trigger` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

/// A change the rotation plan made, for Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// A key was generated and published; it signs from `activates_at`.
    Generated { kid: String, activates_at: Timestamp },
    /// A retired key left the JWKS.
    Removed { kid: String },
    /// A key was retired and left the JWKS at once (`retireImmediately`): what it signed no
    /// longer verifies.
    RetiredAtOnce { kid: String },
}

/// The outcome of planning a key set at a point in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPlan {
    /// The key set to store.
    pub keys: KeySet,
    /// What changed (empty: nothing to write).
    pub changes: Vec<KeyChange>,
    /// When the timeline next needs attention.
    pub next_step: Option<Timestamp>,
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN)
}

/// Advances a key set to `now`: drops keys past removal, creates the first key, schedules a
/// successor `publish_ahead` before the active key's period ends (or at once when the
/// algorithm changed), and retires the predecessor when the successor activates.
pub fn plan_keys(
    alg: KeyAlgorithm,
    schedule: &KeySchedule,
    current: &KeySet,
    now: Timestamp,
) -> Result<KeyPlan, KeyError> {
    let mut keys = current.clone();
    let mut changes = Vec::new();
    keys.keys.retain(|k| {
        let keep = k.state(now) != KeyState::Removed;
        if !keep {
            changes.push(KeyChange::Removed { kid: k.kid.clone() });
        }
        keep
    });

    // A new trigger rotates once; on the first plan it is only recorded.
    if schedule.trigger.is_some() && schedule.trigger != keys.trigger {
        let first = keys.keys.is_empty();
        keys.trigger = schedule.trigger.clone();
        if !first && schedule.retire_immediately {
            let key = generate_key(alg, now)?;
            for old in keys.keys.drain(..) {
                changes.push(KeyChange::RetiredAtOnce { kid: old.kid });
            }
            changes.push(KeyChange::Generated {
                kid: key.kid.clone(),
                activates_at: now,
            });
            keys.keys.push(key);
        } else if !first {
            let activates_at = plus(now, schedule.publish_ahead);
            let key = generate_key(alg, activates_at)?;
            for old in keys
                .keys
                .iter_mut()
                .filter(|k| k.retires_at.is_none_or(|r| r > activates_at))
            {
                old.retires_at = Some(activates_at.max(old.activates_at));
                old.remove_at = Some(plus(activates_at, schedule.retain_after));
            }
            changes.push(KeyChange::Generated {
                kid: key.kid.clone(),
                activates_at,
            });
            keys.keys.push(key);
        }
    }

    let active = keys
        .keys
        .iter()
        .filter(|k| k.state(now) == KeyState::Active)
        .max_by_key(|k| k.activates_at)
        .cloned();
    let pending = keys.keys.iter().any(|k| k.state(now) == KeyState::Pending);
    let mut successor_due: Option<Timestamp> = None;
    match &active {
        None if !pending => {
            let key = generate_key(alg, now)?;
            changes.push(KeyChange::Generated {
                kid: key.kid.clone(),
                activates_at: now,
            });
            keys.keys.push(key);
            successor_due = schedule
                .every
                .map(|every| minus(plus(now, every), schedule.publish_ahead));
        }
        Some(active) if !pending => {
            let period_end = schedule.every.map(|every| plus(active.activates_at, every));
            let rotate_at = if active.algorithm != alg {
                Some(now)
            } else {
                period_end.map(|end| minus(end, schedule.publish_ahead))
            };
            match rotate_at {
                Some(at) if now >= at => {
                    // Never sign with a key before it has been published for publish_ahead.
                    let activates_at = period_end
                        .filter(|_| active.algorithm == alg)
                        .unwrap_or(now)
                        .max(plus(now, schedule.publish_ahead));
                    let key = generate_key(alg, activates_at)?;
                    changes.push(KeyChange::Generated {
                        kid: key.kid.clone(),
                        activates_at,
                    });
                    if let Some(old) = keys.keys.iter_mut().find(|k| k.kid == active.kid) {
                        old.retires_at = Some(activates_at);
                        old.remove_at = Some(plus(activates_at, schedule.retain_after));
                    }
                    keys.keys.push(key);
                }
                Some(at) => successor_due = Some(at),
                None => {}
            }
        }
        _ => {}
    }

    let next_step = keys
        .keys
        .iter()
        .flat_map(|k| [Some(k.activates_at), k.retires_at, k.remove_at])
        .flatten()
        .chain(successor_due)
        .filter(|t| *t > now)
        .min();
    Ok(KeyPlan {
        keys,
        changes,
        next_step,
    })
}

/// A key ready to sign.
#[derive(Clone)]
pub struct SigningKeyMaterial {
    /// Key id (JWS header `kid`).
    pub kid: String,
    /// JOSE algorithm.
    pub algorithm: Algorithm,
    /// Private key.
    pub encoding: EncodingKey,
    /// Start of its signing period.
    pub activates_at: Timestamp,
    /// End of its signing period.
    pub retires_at: Option<Timestamp>,
}

/// A published key, for JWKS and token verification.
#[derive(Clone)]
pub struct VerificationKey {
    /// Key id.
    pub kid: String,
    /// JOSE algorithm the key is used with (never taken from a token header).
    pub algorithm: Algorithm,
    /// Public key.
    pub decoding: DecodingKey,
    /// Public JWK for the JWKS document.
    pub jwk: Jwk,
    /// When it leaves the JWKS.
    pub remove_at: Option<Timestamp>,
}

/// All keys the provider knows: who signs when, and what verifies.
#[derive(Clone, Default)]
pub struct KeyRing {
    signers: Vec<SigningKeyMaterial>,
    verifiers: Vec<VerificationKey>,
}

impl KeyRing {
    /// Builds the ring from stored key sets, skipping (and reporting) unreadable keys.
    pub fn from_sets<'a>(sets: impl IntoIterator<Item = &'a KeySet>) -> (Self, Vec<KeyError>) {
        let mut ring = Self::default();
        let mut errors = Vec::new();
        for key in sets.into_iter().flat_map(|s| &s.keys) {
            let built = key.encoding_key().and_then(|enc| {
                let jwk = public_jwk(&enc, key.algorithm)?;
                let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError(format!("key {}: {e}", key.kid)))?;
                Ok((enc, jwk, decoding))
            });
            match built {
                Ok((encoding, jwk, decoding)) => {
                    let algorithm = jose_algorithm(key.algorithm);
                    ring.signers.push(SigningKeyMaterial {
                        kid: key.kid.clone(),
                        algorithm,
                        encoding,
                        activates_at: key.activates_at,
                        retires_at: key.retires_at,
                    });
                    ring.verifiers.push(VerificationKey {
                        kid: key.kid.clone(),
                        algorithm,
                        decoding,
                        jwk,
                        remove_at: key.remove_at,
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        (ring, errors)
    }

    fn active(&self, now: Timestamp) -> impl Iterator<Item = &SigningKeyMaterial> {
        self.signers
            .iter()
            .filter(move |k| k.activates_at <= now && k.retires_at.is_none_or(|t| now < t))
    }

    /// The key that signs access tokens at `now`: the most recently activated one still in its
    /// period, preferring any other algorithm to RS256. kauth keeps an RS256 key for ID tokens
    /// (every OpenID relying party supports it), and RS256 signs ten times slower than ES256.
    pub fn signer(&self, now: Timestamp) -> Option<&SigningKeyMaterial> {
        self.active(now)
            .max_by_key(|k| (k.algorithm != Algorithm::RS256, k.activates_at))
    }

    /// The most recently activated key of `algorithm` at `now` (ID tokens).
    pub fn signer_for(&self, algorithm: Algorithm, now: Timestamp) -> Option<&SigningKeyMaterial> {
        self.active(now)
            .filter(|k| k.algorithm == algorithm)
            .max_by_key(|k| k.activates_at)
    }

    /// The published key with this kid at `now`.
    pub fn verifier(&self, kid: &str, now: Timestamp) -> Option<&VerificationKey> {
        self.verifiers
            .iter()
            .find(|k| k.kid == kid && k.remove_at.is_none_or(|t| now < t))
    }

    /// Every published key at `now`.
    pub fn published(&self, now: Timestamp) -> impl Iterator<Item = &VerificationKey> {
        self.verifiers
            .iter()
            .filter(move |k| k.remove_at.is_none_or(|t| now < t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }
    const H: u64 = 3600;

    fn schedule(every: Option<u64>) -> KeySchedule {
        KeySchedule {
            every: every.map(|h| Duration::from_secs(h * H)),
            publish_ahead: Duration::from_secs(H),
            retain_after: Duration::from_secs(2 * H),
            ..Default::default()
        }
    }

    /// A key leaked: a new trigger with retireImmediately swaps the key at once and takes
    /// every earlier one out of the JWKS; a plain new trigger rotates with publish-ahead.
    #[test]
    fn a_new_trigger_rotates_once_and_can_retire_at_once() {
        let alg = KeyAlgorithm::ES256;
        let with = |trigger: &str, retire_immediately: bool| KeySchedule {
            trigger: Some(trigger.into()),
            retire_immediately,
            ..schedule(Some(720))
        };
        let first = plan_keys(alg, &with("one", false), &KeySet::default(), t(0)).unwrap();
        assert_eq!(first.keys.keys.len(), 1, "the first trigger is only recorded");
        assert_eq!(first.keys.trigger.as_deref(), Some("one"));
        let again = plan_keys(alg, &with("one", false), &first.keys, t(10)).unwrap();
        assert!(again.changes.is_empty(), "the same trigger does nothing");

        let planned = plan_keys(alg, &with("two", false), &first.keys, t(100)).unwrap();
        let old = &planned.keys.keys[0];
        let new = &planned.keys.keys[1];
        assert_eq!(new.activates_at, t(100 + H as i64), "published an hour before it signs");
        assert_eq!(old.retires_at, Some(new.activates_at));
        assert_eq!(old.state(t(100)), KeyState::Active);

        let leaked = plan_keys(alg, &with("leak", true), &planned.keys, t(200)).unwrap();
        assert_eq!(leaked.keys.keys.len(), 1, "every earlier key left the JWKS");
        assert_eq!(
            leaked.keys.keys[0].state(t(200)),
            KeyState::Active,
            "the new key signs now"
        );
        let retired: Vec<_> = leaked
            .changes
            .iter()
            .filter(|c| matches!(c, KeyChange::RetiredAtOnce { .. }))
            .collect();
        assert_eq!(retired.len(), 2, "the active and the pending key: {:?}", leaked.changes);
        let ring = KeyRing::from_sets([&leaked.keys]).0;
        assert!(
            ring.verifier(&old.kid, t(200)).is_none(),
            "what the old key signed no longer verifies"
        );
    }

    #[test]
    fn every_algorithm_generates_a_usable_key() {
        for alg in [KeyAlgorithm::ES256, KeyAlgorithm::EdDSA, KeyAlgorithm::RS256] {
            let key = generate_key(alg, t(0)).unwrap();
            assert_eq!(key.kid.len(), 43, "{alg:?} kid is a SHA-256 thumbprint");
            let (ring, errors) = KeyRing::from_sets([&KeySet {
                keys: vec![key.clone()],
                ..Default::default()
            }]);
            assert!(errors.is_empty(), "{errors:?}");
            let signer = ring.signer(t(1)).unwrap();
            let mut header = jsonwebtoken::Header::new(signer.algorithm);
            header.kid = Some(signer.kid.clone());
            let token = jsonwebtoken::encode(&header, &serde_json::json!({"sub": "x"}), &signer.encoding).unwrap();
            let verifier = ring.verifier(&key.kid, t(1)).unwrap();
            let mut v = jsonwebtoken::Validation::new(verifier.algorithm);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &verifier.decoding, &v).unwrap();
        }
    }

    #[test]
    fn access_tokens_prefer_fast_keys_and_id_tokens_pick_by_algorithm() {
        let rsa = generate_key(KeyAlgorithm::RS256, t(5)).unwrap();
        let ec = generate_key(KeyAlgorithm::ES256, t(0)).unwrap();
        let (ring, _) = KeyRing::from_sets([&KeySet {
            keys: vec![ec.clone(), rsa.clone()],
            ..Default::default()
        }]);
        assert_eq!(
            ring.signer(t(6)).unwrap().kid,
            ec.kid,
            "the newer RS256 key does not sign access tokens"
        );
        assert_eq!(ring.signer_for(Algorithm::RS256, t(6)).unwrap().kid, rsa.kid);
        assert!(ring.signer_for(Algorithm::EdDSA, t(6)).is_none());
        let (only_rsa, _) = KeyRing::from_sets([&KeySet {
            keys: vec![rsa.clone()],
            ..Default::default()
        }]);
        assert_eq!(
            only_rsa.signer(t(6)).unwrap().kid,
            rsa.kid,
            "RS256 when it is all there is"
        );
    }

    #[test]
    fn first_key_signs_at_once_and_never_rotates_without_schedule() {
        let plan = plan_keys(KeyAlgorithm::ES256, &schedule(None), &KeySet::default(), t(0)).unwrap();
        assert_eq!(plan.keys.keys.len(), 1);
        assert_eq!(plan.keys.keys[0].state(t(0)), KeyState::Active);
        assert_eq!(plan.next_step, None);
        let later = plan_keys(KeyAlgorithm::ES256, &schedule(None), &plan.keys, t(1_000_000)).unwrap();
        assert!(later.changes.is_empty());
    }

    #[test]
    fn scheduled_rotation_publishes_ahead_then_retains_after() {
        let s = schedule(Some(10));
        let first = plan_keys(KeyAlgorithm::ES256, &s, &KeySet::default(), t(0)).unwrap();
        let k1 = first.keys.keys[0].kid.clone();
        // The successor is due publish_ahead (1h) before the 10h period ends.
        assert_eq!(first.next_step, Some(t(9 * 3600)));
        let quiet = plan_keys(KeyAlgorithm::ES256, &s, &first.keys, t(9 * 3600 - 1)).unwrap();
        assert!(quiet.changes.is_empty());

        let ahead = plan_keys(KeyAlgorithm::ES256, &s, &first.keys, t(9 * 3600)).unwrap();
        assert_eq!(ahead.keys.keys.len(), 2);
        let k2 = ahead.keys.keys[1].clone();
        assert_eq!(k2.activates_at, t(10 * 3600));
        assert_eq!(k2.state(t(9 * 3600)), KeyState::Pending);
        assert_eq!(ahead.next_step, Some(t(10 * 3600)));

        let (ring, _) = KeyRing::from_sets([&ahead.keys]);
        assert_eq!(
            ring.signer(t(10 * 3600 - 1)).unwrap().kid,
            k1,
            "old key signs until the period ends"
        );
        assert_eq!(
            ring.signer(t(10 * 3600)).unwrap().kid,
            k2.kid,
            "new key signs from then on"
        );
        assert_eq!(ring.published(t(9 * 3600)).count(), 2, "new key is published ahead");
        assert!(ring.verifier(&k1, t(12 * 3600 - 1)).is_some(), "old key retained after");
        assert!(ring.verifier(&k1, t(12 * 3600)).is_none());

        let cleaned = plan_keys(KeyAlgorithm::ES256, &s, &ahead.keys, t(12 * 3600)).unwrap();
        assert_eq!(cleaned.changes, vec![KeyChange::Removed { kid: k1 }]);
        assert_eq!(cleaned.keys.keys.len(), 1);
    }

    #[test]
    fn late_controller_delays_activation_instead_of_skipping_publication() {
        let s = schedule(Some(10));
        let first = plan_keys(KeyAlgorithm::ES256, &s, &KeySet::default(), t(0)).unwrap();
        let late = plan_keys(KeyAlgorithm::ES256, &s, &first.keys, t(20 * 3600)).unwrap();
        assert_eq!(late.keys.keys[1].activates_at, t(21 * 3600));
        let (ring, _) = KeyRing::from_sets([&late.keys]);
        assert_eq!(ring.signer(t(20 * 3600)).unwrap().kid, first.keys.keys[0].kid);
    }

    #[test]
    fn algorithm_change_schedules_a_new_key() {
        let s = schedule(None);
        let first = plan_keys(KeyAlgorithm::ES256, &s, &KeySet::default(), t(0)).unwrap();
        let changed = plan_keys(KeyAlgorithm::EdDSA, &s, &first.keys, t(100)).unwrap();
        assert_eq!(changed.keys.keys[1].algorithm, KeyAlgorithm::EdDSA);
        assert_eq!(changed.keys.keys[1].activates_at, t(100 + 3600));
        assert_eq!(changed.keys.keys[0].retires_at, Some(t(100 + 3600)));
    }
}
