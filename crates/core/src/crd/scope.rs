//! `Scope`: a permission an API team offers, and to whom.
// Each printcolumn(...) repeats `type_ = "string"`, which clippy mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::limits as limit;

/// An OAuth scope value owned by the namespace that declares it, with the namespaces and
/// clients allowed to request it. Values are cluster-unique: the first claimant wins.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kauth.dev",
    version = "v1alpha1",
    kind = "Scope",
    namespaced,
    status = "ScopeStatus",
    shortname = "oscope",
    category = "kauth",
    doc = "An OAuth scope offered by an API team, granted to namespaces or clients.",
    printcolumn(name = "Value", type_ = "string", json_path = ".spec.value"),
    printcolumn(name = "Audience", type_ = "string", json_path = ".spec.audience"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ScopeSpec {
    /// The scope string clients request (RFC 6749 §3.3 scope-token), e.g. `orders.read`.
    // maxLength bounds the CEL cost estimate, which modern apiservers check.
    #[schemars(length(min = 1, max = limit::SCOPE_VALUE))]
    #[x_kube(validation = Rule::new("self.matches('^[!#-\\\\[\\\\]-~]+$')").message("value must be an RFC 6749 scope-token: printable ASCII without spaces, '\"' or '\\\\'"))]
    #[x_kube(validation = Rule::new("!(self in ['openid', 'profile', 'email', 'groups', 'address', 'phone', 'offline_access'])").message("value is reserved for OpenID Connect"))]
    pub value: String,
    /// Shown to people on the consent screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::TEXT))]
    pub description: Option<String>,
    /// The API this scope is for (an absolute URI); becomes the token's `aud`. An audience
    /// belongs to the first namespace whose Scope declares it: Scopes of other namespaces
    /// naming it are refused, and only clients granted one of its Scopes get tokens for it.
    /// Besides a URI, the client id of a client in this Scope's own namespace
    /// (`<namespace>.<name>`), e.g. the platform's `kauth.kubectl`, whose id kube-apiserver
    /// takes as its audience: tokens for the cluster, for the namespaces granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = limit::URI),
        regex(pattern = r"^([A-Za-z][A-Za-z0-9+.-]*:[^#\s]+|[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
    )]
    pub audience: Option<String>,
    /// Who may request the scope. The Scope's own namespace always may.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!has(self.namespaceSelector) || (has(self.namespaceSelector.matchLabels) && size(self.namespaceSelector.matchLabels) > 0) || (has(self.namespaceSelector.matchExpressions) && size(self.namespaceSelector.matchExpressions) > 0)").message("an empty namespaceSelector would match every namespace; write namespaces: [\"*\"] to mean that"))]
    pub granted_to: ScopeGrants,
    /// Whether people must consent before a client gets this scope. Default true.
    #[serde(default = "default_true")]
    pub consent_required: bool,
}

fn default_true() -> bool {
    true
}

/// Grants of a scope.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeGrants {
    /// Namespaces whose clients may request the scope; `"*"` means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::GRANTEES), inner(length(max = limit::NAMESPACE), regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")))]
    pub namespaces: Vec<String>,
    /// Namespaces whose labels match this selector may request the scope (for example every
    /// namespace labelled `team=payments`). An empty selector is refused: use `namespaces: ["*"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = limit::bound_label_selector)]
    pub namespace_selector: Option<LabelSelector>,
    /// Individual clients that may request the scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::GRANTEES))]
    pub clients: Vec<ClientRef>,
}

/// A reference to an OAuthClient.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub struct ClientRef {
    /// Namespace of the OAuthClient.
    #[schemars(length(max = limit::NAMESPACE), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// Name of the OAuthClient.
    #[schemars(
        length(max = limit::OBJECT_NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Observed state of a Scope.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted (False with reason Conflict or Invalid when the scope is ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
