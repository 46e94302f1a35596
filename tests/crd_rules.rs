//! The CEL rules in the CRDs, evaluated locally: the 1.20 test apiserver drops them, and a
//! modern apiserver refuses a CRD whose rules do not compile. Every rule must accept the
//! examples and refuse what its message says.

use std::path::Path;

use kauth::crd::{OAuthClient, Scope};
use kauth::manifests::Manifests;
use kube::core::cel::validate_cel;
use serde_json::json;

fn client(spec: serde_json::Value) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": "team"}, "spec": spec
    }))
    .unwrap()
}

fn scope(value: &str) -> Scope {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "s", "namespace": "api"}, "spec": {"value": value}
    }))
    .unwrap()
}

#[test]
fn the_examples_pass_every_rule() {
    let manifests = Manifests::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).unwrap();
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    for (origin, c) in &manifests.clients {
        validate_cel(c).unwrap_or_else(|e| panic!("{origin}: {e:?}"));
    }
    for (origin, s) in &manifests.scopes {
        validate_cel(s).unwrap_or_else(|e| panic!("{origin}: {e:?}"));
    }
    for (origin, k) in &manifests.signing_keys {
        validate_cel(k).unwrap_or_else(|e| panic!("{origin}: {e:?}"));
    }
}

#[test]
fn client_rules_refuse_what_they_say() {
    let refused = |spec: serde_json::Value, fragment: &str| {
        let err = validate_cel(&client(spec.clone())).expect_err(&spec.to_string());
        assert!(format!("{err:?}").contains(fragment), "{spec}: {err:?}");
    };
    refused(
        json!({"secret": {}, "existingSecret": {"name": "x"}}),
        "mutually exclusive",
    );
    refused(json!({"serviceAccount": "sa", "secret": {}}), "has no secret");
    refused(json!({"clientId": "team-b.app"}), "clientId may only contain");
    assert!(validate_cel(&client(json!({"clientId": "legacy-client_01"}))).is_ok());
    assert!(validate_cel(&client(json!({"serviceAccount": "sa"}))).is_ok());
}

#[test]
fn scope_value_rule_matches_rfc_6749() {
    assert!(validate_cel(&scope("orders.read")).is_ok());
    assert!(validate_cel(&scope("a:b/c!~")).is_ok());
    for bad in ["two words", "quote\"d", "back\\slash"] {
        assert!(validate_cel(&scope(bad)).is_err(), "{bad}");
    }
}

fn scope_spec(spec: serde_json::Value) -> Scope {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "s", "namespace": "api"}, "spec": spec
    }))
    .unwrap()
}

/// What the apiserver can refuse at admission, so fewer typos reach the controller (where a
/// broken Scope still keeps its claims).
#[test]
fn scope_rules_refuse_reserved_values_and_empty_selectors() {
    let refused = |spec: serde_json::Value, fragment: &str| {
        let err = validate_cel(&scope_spec(spec.clone())).expect_err(&spec.to_string());
        assert!(format!("{err:?}").contains(fragment), "{spec}: {err:?}");
    };
    refused(json!({"value": "openid"}), "reserved for OpenID Connect");
    refused(json!({"value": "offline_access"}), "reserved for OpenID Connect");
    refused(
        json!({"value": "x", "grantedTo": {"namespaceSelector": {}}}),
        "empty namespaceSelector",
    );
    refused(
        json!({"value": "x", "grantedTo": {"namespaceSelector": {"matchLabels": {}}}}),
        "empty namespaceSelector",
    );
    let labelled = json!({"value": "x", "grantedTo": {"namespaceSelector": {"matchLabels": {"team": "a"}}}});
    assert!(validate_cel(&scope_spec(labelled)).is_ok());
    let expressions = json!({"value": "x", "grantedTo": {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
    assert!(validate_cel(&scope_spec(expressions)).is_ok());
}

/// Patterns every apiserver enforces (also the 1.20 test apiserver, which ignores CEL).
#[test]
fn scope_schema_constrains_namespaces_clients_and_audience() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(Scope::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let grants = &spec["grantedTo"]["properties"];
    assert_eq!(
        grants["namespaces"]["items"]["pattern"],
        r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
    );
    assert_eq!(grants["namespaces"]["items"]["maxLength"], 63);
    let client = &grants["clients"]["items"]["properties"];
    assert_eq!(client["namespace"]["pattern"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    assert!(client["name"]["pattern"].is_string());
    // A URI, or a client id (`<namespace>.<name>`; that it is this Scope's namespace is the
    // controller's check: a schema pattern cannot see metadata).
    assert_eq!(
        spec["audience"]["pattern"],
        r"^([A-Za-z][A-Za-z0-9+.-]*:[^#\s]+|[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
    );
}
