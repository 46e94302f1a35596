//! Loading kauth resources from a folder of YAML manifests (standalone mode). Other kinds in
//! the same files (Deployments, Services) are skipped, so one folder can hold a whole app.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine;
use std::fmt;
use std::path::{Path, PathBuf};

use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::crd::{OAuthClient, Scope, SigningKey};

/// Where a resource came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File path.
    pub file: PathBuf,
    /// 1-based document number in the file.
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// A problem with one document; the rest still load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// Where.
    pub origin: Origin,
    /// What, naming the resource and field when known.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// The kauth resources found in a folder, in file order.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// OAuthClients with their origin.
    pub clients: Vec<(Origin, OAuthClient)>,
    /// Scopes with their origin.
    pub scopes: Vec<(Origin, Scope)>,
    /// SigningKeys with their origin.
    pub signing_keys: Vec<(Origin, SigningKey)>,
    /// Labels of the `Namespace` manifests found, for Scopes granted by namespace selector.
    pub namespace_labels: crate::catalog::NamespaceLabels,
    /// `v1` Secrets by (namespace, name): their decoded data (standalone reads kauth's own,
    /// such as the local people, from here).
    pub secrets: HashMap<SecretKey, (Origin, BTreeMap<String, String>)>,
    /// `v1` ConfigMaps by (namespace, name): their data (kauth's connectors).
    pub config_maps: HashMap<SecretKey, (Origin, BTreeMap<String, String>)>,
    /// Documents that could not be loaded.
    pub errors: Vec<ManifestError>,
}

/// YAML files below `dir`, sorted so the load order (and so conflict precedence) is stable.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn typed<K: Resource + DeserializeOwned>(value: Value, kind: &str, origin: &Origin) -> Result<K, ManifestError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    serde_path_to_error::deserialize::<_, K>(value).map_err(|e| ManifestError {
        origin: origin.clone(),
        message: format!("{kind} {namespace}/{name}: field {}: {}", e.path(), e.inner()),
    })
}

impl Manifests {
    /// Evaluates the loaded clients and scopes, in file order (the first definition wins),
    /// against the claims recorded before.
    pub fn catalog(&self, ledger: &crate::claims::Ledger, rules: crate::claims::ClaimRules) -> crate::catalog::Catalog {
        use crate::catalog::{Catalog, ClientInput, ScopeInput, releases_claims};
        let key = |m: &kube::core::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        let client_keys: Vec<_> = self.clients.iter().map(|(_, c)| key(&c.metadata)).collect();
        // Without a cluster an object is its namespace and name (unless the manifest says
        // otherwise): grants never pass to another namespace's client.
        let client_uids: Vec<String> = self
            .clients
            .iter()
            .zip(&client_keys)
            .map(|((_, c), (ns, n))| c.metadata.uid.clone().unwrap_or_else(|| format!("standalone:{ns}/{n}")))
            .collect();
        let scope_keys: Vec<_> = self.scopes.iter().map(|(_, s)| key(&s.metadata)).collect();
        let clients: Vec<ClientInput> = self
            .clients
            .iter()
            .zip(&client_keys)
            .zip(&client_uids)
            .map(|(((_, c), (ns, n)), uid)| ClientInput {
                namespace: ns,
                name: n,
                uid,
                generation: c.metadata.generation,
                releasing: c.metadata.annotations.as_ref().is_some_and(releases_claims),
                spec: &c.spec,
            })
            .collect();
        let scopes: Vec<ScopeInput> = self
            .scopes
            .iter()
            .zip(&scope_keys)
            .map(|((_, s), (ns, n))| ScopeInput {
                namespace: ns,
                name: n,
                generation: s.metadata.generation,
                releasing: s.metadata.annotations.as_ref().is_some_and(releases_claims),
                spec: &s.spec,
            })
            .collect();
        Catalog::evaluate_with(&clients, &scopes, &self.namespace_labels, ledger, rules)
    }

    /// Loads every YAML file below `dir`.
    pub fn load_dir(dir: &Path) -> std::io::Result<Self> {
        let mut manifests = Self::default();
        for file in manifest_files(dir)? {
            let text = std::fs::read_to_string(&file)?;
            manifests.add_text(&file, &text);
        }
        manifests.reject_duplicates();
        Ok(manifests)
    }

