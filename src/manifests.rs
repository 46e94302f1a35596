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
    /// 1-based document number in the file; 0 for the file as a whole.
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            0 => write!(f, "{}", self.file.display()),
            n => write!(f, "{} (document {n})", self.file.display()),
        }
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
    /// Fields the schema does not know (a cluster's apiserver would drop them silently): a
    /// typo such as `accessTokenLifeTime` leaves the default in force.
    pub warnings: Vec<ManifestError>,
    /// Unknown fields are errors: the object is refused instead of loaded without them.
    pub strict: bool,
}

use crate::schema_bounds::SCHEMAS;

/// The paths of `value`'s fields that `schema` does not declare.
fn unknown_fields(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                return;
            }
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                // A map (labels, annotations) or an object the schema leaves open (metadata).
                if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    for (k, v) in map {
                        unknown_fields(values, v, &format!("{path}.{k}"), out);
                    }
                }
                return;
            };
            for (k, v) in map {
                let at = format!("{path}.{k}");
                match properties.get(k) {
                    Some(field) => unknown_fields(field, v, &at, out),
                    None => out.push(at),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(item, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// YAML files below `dir`, sorted so the load order (and so conflict precedence) is stable,
/// and the entries that could not be looked at (a dangling link, a folder without
/// permission), each with its reason. Linked folders are followed once: a link back up the
/// tree (a cycle) is not walked again. Only `dir` itself failing is an error.
pub fn manifest_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<ManifestError>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut visited = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    let unreadable = |path: &Path, why: String| ManifestError {
        origin: Origin {
            file: path.to_path_buf(),
            document: 0,
        },
        message: why,
    };
    while let Some(d) = pending.pop() {
        if !visited.insert(std::fs::canonicalize(&d)?) {
            continue;
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(e),
            Err(e) => {
                skipped.push(unreadable(&d, format!("folder skipped: {e}")));
                continue;
            }
        };
        for entry in entries {
            let path = entry?.path();
            let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            // Follows links; a dangling or looping link fails here.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => pending.push(path),
                Ok(meta) if yaml && meta.is_file() => files.push(path),
                // A pipe or device would block the pass that reads it.
                Ok(_) if yaml => skipped.push(unreadable(&path, "skipped: not a regular file".into())),
                Ok(_) => {}
                Err(e) if yaml || path.is_symlink() => {
                    skipped.push(unreadable(&path, format!("skipped: {e}")));
                }
                Err(_) => {}
            }
        }
    }
    files.sort();
    skipped.sort_by(|a, b| a.origin.file.cmp(&b.origin.file));
    Ok((files, skipped))
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

    /// Loads every YAML file below `dir`. A file that cannot be read (a dangling link, no
    /// permission, not UTF-8) is named in `errors` with the reason and skipped; the rest load.
    pub fn load_dir(dir: &Path) -> std::io::Result<Self> {
        Self::load_dir_strictly(dir, false)
    }

    /// As [`Manifests::load_dir`]; with `strict`, unknown fields refuse their resource.
    pub fn load_dir_strictly(dir: &Path, strict: bool) -> std::io::Result<Self> {
        let mut manifests = Self {
            strict,
            ..Self::default()
        };
        let (files, skipped) = manifest_files(dir)?;
        manifests.errors.extend(skipped);
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => manifests.add_text(&file, &text),
                Err(e) => manifests.errors.push(ManifestError {
                    origin: Origin { file, document: 0 },
                    message: match e.kind() {
                        std::io::ErrorKind::InvalidData => "skipped: not UTF-8 text".to_string(),
                        _ => format!("skipped: {e}"),
                    },
                }),
            }
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
        // One document that cannot be read must not take its neighbours with it: when the file
        // fails as a whole, its documents are read one by one and only the broken one is named.
        let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, options.clone()) {
            Ok(docs) => docs,
            Err(_) => {
                let mut docs = Vec::new();
                for (i, (first_line, part)) in documents(text).into_iter().enumerate() {
                    match serde_saphyr::from_str_with_options::<Value>(part, options.clone()) {
                        Ok(doc) => docs.push(doc),
                        Err(e) => {
                            self.errors.push(ManifestError {
                                origin: Origin {
                                    file: file.to_path_buf(),
                                    document: i + 1,
                                },
                                message: yaml_problem(&e, first_line),
                            });
                            docs.push(Value::Null);
                        }
                    }
                }
                docs
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
            // A namespace and name become folders of the state (secrets/<namespace>/<secret>):
            // only what an apiserver accepts, so none reaches outside it (`/tmp/x`, `../..`).
            if let Some(problem) = name_problem(&doc) {
                let message = format!("{kind}: {problem}");
                self.errors.push(ManifestError { origin, message });
                continue;
            }
            let mut unknown = Vec::new();
            if let Some(schema) = SCHEMAS.get(kind.as_str())
                && let Some(top) = doc.as_object()
            {
                // The CRD schema covers spec and status; the rest is the object's envelope.
                for (k, v) in top {
                    match k.as_str() {
                        "apiVersion" | "kind" | "metadata" => {}
                        "spec" | "status" => unknown_fields(&schema["properties"][k.as_str()], v, k, &mut unknown),
                        other => unknown.push(other.to_string()),
                    }
                }
            }
            if !unknown.is_empty() {
                let name = doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("<unnamed>");
                let namespace = doc
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let problem = ManifestError {
                    origin: origin.clone(),
                    message: format!(
                        "{kind} {namespace}/{name}: unknown field{} {} ({})",
                        if unknown.len() > 1 { "s" } else { "" },
                        unknown.join(", "),
                        if self.strict {
                            "--strict: the resource is refused"
                        } else {
                            "ignored, as an apiserver would: a typo?"
                        }
                    ),
                };
                if self.strict {
                    self.errors.push(problem);
                    continue;
                }
                self.warnings.push(problem);
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

/// The documents of a multi-document YAML text, each with the number of its first line: split
/// at `---` marker lines, as YAML counts them (a leading marker opens the first document).
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let marker = line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if marker {
            let part = &text[start..offset];
            if !(docs.is_empty()
                && part
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')))
            {
                docs.push((start_line, part));
            }
            start = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

/// A YAML error as one line: where, and what, never the lines around it (a Secret's document
/// may hold a password).
fn yaml_problem(e: &serde_saphyr::Error, first_line: usize) -> String {
    let what = e.to_string();
    let what = what.lines().next().unwrap_or_default();
    // "error: line L column C: what": the position is given below, counted in the file.
    let what = what.rsplit_once(": ").map_or(what, |(_, w)| w);
    match e.location() {
        Some(at) => format!(
            "not valid YAML at line {}, column {}: {what}",
            at.line() as usize + first_line - 1,
            at.column()
        ),
        None => format!("not valid YAML: {what}"),
    }
}

/// What is wrong with an object's namespace or name by the apiserver's rules (a DNS label, a
/// DNS subdomain), if anything. A missing name is reported elsewhere.
fn name_problem(doc: &Value) -> Option<String> {
    use crate::validation::{is_dns_label, is_dns_subdomain};
    let text = |p: &str| doc.pointer(p).and_then(Value::as_str);
    if let Some(ns) = text("/metadata/namespace").filter(|ns| !is_dns_label(ns)) {
        return Some(format!(
            "metadata.namespace '{ns}' is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ));
    }
    let name = text("/metadata/name").filter(|n| !n.is_empty() && !is_dns_subdomain(n))?;
    Some(format!(
        "metadata.name '{name}' is not an object name (lowercase letters, digits, '-' and '.', at most 253)"
    ))
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

    #[test]
    fn a_document_that_cannot_be_read_does_not_hide_its_neighbours() {
        let mut m = Manifests::default();
        m.add_text(
            Path::new("mixed.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: kauth}\nstringData:\n  password: \"hunter2\n---\napiVersion: kauth.dev/v1alpha1\nkind: Scope\nmetadata: {name: read, namespace: orders}\nspec: {value: orders.read}\n",
        );
        assert_eq!(m.scopes.len(), 1, "document 2 is loaded: {:?}", m.errors);
        let error = m.errors[0].to_string();
        assert!(
            error.contains("mixed.yaml (document 1)") && error.contains("line 5"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "no line of a Secret is echoed: {error}");
    }

    #[test]
    fn the_examples_have_no_unknown_fields() {
        let m = Manifests::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
    }

    #[test]
    fn unknown_fields_are_named_and_refused_under_strict() {
        let text = "apiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: app, namespace: team, labels: {a: b}}\nspec:\n  accessTokenLifeTime: 1m\n  secret: {rotation: {overlapp: 1h}}\n  scopes: [x]\n";
        let mut m = Manifests::default();
        m.add_text(Path::new("typo.yaml"), text);
        assert_eq!(m.clients.len(), 1, "loaded without the unknown fields");
        assert_eq!(
            m.warnings[0].to_string(),
            "typo.yaml (document 1): OAuthClient team/app: unknown fields spec.accessTokenLifeTime, spec.secret.rotation.overlapp (ignored, as an apiserver would: a typo?)"
        );
        let mut strict = Manifests {
            strict: true,
            ..Default::default()
        };
        strict.add_text(Path::new("typo.yaml"), text);
        assert!(strict.clients.is_empty(), "refused");
        assert!(strict.errors[0].message.contains("--strict"));
    }

    /// A dangling link, a looping link, a file that is not UTF-8 and a folder linked back up
    /// the tree: each is named and skipped, and everything else loads.
    #[test]
    fn unreadable_files_are_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("good.yaml"),
            "apiVersion: kauth.dev/v1alpha1\nkind: Scope\nmetadata: {name: s, namespace: api}\nspec: {value: ok}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("missing.yaml"), root.join("dangling.yaml")).unwrap();
        std::os::unix::fs::symlink(root.join("loop.yaml"), root.join("loop.yaml")).unwrap();
        std::fs::write(root.join("latin1.yaml"), b"value: caf\xe9\n").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(root, root.join("sub/up")).unwrap();
        let m = Manifests::load_dir(root).unwrap();
        assert_eq!(m.scopes.len(), 1, "the good file loads once, not once per cycle");
        let errors: Vec<String> = m.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors.iter().any(|e| e.contains("dangling.yaml: skipped")),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e.contains("loop.yaml: skipped")), "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.ends_with("latin1.yaml: skipped: not UTF-8 text")),
            "{errors:#?}"
        );
    }
}
