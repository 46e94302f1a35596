//! The Secrets kauth writes: client credentials and signing key sets. Building and reading
//! them lives here, so the controller and the registry agree on the format.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::SecretKeys;
use crate::credentials::{CredentialState, PreviousSecret};
use crate::keys::KeySet;

/// Label on every Secret kauth reads; its value says what the Secret holds.
pub const CREDENTIALS_LABEL: &str = "kauth.dev/credentials";
/// Value for client credentials kauth generated.
pub const GENERATED: &str = "generated";
/// Value for a user-managed Secret referenced by `spec.existingSecret`.
pub const EXTERNAL: &str = "external";
/// Value for signing key sets.
pub const SIGNING_KEYS: &str = "signing-keys";
/// Data key of a signing key set.
pub const KEYSET_KEY: &str = "keyset.json";

const A_VERSION: &str = "kauth.dev/secret-version";
const A_ROTATED_AT: &str = "kauth.dev/rotated-at";
const A_TRIGGER: &str = "kauth.dev/rotation-trigger";
const A_SECRET_KEY: &str = "kauth.dev/secret-key";
const A_PREVIOUS: &str = "kauth.dev/previous-secret-sha256";
const A_PREVIOUS_UNTIL: &str = "kauth.dev/previous-secret-valid-until";

/// An owner reference marking `owner` as the controller of a child.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// True when `secret` is controlled by the object with `uid`.
pub fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// True when the Secret carries kauth's label with `value`.
pub fn labelled(secret: &Secret, value: &str) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CREDENTIALS_LABEL))
        .is_some_and(|v| v == value)
}

fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
}

/// Everything a credentials Secret holds besides the secret itself.
pub struct CredentialsSecret<'a> {
    /// Secret name and namespace.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Owning OAuthClient.
    pub owner: OwnerReference,
    /// Client name (label).
    pub client_name: &'a str,
    /// Key names.
    pub keys: &'a SecretKeys,
    /// Client id.
    pub client_id: &'a str,
    /// Issuer URL.
    pub issuer: &'a str,
    /// Token endpoint URL.
    pub token_endpoint: &'a str,
}

impl CredentialsSecret<'_> {
    /// The Secret for a credential state.
    pub fn build(&self, state: &CredentialState) -> Secret {
        let mut annotations = BTreeMap::from([
            (A_VERSION.to_string(), state.version.to_string()),
            (A_ROTATED_AT.to_string(), state.rotated_at.to_string()),
            (A_SECRET_KEY.to_string(), self.keys.client_secret.clone()),
        ]);
        if let Some(t) = &state.trigger {
            annotations.insert(A_TRIGGER.into(), t.clone());
        }
        if let Some(p) = &state.previous {
            annotations.insert(A_PREVIOUS.into(), p.sha256.clone());
            annotations.insert(A_PREVIOUS_UNTIL.into(), p.valid_until.to_string());
        }
        let data = self
            .keys
            .entries(self.client_id, &state.secret, self.issuer, self.token_endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/managed-by".to_string(), "kauth".to_string()),
                    (CREDENTIALS_LABEL.to_string(), GENERATED.to_string()),
                    ("kauth.dev/client".to_string(), self.client_name.to_string()),
                ])),
                annotations: Some(annotations),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// True when the Secret's non-secret data matches what this client should have.
    pub fn up_to_date(&self, secret: &Secret, state: &CredentialState) -> bool {
        let wanted = self.build(state);
        secret.data == wanted.data && secret.metadata.annotations == wanted.metadata.annotations
    }
}

/// Reads the credential state back from a Secret kauth generated.
pub fn credential_state(secret: &Secret) -> Option<CredentialState> {
    let a = secret.metadata.annotations.as_ref()?;
    let secret_value = data_str(secret, a.get(A_SECRET_KEY)?)?;
    let previous = match (a.get(A_PREVIOUS), a.get(A_PREVIOUS_UNTIL)) {
        (Some(sha256), Some(until)) => Some(PreviousSecret {
            sha256: sha256.clone(),
            valid_until: until.parse::<Timestamp>().ok()?,
        }),
        _ => None,
    };
    Some(CredentialState {
        secret: secret_value.to_string(),
        version: a.get(A_VERSION)?.parse().ok()?,
        rotated_at: a.get(A_ROTATED_AT)?.parse().ok()?,
        trigger: a.get(A_TRIGGER).cloned(),
        previous,
    })
}

/// Reads a user-managed secret value.
pub fn external_secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    data_str(secret, key)
        .map(|s| s.trim_end_matches(['\n', '\r']))
        .filter(|s| !s.is_empty())
}

/// The Secret holding a SigningKey's key set.
pub fn key_set_secret(name: &str, namespace: &str, owner: OwnerReference, keys: &KeySet) -> Secret {
    let json = serde_json::to_vec(keys).expect("key sets serialise");
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), "kauth".to_string()),
                (CREDENTIALS_LABEL.to_string(), SIGNING_KEYS.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(KEYSET_KEY.to_string(), ByteString(json))])),
        ..Default::default()
    }
}

/// Reads a key set back.
pub fn key_set(secret: &Secret) -> Option<KeySet> {
    serde_json::from_slice(&secret.data.as_ref()?.get(KEYSET_KEY)?.0).ok()
}

/// Name of the Secret holding a SigningKey's private keys.
pub fn key_set_secret_name(signing_key: &str) -> String {
    format!("{signing_key}-signing-keys")
}
