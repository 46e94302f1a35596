//! The CRDs' schemas as kauth reads them itself: the limits of every string, list and map a
//! team writes (`crd/limits.rs`), checked by kauth before any other work on an object. The
//! apiserver refuses what breaks them; kauth checks them again for standalone manifests and
//! for objects stored before a limit existed (the apiserver does not check stored objects
//! again when a CRD changes), so both modes judge the same object alike.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::crd::limits::MAP_KEY;
use crate::crd::{OAuthClient, Scope, SigningKey};
use crate::fields::FieldError;

/// The openAPIV3Schema of each kauth kind, from the same types as the CRDs.
pub static SCHEMAS: LazyLock<HashMap<&'static str, Value>> = LazyLock::new(|| {
    use kube::CustomResourceExt;
    let schema = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        serde_json::to_value(crd)
            .ok()
            .and_then(|v| v.pointer("/spec/versions/0/schema/openAPIV3Schema").cloned())
            .unwrap_or(Value::Null)
    };
    HashMap::from([
        ("OAuthClient", schema(OAuthClient::crd())),
        ("Scope", schema(Scope::crd())),
        ("SigningKey", schema(SigningKey::crd())),
    ])
});

/// The schema of `kind`'s spec.
fn spec_schema(kind: &str) -> &'static Value {
    static NONE: Value = Value::Null;
    SCHEMAS
        .get(kind)
        .and_then(|s| s.pointer("/properties/spec"))
        .unwrap_or(&NONE)
}

/// The fields of `spec` (a `kind`'s spec, serialised) that exceed their schema limit, each
/// named by path (`spec.scopes[3]`). Values are never quoted: they may be anything.
pub fn check_spec<T: serde::Serialize>(kind: &str, spec: &T) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match serde_json::to_value(spec) {
        Ok(value) => check(spec_schema(kind), &value, "spec", &mut errors),
        Err(e) => errors.push(FieldError::new("spec", format!("cannot be read ({e})"))),
    }
    errors
}

fn limit(schema: &Value, name: &str) -> Option<usize> {
    schema.get(name).and_then(Value::as_u64).map(|n| n as usize)
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::String(s) => {
            // Kubernetes counts characters, not bytes.
            if let Some(max) = limit(schema, "maxLength")
                && s.chars().count() > max
            {
                errors.push(FieldError::new(path, format!("is longer than {max} characters")));
            }
        }
        Value::Array(items) => {
            if let Some(max) = limit(schema, "maxItems")
                && items.len() > max
            {
                errors.push(FieldError::new(path, format!("has more than {max} items")));
                return;
            }
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(item, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in map {
                    if let Some(field) = properties.get(k) {
                        check(field, v, &format!("{path}.{k}"), errors);
                    }
                }
                return;
            }
            let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) else {
                return;
            };
            if let Some(max) = limit(schema, "maxProperties")
                && map.len() > max
            {
                errors.push(FieldError::new(path, format!("has more than {max} entries")));
                return;
            }
            for (k, v) in map {
                if k.chars().count() > MAP_KEY {
                    errors.push(FieldError::new(
                        path,
                        format!("has a key longer than {MAP_KEY} characters"),
                    ));
                    continue;
                }
                check(values, v, &format!("{path}.{k}"), errors);
            }
        }
        _ => {}
    }
}

/// The paths of strings, lists and maps in `kind`'s spec schema that carry no limit (enums
/// are bounded by their values): the list a test keeps empty.
pub fn unbounded(kind: &str) -> Vec<String> {
    fn walk(schema: &Value, path: String, out: &mut Vec<String>) {
        match schema.get("type").and_then(Value::as_str) {
            Some("string") if schema.get("enum").is_none() && schema.get("maxLength").is_none() => out.push(path),
            Some("array") => {
                if schema.get("maxItems").is_none() {
                    out.push(path.clone());
                }
                if let Some(items) = schema.get("items") {
                    walk(items, format!("{path}[]"), out);
                }
            }
            _ => {
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (k, v) in properties {
                        walk(v, format!("{path}.{k}"), out);
                    }
                } else if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    if schema.get("maxProperties").is_none() {
                        out.push(path.clone());
                    }
                    walk(values, format!("{path}{{}}"), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(spec_schema(kind), "spec".into(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{OAuthClientSpec, ScopeSpec};

    /// T9: every string, list and map a team writes has a limit the apiserver enforces.
    #[test]
    fn every_field_a_team_writes_is_bounded() {
        for kind in ["OAuthClient", "Scope", "SigningKey"] {
            assert_eq!(unbounded(kind), Vec::<String>::new(), "{kind}");
        }
    }

    #[test]
    fn limits_are_named_by_path_without_the_value() {
        let spec = OAuthClientSpec {
            scopes: vec!["s".repeat(300)],
            audiences: (0..20).map(|i| format!("https://a/{i}")).collect(),
            secret: Some(crate::crd::SecretSpec {
                template: Some([("K".repeat(400), "x".into())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let errors = check_spec("OAuthClient", &spec);
        let text = crate::validation::describe(&errors);
        assert!(text.contains("spec.scopes[0]: is longer than 256 characters"), "{text}");
        assert!(text.contains("spec.audiences: has more than 16 items"), "{text}");
        assert!(
            text.contains("spec.secret.template: has a key longer than 317"),
            "{text}"
        );
        assert!(!text.contains("sss"), "values are not quoted: {text}");
        // Characters, as Kubernetes counts them.
        let scope = ScopeSpec {
            value: "é".repeat(256),
            ..Default::default()
        };
        assert!(check_spec("Scope", &scope).is_empty());
    }
}
