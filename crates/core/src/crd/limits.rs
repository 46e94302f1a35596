//! The size of everything a team writes into a kauth resource (README, Tenancy, T9): each string,
//! list and map of the CRDs has one of these as its schema limit, so the apiserver refuses a
//! larger object, and `validation::bounds` checks the same schema in standalone mode and for
//! objects stored before a limit existed. Templates and claims derive their budgets from them.

/// A duration such as `720h`.
pub const DURATION: usize = 32;
/// A URI: audiences, redirect URIs, a Scope's audience.
pub const URI: usize = 2048;
/// A Kubernetes object name (DNS subdomain): Secrets, ServiceAccounts, OAuthClients.
pub const OBJECT_NAME: usize = 253;
/// A namespace name (DNS label).
pub const NAMESPACE: usize = 63;
/// A Secret key name.
pub const SECRET_KEY: usize = 253;
/// A map key: a label or annotation key (`prefix/name`) or a Secret key.
pub const MAP_KEY: usize = 317;
/// A label value.
pub const LABEL_VALUE: usize = 63;
/// A Scope value (RFC 6749 scope-token).
pub const SCOPE_VALUE: usize = 256;
/// A free-text field: a Scope's description.
pub const TEXT: usize = 1024;
/// A rotation trigger (any new value rotates once).
pub const TRIGGER: usize = 253;
/// One annotation value (all of a Secret's annotations together: 128 KiB).
pub const ANNOTATION_VALUE: usize = 16 * 1024;
/// One template's source.
pub const TEMPLATE_SOURCE: usize = 4096;

/// Public keys one client may register (`spec.jwks`).
pub const CLIENT_KEYS: usize = 8;
/// One member of a public JWK (an RSA modulus of 8192 bits is 1366 base64url characters).
pub const JWK_MEMBER: usize = 2048;
/// A short JWK member: `kty`, `crv`, `alg`, `use`.
pub const JWK_NAME: usize = 16;

/// Scopes one client may ask for.
pub const SCOPES: usize = 64;
/// Audiences one client may name.
pub const AUDIENCES: usize = 16;
/// Redirect URIs (and post-logout redirect URIs) of one client.
pub const REDIRECT_URIS: usize = 32;
/// Grant types of one client (each at most once).
pub const GRANT_TYPES: usize = 8;
/// Presets of one Secret.
pub const PRESETS: usize = 3;
/// Templated keys of one Secret.
pub const TEMPLATES: usize = 32;
/// Labels, and annotations, a team adds to one Secret.
pub const SECRET_METADATA: usize = 64;
/// Namespaces, and clients, one Scope is granted to by name.
pub const GRANTEES: usize = 256;
/// Labels one namespace selector matches.
pub const SELECTOR_LABELS: usize = 32;
/// Expressions of one namespace selector, and values of one expression.
pub const SELECTOR_EXPRESSIONS: usize = 16;

/// Bounds a map field's schema (an optional `BTreeMap<String, String>`): at most `entries`
/// entries, values of at most `value` characters, and keys of at most [`MAP_KEY`] (a CEL rule:
/// structural schemas cannot bound keys; clusters older than 1.25 ignore it, and kauth's own
/// check covers them).
pub fn bound_map(schema: &mut schemars::Schema, entries: usize, value: usize) {
    schema.insert("maxProperties".into(), entries.into());
    schema.insert(
        "additionalProperties".into(),
        serde_json::json!({"type": "string", "maxLength": value}),
    );
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([{
            "rule": format!("self.all(k, size(k) <= {MAP_KEY})"),
            "message": format!("keys are at most {MAP_KEY} characters"),
        }]),
    );
}

/// Bounds a `LabelSelector` (Kubernetes' own type, which carries no limits).
pub fn bound_label_selector(schema: &mut schemars::Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    if let Some(labels) = properties.get_mut("matchLabels").and_then(|l| l.as_object_mut()) {
        labels.insert("maxProperties".into(), SELECTOR_LABELS.into());
        labels.insert(
            "additionalProperties".into(),
            serde_json::json!({"type": "string", "maxLength": LABEL_VALUE}),
        );
    }
    let expressions = properties.get_mut("matchExpressions").and_then(|e| e.as_object_mut());
    if let Some(expressions) = expressions {
        expressions.insert("maxItems".into(), SELECTOR_EXPRESSIONS.into());
        let fields = expressions
            .get_mut("items")
            .and_then(|i| i.get_mut("properties"))
            .and_then(|p| p.as_object_mut());
        if let Some(fields) = fields {
            for (name, max) in [("key", MAP_KEY), ("operator", 16)] {
                if let Some(f) = fields.get_mut(name).and_then(|f| f.as_object_mut()) {
                    f.insert("maxLength".into(), max.into());
                }
            }
            if let Some(values) = fields.get_mut("values").and_then(|v| v.as_object_mut()) {
                values.insert("maxItems".into(), SELECTOR_EXPRESSIONS.into());
                values.insert(
                    "items".into(),
                    serde_json::json!({"type": "string", "maxLength": LABEL_VALUE}),
                );
            }
        }
    }
}
