//! `SigningKey`: the provider's token signing keys and their rotation.
// Each printcolumn(...) repeats `type_ = "string"`, which clippy mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::limits as limit;

/// A signing key set. The private keys live in a Secret owned by this resource; the public
/// keys are listed in its status and published at the JWKS endpoint.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kauth.dev",
    version = "v1alpha1",
    kind = "SigningKey",
    namespaced,
    status = "SigningKeyStatus",
    shortname = "sk",
    category = "kauth",
    doc = "Token signing keys of the kauth provider, with scheduled rotation.",
    printcolumn(name = "Algorithm", type_ = "string", json_path = ".spec.algorithm"),
    printcolumn(name = "Active Key", type_ = "string", json_path = ".status.activeKid"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeySpec {
    /// Signature algorithm. Default ES256.
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// Scheduled rotation; without it the key never rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotation>,
}

/// Supported signature algorithms.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256: small and fast.
    #[default]
    ES256,
    /// RSA 2048 PKCS#1 v1.5 with SHA-256: supported by every OIDC relying party.
    RS256,
    /// Ed25519.
    EdDSA,
}

impl KeyAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// Rotation schedule. A new key is published `publishAhead` before it starts signing, and a
/// retired key stays published for `retainAfter` (at least the longest token lifetime).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// Signing period of each key, e.g. `720h`. At least `1h`. Without it keys rotate only on
    /// a new `trigger` (or a new algorithm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub every: Option<String>,
    /// Any new value rotates once, now: the new key is published `publishAhead` before it
    /// signs, unless `retireImmediately`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::TRIGGER))]
    pub trigger: Option<String>,
    /// With a new `trigger`: the new key signs at once and every earlier key of this
    /// SigningKey leaves the JWKS at once, so tokens they signed stop verifying. For a key
    /// that leaked (see the README's key-compromise procedure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retire_immediately: bool,
    /// Default `24h`; shorter than `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub publish_ahead: Option<String>,
    /// Default `25h`; at least the longest token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub retain_after: Option<String>,
}

/// Observed state of a SigningKey.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret holding the private keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The key that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_kid: Option<String>,
    /// Every published key with its state and public JWK.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<PublishedKey>,
    /// When the next rotation step is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_step: Option<Time>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A key published in the JWKS.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKey {
    /// Key id.
    pub kid: String,
    /// Pending (published, not yet signing), Active or Retired (published, no longer signing).
    pub state: String,
    /// When the key starts (or started) signing.
    pub activates_at: Time,
    /// When the key stops signing, if scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<Time>,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
}

/// Name of the SigningKey kauth creates when its namespace has none.
pub const DEFAULT_KEY: &str = "default";
/// Name of the RS256 SigningKey kauth creates when no SigningKey is RS256.
pub const DEFAULT_RS256_KEY: &str = "default-rs256";
/// How often the default keys rotate.
pub const DEFAULT_KEY_ROTATION: &str = "720h";

/// The SigningKeys kauth adds to its namespace, given the algorithms of those there: an ES256
/// key when there is none at all, and an RS256 key when none is RS256 (ID tokens need it:
/// OpenID Connect Core §15.1 makes it the one algorithm every relying party implements). Both
/// rotate every [`DEFAULT_KEY_ROTATION`]. The controller creates them as objects; standalone
/// keeps them as files; both take them from here.
pub fn default_signing_keys(existing: &[KeyAlgorithm]) -> Vec<(&'static str, SigningKeySpec)> {
    let spec = |algorithm| SigningKeySpec {
        algorithm,
        rotation: Some(KeyRotation {
            every: Some(DEFAULT_KEY_ROTATION.into()),
            ..Default::default()
        }),
    };
    let mut wanted = Vec::new();
    if existing.is_empty() {
        wanted.push((DEFAULT_KEY, spec(KeyAlgorithm::ES256)));
    }
    if !existing.contains(&KeyAlgorithm::RS256) {
        wanted.push((DEFAULT_RS256_KEY, spec(KeyAlgorithm::RS256)));
    }
    wanted
}

#[cfg(test)]
mod default_tests {
    use super::*;

    #[test]
    fn defaults_fill_in_what_is_missing_and_rotate_monthly() {
        let names = |existing: &[KeyAlgorithm]| -> Vec<&str> {
            default_signing_keys(existing).into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(names(&[]), [DEFAULT_KEY, DEFAULT_RS256_KEY]);
        assert_eq!(names(&[KeyAlgorithm::ES256]), [DEFAULT_RS256_KEY]);
        assert!(names(&[KeyAlgorithm::RS256]).is_empty());
        for (_, spec) in default_signing_keys(&[]) {
            let (_, schedule) = crate::validation::validate_signing_key(&spec).unwrap();
            assert_eq!(schedule.every, Some(std::time::Duration::from_secs(720 * 3600)));
        }
    }
}
