//! The pure evaluation of every OAuthClient and Scope together: which scope values are owned
//! by whom, which client ids belong to whom, and what each client is granted. The controller
//! turns it into status; the registry turns it into what the provider serves. Standalone
//! mode uses it unchanged, so a manifest behaves the same with or without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use kube::core::{Selector, SelectorExt};

use crate::crd::{GrantType, OAuthClientSpec, ScopeSpec};
use crate::validation::{ClientSettings, FieldError, validate_client, validate_scope};

/// Namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from borrowed parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An OAuthClient as the catalog sees it.
#[derive(Clone, Copy, Debug)]
pub struct ClientInput<'a> {
    /// Namespace and name.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Spec.
    pub spec: &'a OAuthClientSpec,
}

/// A Scope as the catalog sees it.
#[derive(Clone, Copy, Debug)]
pub struct ScopeInput<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Spec.
    pub spec: &'a ScopeSpec,
}

/// The verdict on one Scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeVerdict {
    /// The scope owns its value and is in force.
    Accepted,
    /// Invalid fields; ignored.
    Invalid(Vec<FieldError>),
    /// Another Scope claimed the value first; ignored.
    Conflict { owner: ObjectKey },
}

/// An accepted scope value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedScope {
    /// The Scope resource that owns the value.
    pub owner: ObjectKey,
    /// Token audience of the scope, if any.
    pub audience: Option<String>,
    /// What the scope allows, for the consent page.
    pub description: Option<String>,
    /// Whether people must consent before a client gets it.
    pub consent_required: bool,
}

/// Why a requested scope is not granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingGrant {
    /// The scope value.
    pub scope: String,
    /// Human-readable reason naming the grant that is missing.
    pub reason: String,
}

/// A scope a client may request, with its audience.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantedScope {
    /// Scope value.
    pub value: String,
    /// Audience of the owning Scope.
    pub audience: Option<String>,
}

/// The verdict on one OAuthClient.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientVerdict {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Validated settings, or the invalid fields.
    pub settings: Result<ClientSettings, Vec<FieldError>>,
    /// The client id it asks for (default or override).
    pub client_id: String,
    /// Set when another client holds the id; this one is then not served.
    pub id_conflict: Option<ObjectKey>,
    /// Requested and granted scopes.
    pub granted: Vec<GrantedScope>,
    /// Requested and not granted scopes.
    pub missing: Vec<MissingGrant>,
    /// Resource indicators it may request besides its scopes' audiences.
    pub audiences: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<GrantType>,
}

impl ClientVerdict {
    /// True when the provider should serve this client.
    pub fn servable(&self) -> bool {
        self.settings.is_ok() && self.id_conflict.is_none()
    }
}

/// The evaluation of all clients and scopes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// Scope verdicts, in input order.
    pub scopes: Vec<(ObjectKey, ScopeVerdict)>,
    /// Accepted scopes by value.
    pub scope_values: HashMap<String, AcceptedScope>,
    /// Client verdicts, in input order.
    pub clients: Vec<ClientVerdict>,
}

/// The default client id: `<namespace>.<name>`. Namespaces hold no '.', so the first '.'
/// separates them, and explicit ids may not contain '.', so defaults are never taken.
pub fn default_client_id(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// Labels of each namespace, for Scopes granted by namespace selector.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

fn grants(scope: &ScopeSpec, owner_ns: &str, client: &ObjectKey, labels: &NamespaceLabels) -> bool {
    let by_selector = || {
        let Some(selector) = &scope.granted_to.namespace_selector else {
            return false;
        };
        let (Ok(selector), Some(labels)) = (Selector::try_from(selector.clone()), labels.get(&client.namespace)) else {
            return false;
        };
        selector.matches(labels)
    };
    owner_ns == client.namespace
        || scope
            .granted_to
            .namespaces
            .iter()
            .any(|ns| ns == "*" || *ns == client.namespace)
        || scope
            .granted_to
            .clients
            .iter()
            .any(|c| c.namespace == client.namespace && c.name == client.name)
        || by_selector()
}

/// The accepted scopes, by value, with the spec and namespace of their owner.
type ScopeIndex<'a> = HashMap<&'a str, (&'a ScopeSpec, &'a str)>;

impl ClientInput<'_> {
    /// The client id this client asks for.
    pub fn client_id(&self) -> String {
        self.spec
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id(self.namespace, self.name))
    }
}