    /// Adds the documents of one YAML text.
    pub fn add_text(&mut self, file: &Path, text: &str) {
        // YAML 1.2 booleans only: a namespace called `n` or `on` stays a string.
        let mut options = serde_saphyr::Options::default();
        options.strict_booleans = true;
        // The default budget (1,024 documents) guards untrusted input; a platform's own
        // manifest folder may hold thousands of resources in one file.
        let mut budget = serde_saphyr::Budget::default();
        budget.max_documents = 1_000_000;
        budget.max_nodes = 100_000_000;
        budget.max_events = 1_000_000_000;
        options.budget = Some(budget);
        let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, options) {
            Ok(docs) => docs,
            Err(e) => {
                let origin = Origin {
                    file: file.to_path_buf(),
                    document: 1,
                };
                self.errors.push(ManifestError {
                    origin,
                    message: format!("not valid YAML: {e}"),
                });
                return;
            }
        };
        for (i, mut doc) in docs.into_iter().enumerate() {
            let origin = Origin {
                file: file.to_path_buf(),
                document: i + 1,
            };
            if doc.is_null() {
                continue;
            }
            let api_version = doc
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            if api_version == "v1" && kind == "Namespace" {
                // Standalone has no apiserver: Namespace manifests carry the labels selectors match.
                let name = doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let labels = doc
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|l| {
                        l.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                self.namespace_labels.insert(name, labels);
                continue;
            }
            if api_version == "v1" && kind == "ConfigMap" {
                match secret_data(&doc) {
                    Ok((key, data)) => {
                        self.config_maps.insert(key, (origin, data));
                    }
                    Err(message) => self.errors.push(ManifestError { origin, message }),
                }
                continue;
            }
            if api_version == "v1" && kind == "Secret" {
                match secret_data(&doc) {
                    Ok((key, data)) => {
                        self.secrets.insert(key, (origin, data));
                    }
                    Err(message) => self.errors.push(ManifestError { origin, message }),
                }
                continue;
            }
            if !api_version.starts_with("kauth.dev/") {
                continue;
            }
            if api_version != "kauth.dev/v1alpha1" {
                let message = format!("{kind}: apiVersion {api_version} is not served; use kauth.dev/v1alpha1");
                self.errors.push(ManifestError { origin, message });
                continue;
            }
            // Standalone has no namespace defaulting by an apiserver: do it here.
            if doc.pointer("/metadata/namespace").is_none()
                && let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut)
            {
                meta.insert("namespace".into(), Value::String("default".into()));
            }
            let result = match kind.as_str() {
                "OAuthClient" => {
                    typed::<OAuthClient>(doc, &kind, &origin).map(|r| self.clients.push((origin.clone(), r)))
                }
                "Scope" => typed::<Scope>(doc, &kind, &origin).map(|r| self.scopes.push((origin.clone(), r))),
                "SigningKey" => {
                    typed::<SigningKey>(doc, &kind, &origin).map(|r| self.signing_keys.push((origin.clone(), r)))
                }
                other => Err(ManifestError {
                    origin: origin.clone(),
                    message: format!("kind '{other}' is not a kauth.dev kind (OAuthClient, Scope, SigningKey)"),
                }),
            };
            if let Err(e) = result {
                self.errors.push(e);
            }
        }
    }

    fn reject_duplicates(&mut self) {
        fn dedup<K: Resource>(items: &mut Vec<(Origin, K)>, kind: &str, errors: &mut Vec<ManifestError>) {
            let mut seen = HashSet::new();
            items.retain(|(origin, r)| {
                let key = (
                    r.meta().namespace.clone().unwrap_or_default(),
                    r.meta().name.clone().unwrap_or_default(),
                );
                let fresh = !key.1.is_empty() && seen.insert(key.clone());
                if !fresh {
                    let message = if key.1.is_empty() {
                        format!("{kind}: metadata.name is required")
                    } else {
                        format!(
                            "{kind} {}/{}: defined again; the first definition is used",
                            key.0, key.1
                        )
                    };
                    errors.push(ManifestError {
                        origin: origin.clone(),
                        message,
                    });
                }
                fresh
            });
        }
        dedup(&mut self.clients, "OAuthClient", &mut self.errors);
        dedup(&mut self.scopes, "Scope", &mut self.errors);
        dedup(&mut self.signing_keys, "SigningKey", &mut self.errors);
    }
}

