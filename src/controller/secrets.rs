//! The Secrets kauth writes: client credentials and signing key sets. Building and reading
//! them lives here, so the controller and the registry agree on the format.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::SecretDeletionPolicy;
use crate::credentials::{CredentialState, PreviousSecret};
use crate::keys::KeySet;
use crate::secret_contents::{ClientValues, SecretContents};
use crate::validation::SecretMetadata;

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
/// The owning OAuthClient's uid, for Secrets that carry no owner reference (policy `Orphan`).
const A_CLIENT_UID: &str = "kauth.dev/client-uid";
/// Label naming the OAuthClient a generated Secret belongs to.
const CLIENT_LABEL: &str = "kauth.dev/client";

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

/// True when `secret` belongs to the object with `uid`: its controller owner reference says
/// so, or, on a Secret with no controller (an `Orphan` policy's), kauth's uid annotation.
pub fn owned_by(secret: &Secret, uid: &str) -> bool {
    let controller = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(owner) => owner.uid == uid,
        None => annotation(secret, A_CLIENT_UID) == Some(uid),
    }
}

/// True when `secret` is a generated credentials Secret left behind by a deleted OAuthClient
/// named `client` (policy `Orphan`): the OAuthClient of that name in the same namespace may
/// take it over with its secret.
pub fn adoptable_by(secret: &Secret, client: &str) -> bool {
    labelled(secret, GENERATED)
        && secret.metadata.owner_references.as_ref().is_none_or(Vec::is_empty)
        && annotation(secret, A_CLIENT_UID).is_some()
        && secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CLIENT_LABEL))
            .map(String::as_str)
            == Some(client)
}

/// The OAuthClient a generated credentials Secret belongs to: its controller owner, or for an
/// `Orphan` Secret the client its label names (which may adopt it).
pub fn client_of(secret: &Secret) -> Option<kube::runtime::reflector::ObjectRef<crate::crd::OAuthClient>> {
    if !labelled(secret, GENERATED) {
        return None;
    }
    let namespace = secret.metadata.namespace.as_deref()?;
    let owners = secret.metadata.owner_references.iter().flatten();
    let name = match owners.into_iter().find(|o| o.controller == Some(true)) {
        Some(owner) if owner.kind == "OAuthClient" => owner.name.clone(),
        Some(_) => return None,
        None => secret.metadata.labels.as_ref()?.get(CLIENT_LABEL)?.clone(),
    };
    Some(kube::runtime::reflector::ObjectRef::new(&name).within(namespace))
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret.metadata.annotations.as_ref()?.get(key).map(String::as_str)
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
    /// Secret name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Owning OAuthClient (its uid is recorded whatever the deletion policy).
    pub owner: OwnerReference,
    /// Client name (label).
    pub client_name: &'a str,
    /// Keys, presets and templates.
    pub contents: &'a SecretContents,
    /// The team's labels and annotations, and the deletion policy.
    pub metadata: &'a SecretMetadata,
    /// Every value but the secret (which `build` takes from the credential state).
    pub values: &'a ClientValues,
}

impl CredentialsSecret<'_> {
    /// The Secret for a credential state, or why a template failed.
    pub fn build(&self, state: &CredentialState) -> Result<Secret, String> {
        let mut annotations = self.metadata.annotations.clone();
        annotations.extend([
            (A_VERSION.to_string(), state.version.to_string()),
            (A_ROTATED_AT.to_string(), state.rotated_at.to_string()),
            (A_SECRET_KEY.to_string(), self.contents.keys.client_secret.clone()),
            (A_CLIENT_UID.to_string(), self.owner.uid.clone()),
        ]);
        if let Some(t) = &state.trigger {
            annotations.insert(A_TRIGGER.into(), t.clone());
        }
        if let Some(p) = &state.previous {
            annotations.insert(A_PREVIOUS.into(), p.sha256.clone());
            annotations.insert(A_PREVIOUS_UNTIL.into(), p.valid_until.to_string());
        }
        let mut labels = self.metadata.labels.clone();
        labels.extend([
            ("app.kubernetes.io/managed-by".to_string(), "kauth".to_string()),
            (CREDENTIALS_LABEL.to_string(), GENERATED.to_string()),
            (CLIENT_LABEL.to_string(), self.client_name.to_string()),
        ]);
        let data = self
            .contents
            .render(&self.values.with_secret(&state.secret))?
            .into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect();
        let owner_references = match self.metadata.deletion {
            SecretDeletionPolicy::Delete => Some(vec![self.owner.clone()]),
            SecretDeletionPolicy::Orphan => None,
        };
        Ok(Secret {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references,
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Default::default()
        })
    }

    /// True when `secret` is exactly what this client should have (data, labels, annotations
    /// and owner), so nothing needs writing.
    pub fn up_to_date(&self, secret: &Secret, state: &CredentialState) -> bool {
        let Ok(wanted) = self.build(state) else { return false };
        secret.data == wanted.data
            && secret.metadata.annotations == wanted.metadata.annotations
            && secret.metadata.labels == wanted.metadata.labels
            && secret.metadata.owner_references.as_ref().is_none_or(Vec::is_empty)
                == wanted.metadata.owner_references.is_none()
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