impl Catalog {
    /// Evaluates everything. Inputs come in precedence order (oldest first): on a conflict the
    /// earlier Scope keeps its value and the earlier client keeps its id.
    pub fn evaluate(clients: &[ClientInput<'_>], scopes: &[ScopeInput<'_>], labels: &NamespaceLabels) -> Self {
        let mut catalog = Catalog::default();
        let index = catalog.index_scopes(scopes);
        let mut id_owner: HashMap<String, ObjectKey> = HashMap::new();
        for c in clients {
            let settings = validate_client(c.name, c.spec);
            let client_id = c.client_id();
            let id_conflict = match (&settings, id_owner.get(&client_id)) {
                (Ok(_), Some(owner)) => Some(owner.clone()),
                (Ok(_), None) => {
                    id_owner.insert(client_id.clone(), ObjectKey::new(c.namespace, c.name));
                    None
                }
                (Err(_), _) => None,
            };
            let verdict = catalog.client_verdict(labels, c, settings, client_id, id_conflict, &index);
            catalog.clients.push(verdict);
        }
        catalog
    }

    /// Clients whose verdict differs from (or is absent in) `previous`: the ones a reconcile
    /// must look at again. Removed clients need none.
    pub fn changed_clients(&self, previous: &Catalog) -> Vec<ObjectKey> {
        let before: HashMap<&ObjectKey, &ClientVerdict> = previous.clients.iter().map(|v| (&v.key, v)).collect();
        self.clients
            .iter()
            .filter(|v| before.get(&v.key) != Some(v))
            .map(|v| v.key.clone())
            .collect()
    }

