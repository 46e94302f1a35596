//! The pure evaluation of every OAuthClient and Scope together: which scope values are owned
//! by whom, which client ids belong to whom, and what each client is granted. The controller
//! turns it into status; the registry turns it into what the provider serves. Standalone
//! mode uses it unchanged, so a manifest behaves the same with or without a cluster.

use std::collections::HashMap;
use std::fmt;

use crate::crd::{OAuthClientSpec, ScopeSpec};
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

fn grants(scope: &ScopeSpec, owner_ns: &str, client: &ObjectKey) -> bool {
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
}

impl Catalog {
    /// Evaluates everything. Inputs come in precedence order (oldest first): on a conflict the
    /// earlier Scope keeps its value and the earlier client keeps its id.
    pub fn evaluate(clients: &[ClientInput<'_>], scopes: &[ScopeInput<'_>]) -> Self {
        let mut catalog = Catalog::default();
        let mut scope_specs: HashMap<&str, (&ScopeSpec, &str)> = HashMap::new();
        for s in scopes {
            let key = ObjectKey::new(s.namespace, s.name);
            let verdict = match validate_scope(s.spec) {
                Err(errors) => ScopeVerdict::Invalid(errors),
                Ok(()) => match catalog.scope_values.get(&s.spec.value) {
                    Some(existing) => ScopeVerdict::Conflict {
                        owner: existing.owner.clone(),
                    },
                    None => {
                        catalog.scope_values.insert(
                            s.spec.value.clone(),
                            AcceptedScope {
                                owner: key.clone(),
                                audience: s.spec.audience.clone(),
                            },
                        );
                        scope_specs.insert(&s.spec.value, (s.spec, s.namespace));
                        ScopeVerdict::Accepted
                    }
                },
            };
            catalog.scopes.push((key, verdict));
        }

        let mut id_owner: HashMap<String, ObjectKey> = HashMap::new();
        for c in clients {
            let key = ObjectKey::new(c.namespace, c.name);
            let settings = validate_client(c.name, c.spec);
            let client_id = c
                .spec
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id(c.namespace, c.name));
            let id_conflict = match (&settings, id_owner.get(&client_id)) {
                (Ok(_), Some(owner)) => Some(owner.clone()),
                (Ok(_), None) => {
                    id_owner.insert(client_id.clone(), key.clone());
                    None
                }
                (Err(_), _) => None,
            };
            let mut granted = Vec::new();
            let mut missing = Vec::new();
            for value in &c.spec.scopes {
                match scope_specs.get(value.as_str()) {
                    None => missing.push(MissingGrant {
                        scope: value.clone(),
                        reason: format!("no accepted Scope offers '{value}'"),
                    }),
                    Some((spec, owner_ns)) if grants(spec, owner_ns, &key) => granted.push(GrantedScope {
                        value: value.clone(),
                        audience: spec.audience.clone(),
                    }),
                    Some((_, _)) => {
                        let owner = &catalog.scope_values[value.as_str()].owner;
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
            catalog.clients.push(ClientVerdict {
                key,
                settings,
                client_id,
                id_conflict,
                granted,
                missing,
            });
        }
        catalog
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
        let cat = Catalog::evaluate(&clients, &scopes);
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
        let cat = Catalog::evaluate(&[], &scopes);
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
        let cat = Catalog::evaluate(&clients, &[]);
        assert!(cat.clients[0].servable());
        assert_eq!(cat.clients[1].id_conflict, Some(ObjectKey::new("one", "a")));
        assert!(!cat.clients[1].servable());
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
        );
        assert!(matches!(cat.scopes[0].1, ScopeVerdict::Invalid(_)));
        assert!(!cat.clients[0].servable());
        assert!(cat.clients[1].servable());
        assert_eq!(cat.clients[1].granted.len(), 1);
    }
}