/// A Secret's (namespace, name).
type SecretKey = (String, String);

/// A Secret or ConfigMap manifest's (namespace, name) and data: for Secrets `stringData`
/// over base64 `data`, as the apiserver merges them; a ConfigMap's `data` is plain text.
fn secret_data(doc: &Value) -> Result<(SecretKey, BTreeMap<String, String>), String> {
    let text = |p: &str| doc.pointer(p).and_then(Value::as_str).map(str::to_string);
    let kind = text("/kind").unwrap_or_default();
    let name = text("/metadata/name").ok_or(format!("{kind}: metadata.name is required"))?;
    let namespace = text("/metadata/namespace").unwrap_or_else(|| "default".into());
    let mut data = BTreeMap::new();
    if kind == "ConfigMap" {
        for (k, v) in doc.get("data").and_then(Value::as_object).into_iter().flatten() {
            let v = v
                .as_str()
                .ok_or_else(|| format!("ConfigMap {namespace}/{name}: data.{k} is not a string"))?;
            data.insert(k.clone(), v.to_string());
        }
        return Ok(((namespace, name), data));
    }
    if let Some(encoded) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in encoded {
            let decoded = v
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("Secret {namespace}/{name}: data.{k} is not base64 of UTF-8 text"))?;
            data.insert(k.clone(), decoded);
        }
    }
    if let Some(plain) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in plain {
            let v = v
                .as_str()
                .ok_or_else(|| format!("Secret {namespace}/{name}: stringData.{k} is not a string"))?;
            data.insert(k.clone(), v.to_string());
        }
    }
    Ok(((namespace, name), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_kauth_kinds_skips_others_and_names_bad_fields() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: broken, namespace: shop}
spec:
  scopes: orders.read
---
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: read}
spec: {value: orders.read}
---
apiVersion: kauth.dev/v1alpha1
kind: Widget
metadata: {name: w}
"#;
        let mut m = Manifests::default();
        m.add_text(Path::new("x.yaml"), yaml);
        m.reject_duplicates();
        assert_eq!(m.clients.len(), 1);
        assert_eq!(m.scopes.len(), 1);
        assert_eq!(m.scopes[0].1.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.errors.len(), 2);
        assert_eq!(m.errors[0].origin.document, 3);
        let msg = m.errors[0].to_string();
        assert!(
            msg.starts_with("x.yaml (document 3): OAuthClient shop/broken: field spec.scopes: invalid type"),
            "{msg}"
        );
        assert!(m.errors[1].message.contains("'Widget'"));
    }

    #[test]
    fn thousands_of_documents_in_one_file_load() {
        let doc = "apiVersion: kauth.dev/v1alpha1\nkind: Scope\nmetadata: {name: s, namespace: n}\nspec: {value: x}\n";
        let text: String = (0..3000)
            .map(|i| format!("---\n{}", doc.replace("name: s", &format!("name: s{i}"))))
            .collect();
        let mut m = Manifests::default();
        m.add_text(Path::new("many.yaml"), &text);
        assert!(m.errors.is_empty(), "{:?}", m.errors.first());
        assert_eq!(m.scopes.len(), 3000);
    }

    #[test]
    fn duplicates_keep_the_first() {
        let doc = "apiVersion: kauth.dev/v1alpha1\nkind: Scope\nmetadata: {name: a, namespace: n}\nspec: {value: x}\n";
        let mut m = Manifests::default();
        m.add_text(Path::new("a.yaml"), doc);
        m.add_text(Path::new("b.yaml"), doc);
        m.reject_duplicates();
        assert_eq!(m.scopes.len(), 1, "{:?}", m.errors);
        assert!(
            m.errors[0]
                .to_string()
                .contains("b.yaml (document 1): Scope n/a: defined again")
        );
    }
}