    /// Scopes whose verdict differs from (or is absent in) `previous`.
    pub fn changed_scopes(&self, previous: &Catalog) -> Vec<ObjectKey> {
        let before: HashMap<&ObjectKey, &ScopeVerdict> = previous.scopes.iter().map(|(k, v)| (k, v)).collect();
        self.scopes
            .iter()
            .filter(|(k, v)| before.get(k) != Some(&v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Evaluates one client (`clients[target]`) without evaluating the others: only the
    /// earlier clients asking for the same id are validated. What a reconcile needs, in
    /// O(clients) string comparisons and no per-client allocation.
    pub fn evaluate_client(
        clients: &[ClientInput<'_>],
        target: usize,
        scopes: &[ScopeInput<'_>],
        labels: &NamespaceLabels,
    ) -> ClientVerdict {
        let mut catalog = Catalog::default();
        let index = catalog.index_scopes(scopes);
        let c = &clients[target];
        let settings = validate_client(c.name, c.spec);
        let client_id = c.client_id();
        let id_conflict = settings.is_ok().then(|| {
            clients[..target]
                .iter()
                .find(|other| {
                    let same = match &other.spec.client_id {
                        Some(id) => *id == client_id,
                        None => {
                            other.spec.client_id.is_none()
                                && default_client_id(other.namespace, other.name) == client_id
                        }
                    };
                    same && validate_client(other.name, other.spec).is_ok()
                })
                .map(|owner| ObjectKey::new(owner.namespace, owner.name))
        });
        catalog.client_verdict(labels, c, settings, client_id, id_conflict.flatten(), &index)
    }

    /// Decides every Scope and returns the index of accepted ones.
    fn index_scopes<'a>(&mut self, scopes: &[ScopeInput<'a>]) -> ScopeIndex<'a> {
        let mut index: ScopeIndex<'a> = HashMap::new();
        for s in scopes {
            let key = ObjectKey::new(s.namespace, s.name);
            let verdict = match validate_scope(s.spec) {
                Err(errors) => ScopeVerdict::Invalid(errors),
                Ok(()) => match self.scope_values.get(&s.spec.value) {
                    Some(existing) => ScopeVerdict::Conflict {
                        owner: existing.owner.clone(),
                    },
                    None => {
                        let accepted = AcceptedScope {
                            owner: key.clone(),
                            audience: s.spec.audience.clone(),
                            description: s.spec.description.clone(),
                            consent_required: s.spec.consent_required,
                        };
                        self.scope_values.insert(s.spec.value.clone(), accepted);
                        index.insert(s.spec.value.as_str(), (s.spec, s.namespace));
                        ScopeVerdict::Accepted
                    }
                },
            };
            self.scopes.push((key, verdict));
        }
        index
    }

    fn client_verdict(
        &self,
        labels: &NamespaceLabels,
        c: &ClientInput<'_>,
        settings: Result<ClientSettings, Vec<FieldError>>,
        client_id: String,
        id_conflict: Option<ObjectKey>,
        index: &ScopeIndex<'_>,
    ) -> ClientVerdict {
        let key = ObjectKey::new(c.namespace, c.name);
        let mut granted = Vec::new();
        let mut missing = Vec::new();
        for value in &c.spec.scopes {
            match index.get(value.as_str()) {
                None => missing.push(MissingGrant {
                    scope: value.clone(),
                    reason: format!("no accepted Scope offers '{value}'"),
                }),
                Some((spec, owner_ns)) if grants(spec, owner_ns, &key, labels) => granted.push(GrantedScope {
                    value: value.clone(),
                    audience: spec.audience.clone(),
                }),
                Some((_, _)) => {
                    let owner = &self.scope_values[value.as_str()].owner;
                    missing.push(MissingGrant {
                        scope: value.clone(),
                        reason: format!(
                            "Scope {owner} does not grant '{value}' to namespace {} (add it to spec.grantedTo)",
                            key.namespace
                        ),
                    })
                }
            }
        }
        ClientVerdict {
            key,
            settings,
            client_id,
            id_conflict,
            granted,
            missing,
            audiences: c.spec.audiences.clone(),
            grant_types: c.spec.grant_types.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClientRef, GrantType, ScopeGrants};

    fn client(scopes: &[&str]) -> OAuthClientSpec {
        OAuthClientSpec {
            grant_types: vec![GrantType::ClientCredentials],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn scope(value: &str, namespaces: &[&str], clients: &[(&str, &str)]) -> ScopeSpec {
        ScopeSpec {
            value: value.into(),
            audience: Some("https://orders.example.com".into()),
            granted_to: ScopeGrants {
                namespace_selector: None,
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                clients: clients
                    .iter()
                    .map(|(n, c)| ClientRef {
                        namespace: n.to_string(),
                        name: c.to_string(),
                    })
                    .collect(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn grants_by_namespace_client_owner_and_wildcard() {
        let read = scope("orders.read", &["shop"], &[]);
        let write = scope("orders.write", &[], &[("billing", "invoicer")]);
        let public = scope("catalog.read", &["*"], &[]);
        let scopes = [
            ScopeInput {
                namespace: "orders",
                name: "read",
                spec: &read,
            },
            ScopeInput {
                namespace: "orders",
                name: "write",
                spec: &write,
            },
            ScopeInput {
                namespace: "catalog",
                name: "read",
                spec: &public,
            },
        ];
        let shop = client(&["orders.read", "orders.write", "catalog.read", "nope"]);
        let invoicer = client(&["orders.write"]);
        let own = client(&["orders.write"]);
        let clients = [
            ClientInput {
                namespace: "shop",
                name: "web",
                spec: &shop,
            },
            ClientInput {
                namespace: "billing",
                name: "invoicer",
                spec: &invoicer,
            },
            ClientInput {
                namespace: "orders",
                name: "self",
                spec: &own,
            },
        ];
        let cat = Catalog::evaluate(&clients, &scopes, &NamespaceLabels::new());
        let shop = &cat.clients[0];
        assert_eq!(shop.client_id, "shop.web");
        let granted: Vec<_> = shop.granted.iter().map(|g| g.value.as_str()).collect();
        assert_eq!(granted, ["orders.read", "catalog.read"]);
        assert_eq!(shop.missing.len(), 2);
        assert_eq!(
            shop.missing[0].reason,
            "Scope orders/write does not grant 'orders.write' to namespace shop (add it to spec.grantedTo)"
        );
        assert_eq!(shop.missing[1].reason, "no accepted Scope offers 'nope'");
        assert_eq!(cat.clients[1].granted.len(), 1, "granted to one client by name");
        assert_eq!(cat.clients[2].granted.len(), 1, "the owner namespace is always granted");
    }

    #[test]
    fn namespace_selectors_grant_by_label() {
        let mut by_label = scope("payments.read", &[], &[]);
        by_label.granted_to.namespace_selector = Some(
            serde_json::from_value(serde_json::json!({
                "matchLabels": {"team": "payments"},
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["sandbox"]}]
            }))
            .unwrap(),
        );
        let scopes = [ScopeInput {
            namespace: "payments-api",
            name: "read",
            spec: &by_label,
        }];
        let spec = client(&["payments.read"]);
        let clients = [
            ClientInput {
                namespace: "checkout",
                name: "a",
                spec: &spec,
            },
            ClientInput {
                namespace: "sandbox",
                name: "b",
                spec: &spec,
            },
            ClientInput {
                namespace: "unlabelled",
                name: "c",
                spec: &spec,
            },
        ];
        let labels: NamespaceLabels = [
            (
                "checkout".to_string(),
                BTreeMap::from([("team".to_string(), "payments".to_string())]),
            ),
            (
                "sandbox".to_string(),
                BTreeMap::from([("team".into(), "payments".into()), ("env".into(), "sandbox".into())]),
            ),
        ]
        .into();
        let cat = Catalog::evaluate(&clients, &scopes, &labels);
        assert_eq!(cat.clients[0].granted.len(), 1, "label matches");
        assert_eq!(cat.clients[1].granted.len(), 0, "excluded by the expression");
        assert_eq!(cat.clients[2].granted.len(), 0, "no labels, no grant");
    }

    #[test]
    fn a_label_change_marks_exactly_the_clients_it_regrants() {
        let mut by_label = scope("payments.read", &[], &[]);
        by_label.granted_to.namespace_selector =
            Some(serde_json::from_value(serde_json::json!({"matchLabels": {"team": "payments"}})).unwrap());
        let scopes = [ScopeInput {
            namespace: "payments-api",
            name: "read",
            spec: &by_label,
        }];
        let spec = client(&["payments.read"]);
        let clients = [
            ClientInput {
                namespace: "checkout",
                name: "a",
                spec: &spec,
            },
            ClientInput {
                namespace: "other",
                name: "b",
                spec: &spec,
            },
        ];
        let before = Catalog::evaluate(&clients, &scopes, &NamespaceLabels::new());
        let labels: NamespaceLabels = [(
            "checkout".to_string(),
            BTreeMap::from([("team".to_string(), "payments".to_string())]),
        )]
        .into();
        let after = Catalog::evaluate(&clients, &scopes, &labels);
        assert_eq!(after.changed_clients(&before), vec![ObjectKey::new("checkout", "a")]);
        assert!(after.changed_scopes(&before).is_empty());
        assert!(after.changed_clients(&after).is_empty());
        let fresh = Catalog::default();
        assert_eq!(after.changed_clients(&fresh).len(), 2, "new clients count as changed");
        assert_eq!(
            after.changed_scopes(&fresh),
            vec![ObjectKey::new("payments-api", "read")]
        );
    }

    #[test]
    fn first_scope_claimant_wins() {
        let a = scope("orders.read", &["*"], &[]);
        let b = scope("orders.read", &["*"], &[]);
        let scopes = [
            ScopeInput {
                namespace: "orders",
                name: "read",
                spec: &a,
            },
            ScopeInput {
                namespace: "evil",
                name: "read",
                spec: &b,
            },
        ];
        let cat = Catalog::evaluate(&[], &scopes, &NamespaceLabels::new());
        assert_eq!(cat.scopes[0].1, ScopeVerdict::Accepted);
        assert_eq!(
            cat.scopes[1].1,
            ScopeVerdict::Conflict {
                owner: ObjectKey::new("orders", "read")
            }
        );
        assert_eq!(cat.scope_values["orders.read"].owner, ObjectKey::new("orders", "read"));
    }

    #[test]
    fn client_id_conflicts_are_reported_never_shared() {
        let mut a = client(&[]);
        a.client_id = Some("legacy".into());
        let b = a.clone();
        let clients = [
            ClientInput {
                namespace: "one",
                name: "a",
                spec: &a,
            },
            ClientInput {
                namespace: "two",
                name: "b",
                spec: &b,
            },
        ];
        let cat = Catalog::evaluate(&clients, &[], &NamespaceLabels::new());
        assert!(cat.clients[0].servable());
        assert_eq!(cat.clients[1].id_conflict, Some(ObjectKey::new("one", "a")));
        assert!(!cat.clients[1].servable());
    }

    #[test]
    fn evaluating_one_client_agrees_with_evaluating_all() {
        let mut shared = client(&["ok"]);
        shared.client_id = Some("shared".into());
        let mut invalid_claim = shared.clone();
        invalid_claim.access_token_lifetime = Some("forever".into());
        let plain = client(&["ok", "missing"]);
        let scope = scope("ok", &["a"], &[]);
        let scopes = [ScopeInput {
            namespace: "s",
            name: "ok",
            spec: &scope,
        }];
        let clients = [
            ClientInput {
                namespace: "a",
                name: "invalid",
                spec: &invalid_claim,
            },
            ClientInput {
                namespace: "a",
                name: "first",
                spec: &shared,
            },
            ClientInput {
                namespace: "a",
                name: "second",
                spec: &shared,
            },
            ClientInput {
                namespace: "a",
                name: "plain",
                spec: &plain,
            },
        ];
        let all = Catalog::evaluate(&clients, &scopes, &NamespaceLabels::new());
        for i in 0..clients.len() {
            assert_eq!(
                Catalog::evaluate_client(&clients, i, &scopes, &NamespaceLabels::new()),
                all.clients[i],
                "client {i}"
            );
        }
        assert_eq!(
            all.clients[2].id_conflict,
            Some(ObjectKey::new("a", "first")),
            "an invalid claimant owns nothing"
        );
    }

    #[test]
    fn invalid_resources_are_isolated() {
        let bad_scope = ScopeSpec {
            value: "bad value".into(),
            ..Default::default()
        };
        let good_scope = scope("ok", &["*"], &[]);
        let mut bad_client = client(&[]);
        bad_client.access_token_lifetime = Some("forever".into());
        let good_client = client(&["ok"]);
        let cat = Catalog::evaluate(
            &[
                ClientInput {
                    namespace: "a",
                    name: "bad",
                    spec: &bad_client,
                },
                ClientInput {
                    namespace: "a",
                    name: "good",
                    spec: &good_client,
                },
            ],
            &[
                ScopeInput {
                    namespace: "s",
                    name: "bad",
                    spec: &bad_scope,
                },
                ScopeInput {
                    namespace: "s",
                    name: "ok",
                    spec: &good_scope,
                },
            ],
            &NamespaceLabels::new(),
        );
        assert!(matches!(cat.scopes[0].1, ScopeVerdict::Invalid(_)));
        assert!(!cat.clients[0].servable());
        assert!(cat.clients[1].servable());
        assert_eq!(cat.clients[1].granted.len(), 1);
    }
}
