//! The provider's keys delivered to where verifiers run: a ConfigMap (`kauth-jwks` by default)
//! with the JWKS, the issuer and the discovery document in every namespace that owns an
//! accepted Scope (its resource servers verify tokens) or holds a client granted one. Resource
//! servers verify tokens offline from the mounted files; keys published ahead of use reach
//! them before they sign. Only the leader writes, only ConfigMaps of that one name, never one
//! kauth did not create (its label tells), and it removes them where they are no longer
//! wanted. RBAC needs no list or watch of ConfigMaps: kauth reads back only the name it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{Context, MANAGER};
use crate::catalog::{Catalog, ScopeVerdict};
use crate::published;
use crate::registry::Registry;

/// Marks the ConfigMaps kauth writes (and owns).
pub const LABEL: &str = "kauth.dev/jwks";
/// Looked at again at least this often (keys change with time, not only with events).
const EVERY: Duration = Duration::from_secs(30);

/// Where the JWKS goes.
#[derive(Clone)]
pub struct JwksDelivery {
    /// The serving snapshot, whose keys are delivered.
    pub registry: Registry,
    /// The ConfigMap's name in every namespace.
    pub config_map: String,
    /// Namespaces carrying all these labels want it too (`--jwks-namespace-selector`).
    pub namespace_selector: Option<BTreeMap<String, String>>,
}

/// Parses `key=value[,key=value]` (matchLabels) for `--jwks-namespace-selector`.
pub fn parse_match_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("'{pair}' is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("'{pair}' has no key"));
        }
        labels.insert(key.to_string(), value.trim().to_string());
    }
    if labels.is_empty() {
        return Err("no key=value pair".into());
    }
    Ok(labels)
}

/// The namespaces whose labels include all of `selector`.
fn selected_namespaces(ctx: &Context, selector: &BTreeMap<String, String>) -> BTreeSet<String> {
    ctx.cache
        .namespaces
        .state()
        .iter()
        .filter(|ns| {
            let labels = ns.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|ns| ns.name_any())
        .collect()
}

/// The namespaces that want the JWKS: owners of accepted Scopes and holders of granted
/// clients.
pub fn wanted_namespaces(catalog: &Catalog) -> BTreeSet<String> {
    let owners = catalog
        .scopes
        .iter()
        .filter(|(_, verdict)| matches!(verdict, ScopeVerdict::Accepted))
        .map(|(key, _)| key.namespace.as_str());
    let holders = catalog
        .clients
        .iter()
        .filter(|c| !c.granted.is_empty())
        .map(|c| c.key.namespace.as_str());
    // Gathered borrowed: thousands of clients share a few namespaces, and this runs on every
    // catalog.
    let wanted: BTreeSet<&str> = owners.chain(holders).collect();
    wanted.into_iter().map(str::to_string).collect()
}

/// The ConfigMap's data now.
fn contents(ctx: &Context, delivery: &JwksDelivery) -> BTreeMap<String, String> {
    let snapshot = delivery.registry.load();
    let now = jiff::Timestamp::now();
    // Secretless clients exist only where ServiceAccount tokens are verified; the document
    // here is for verifiers, who read the issuer, the endpoints and the keys.
    let discovery = published::discovery(&ctx.issuer, &snapshot.keys, false, now);
    BTreeMap::from([
        ("issuer".to_string(), ctx.issuer.url.clone()),
        (
            "jwks.json".to_string(),
            published::jwks(&snapshot.keys, now).to_string(),
        ),
        ("openid-configuration.json".to_string(), discovery.to_string()),
    ])
}

/// Keeps the ConfigMaps in step until the leadership ends. Never returns otherwise.
pub async fn deliver(ctx: Arc<Context>, delivery: JwksDelivery) {
    let mut published = ctx.cache.verdicts.subscribe();
    // Where kauth's ConfigMaps are: swept once from every namespace (by name), then known.
    let mut placed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut swept = false;
    loop {
        if !swept {
            swept = sweep(&ctx, &delivery, &mut placed).await.is_ok();
        }
        let wanted = {
            let catalog = published.borrow_and_update();
            catalog.settled.then(|| wanted_namespaces(&catalog))
        };
        let wanted = wanted.map(|mut wanted| {
            if let Some(selector) = &delivery.namespace_selector {
                wanted.extend(selected_namespaces(&ctx, selector));
            }
            wanted
        });
        if let Some(wanted) = wanted.filter(|_| swept) {
            let data = contents(&ctx, &delivery);
            for ns in &wanted {
                if placed.get(ns) != Some(&data) {
                    match put(&ctx, &delivery.config_map, ns, &data).await {
                        Ok(true) => {
                            placed.insert(ns.clone(), data.clone());
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(namespace = %ns, error = %e, "cannot deliver the JWKS; retrying"),
                    }
                }
            }
            let gone: Vec<String> = placed.keys().filter(|ns| !wanted.contains(*ns)).cloned().collect();
            for ns in gone {
                let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                let deleted = withdraw(&api, &delivery.config_map).await;
                match deleted {
                    Ok(()) => {
                        tracing::info!(namespace = %ns, config_map = %delivery.config_map, "JWKS withdrawn");
                        placed.remove(&ns);
                    }
                    Err(e) => tracing::warn!(namespace = %ns, error = %e, "cannot withdraw the JWKS; retrying"),
                }
            }
        }
        // Namespace labels change without a verdict changing: with a selector, look every
        // second (comparing in memory; nothing is written unless something changed).
        let every = if delivery.namespace_selector.is_some() {
            Duration::from_secs(1)
        } else {
            EVERY
        };
        let _ = tokio::time::timeout(every, published.changed()).await;
    }
}

/// Finds the ConfigMaps kauth placed before (this leader's start): one GET by name per
/// namespace.
async fn sweep(
    ctx: &Context,
    delivery: &JwksDelivery,
    placed: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), kube::Error> {
    for ns in ctx.cache.namespaces.state() {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns.name_any());
        if let Some(cm) = api.get_opt(&delivery.config_map).await?
            && ours(&cm)
        {
            placed.insert(ns.name_any(), cm.data.unwrap_or_default());
        }
    }
    Ok(())
}

/// Deletes the ConfigMap `name` if it is still kauth's (and still the one read: a ConfigMap
/// someone else put there meanwhile is not deleted).
async fn withdraw(api: &Api<ConfigMap>, name: &str) -> Result<(), kube::Error> {
    let Some(cm) = api.get_opt(name).await?.filter(ours) else {
        return Ok(());
    };
    let only_this = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: cm.uid(),
            resource_version: cm.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(name, &only_this).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn ours(cm: &ConfigMap) -> bool {
    cm.labels().get(LABEL).is_some_and(|v| v == "true")
}

/// Writes the ConfigMap in `ns`; false (and a warning) when a ConfigMap of that name exists
/// that kauth did not create: it is left alone.
async fn put(ctx: &Context, name: &str, ns: &str, data: &BTreeMap<String, String>) -> Result<bool, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(existing) = api.get_opt(name).await?
        && !ours(&existing)
    {
        tracing::warn!(namespace = %ns, config_map = %name, "a ConfigMap kauth did not create has the JWKS's name; left alone");
        return Ok(false);
    }
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {LABEL: "true", "app.kubernetes.io/managed-by": MANAGER},
            "annotations": {"kauth.dev/purpose": "kauth's public keys, issuer and discovery document, for verifying its tokens offline; written by kauth"},
        },
        "data": data,
    });
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(config_map))
        .await?;
    tracing::info!(namespace = %ns, config_map = %name, "JWKS delivered");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ClientInput, ScopeInput};
    use crate::claims::{ClaimRules, Ledger};
    use crate::crd::{OAuthClientSpec, ScopeSpec};

    #[test]
    fn owners_of_scopes_and_holders_of_granted_clients_want_the_keys() {
        let scope: ScopeSpec = serde_json::from_value(serde_json::json!({
            "value": "orders.read", "audience": "https://orders.example.com",
            "grantedTo": {"namespaces": ["shop"]}
        }))
        .unwrap();
        let asks: OAuthClientSpec = serde_json::from_value(serde_json::json!({"scopes": ["orders.read"]})).unwrap();
        let scopes = [ScopeInput {
            namespace: "orders",
            name: "read",
            generation: Some(1),
            releasing: false,
            spec: &scope,
        }];
        let client = |namespace| ClientInput {
            namespace,
            name: "app",
            uid: namespace,
            generation: Some(1),
            releasing: false,
            spec: &asks,
        };
        let catalog = Catalog::evaluate_with(
            &[client("shop"), client("elsewhere")],
            &scopes,
            &Default::default(),
            &Ledger::default(),
            ClaimRules::default(),
        );
        let wanted: Vec<String> = wanted_namespaces(&catalog).into_iter().collect();
        assert_eq!(wanted, ["orders", "shop"], "not a namespace whose client was refused");
    }
}
