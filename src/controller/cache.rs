//! The reflector stores both halves read, and the loop that rebuilds the registry snapshot
//! from them on every change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, broadcast, watch};

use super::secrets::{self, CREDENTIALS_LABEL};
use super::watch_health::{WatchHealth, restarted_when_stalled};
use crate::catalog::{Catalog, ClientInput, NamespaceLabels, ScopeInput, releases_claims};
use crate::claims::ClaimPolicy;
use crate::crd::{OAuthClient, Scope, SigningKey};
use crate::credentials::SecretVerifier;
use crate::keys::KeyRing;
use crate::memory::TrimPacer;
use crate::metrics::Metrics;
use crate::registry::{Registry, SecretRead, SecretVersion, Snapshot};
use crate::validation::{SecretHandling, validate_signing_key};

/// Read-only views of the watched resources.
#[derive(Clone)]
pub struct Cache {
    /// OAuthClients in every namespace.
    pub clients: Store<OAuthClient>,
    /// Scopes in every namespace.
    pub scopes: Store<Scope>,
    /// SigningKeys in kauth's namespace.
    pub signing_keys: Store<SigningKey>,
    /// Secrets carrying kauth's credentials label.
    pub secrets: Store<Secret>,
    /// Namespaces, for Scopes granted by namespace selector.
    pub namespaces: Store<Namespace>,
    /// kauth's ConfigMaps in its namespace, among them the claims record
    /// ([`claims_record`](super::claims_record)): who owns which Scope value, audience and
    /// client id, kept across restarts and leader changes.
    pub claims: Store<ConfigMap>,
    /// The record as read from `claims`, parsed again only where it changed.
    pub claims_read: Arc<super::claims_record::RecordReader>,
    /// The catalog the registry loop last built from these stores. Reconciles are triggered by
    /// verdict changes here, not by watches of their own: such a watch can fire before these
    /// stores see the change, and the reconcile would judge the old state and stop.
    pub verdicts: Arc<watch::Sender<Arc<Catalog>>>,
    /// The OAuthClient of every generated credentials Secret that appears, changes or goes:
    /// the OAuthClient controller restores its Secret from these (it keeps no watch of its own).
    pub secret_owners: broadcast::Sender<ObjectRef<OAuthClient>>,
    /// The Secrets kauth itself just wrote, whose echo in the cache is no news to their client.
    pub own_writes: Arc<OwnWrites>,
}

/// The resourceVersion of each Secret kauth has written and the cache has yet to see. The
/// watch event of that very version is kauth's own write coming back: telling the client's
/// controller would only run its reconcile again, and at scale that second reconcile often
/// judged the status from a cached object older than the status it had just written, and
/// wrote it again (1.85 status writes per new client instead of 1). Any other version (an
/// edit, a deletion) is someone else's change and is told as before.
#[derive(Debug, Default)]
pub struct OwnWrites(std::sync::Mutex<HashMap<(String, String), String>>);

impl OwnWrites {
    /// Notes that kauth wrote `secret` (as the apiserver returned it).
    pub fn note(&self, secret: &Secret) {
        let (Some(ns), Some(name), Some(version)) = (
            secret.metadata.namespace.clone(),
            secret.metadata.name.clone(),
            secret.metadata.resource_version.clone(),
        ) else {
            return;
        };
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Echoes that never came (the Secret deleted first) must not pile up: forgetting them
        // costs at most a reconcile each.
        if written.len() >= CHANGES_BUFFERED {
            written.clear();
        }
        written.insert((ns, name), version);
    }

    /// True when `secret` is kauth's own last write of it coming back (forgotten then).
    pub fn is_echo(&self, secret: &Secret) -> bool {
        let key = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (written.get(&key), &secret.metadata.resource_version) {
            (Some(ours), Some(seen)) if ours == seen => {
                written.remove(&key);
                true
            }
            _ => false,
        }
    }
}

/// Changes buffered for a slow listener; one that falls further behind starts over from the
/// whole store.
pub const CHANGES_BUFFERED: usize = 16 * 1024;

/// A reflector of `kind` that retries soon after a failure ([`restarted_when_stalled`]) and tells `health`
/// about every failure and every answer (an event, or the end of a relist).
fn reflect<K>(
    kind: &'static str,
    api: Api<K>,
    cfg: watcher::Config,
    changed: Arc<Notify>,
    health: WatchHealth,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    reflect_observed(kind, api, cfg, changed, health, |_: &K| {})
}

/// As [`reflect`], calling `observe` with every object that appears, changes or goes.
fn reflect_observed<K>(
    kind: &'static str,
    api: Api<K>,
    cfg: watcher::Config,
    changed: Arc<Notify>,
    health: WatchHealth,
    observe: impl Fn(&K) + Send + 'static,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = restarted_when_stalled(kind, move || watch_without_managed_fields(api.clone(), cfg.clone()));
    let stream = reflector::reflector(writer, events).for_each(move |event| {
        match event {
            // Said before the list is sent: no answer yet.
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj) | watcher::Event::InitApply(obj)) => {
                observe(&obj);
                health.answered(kind)
            }
            Ok(_) => health.answered(kind),
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch error, retrying");
                health.failed(kind, e.to_string(), std::time::Instant::now());
            }
        }
        changed.notify_one();
        async {}
    });
    (reader, Box::pin(stream))
}

/// Client-side `kubectl apply` keeps a copy of the whole object in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The events of a watch of `api`, without the objects' managedFields and `kubectl apply`'s
/// copy of the object: most of a small object's size, and nothing kauth reads, so no store
/// keeps them.
pub(super) fn watch_without_managed_fields<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, cfg).modify(trim)
}

/// Drops what no store of kauth's needs to keep (see [`watch_without_managed_fields`]).
fn trim<K: kube::Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

/// Sorts resources oldest first (then by namespace and name): the precedence for conflicts.
fn by_age<K: ResourceExt>(mut items: Vec<Arc<K>>) -> Vec<Arc<K>> {
    // Borrowed keys: `namespace()` and `name_any()` clone, which cost four allocations per
    // comparison (most of a rebuild's sorting time at 10,000 clients).
    items.sort_by(|a, b| age_key(&**a).cmp(&age_key(&**b)));
    items
}

fn age_key<K: ResourceExt>(k: &K) -> (Option<jiff::Timestamp>, Option<&str>, Option<&str>) {
    let m = k.meta();
    (
        m.creation_timestamp.as_ref().map(|t| t.0),
        m.namespace.as_deref(),
        m.name.as_deref(),
    )
}

/// Cached resources in precedence order, which the catalog's inputs borrow.
struct Ordered {
    clients: Vec<Arc<OAuthClient>>,
    scopes: Vec<Arc<Scope>>,
}

/// Namespace and name, borrowed (objects from the apiserver always have both).
fn borrowed_name(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl Ordered {
    fn new(clients: Vec<Arc<OAuthClient>>, scopes: Vec<Arc<Scope>>) -> Self {
        Self {
            clients: by_age(clients),
            scopes: by_age(scopes),
        }
    }

    fn client_inputs(&self) -> Vec<ClientInput<'_>> {
        self.clients
            .iter()
            .map(|c| {
                let (namespace, name) = borrowed_name(&c.metadata);
                ClientInput {
                    namespace,
                    name,
                    uid: c.metadata.uid.as_deref().unwrap_or_default(),
                    generation: c.metadata.generation,
                    releasing: releases_claims(c.annotations()),
                    spec: &c.spec,
                }
            })
            .collect()
    }

    fn scope_inputs(&self) -> Vec<ScopeInput<'_>> {
        self.scopes
            .iter()
            .map(|s| {
                let (namespace, name) = borrowed_name(&s.metadata);
                ScopeInput {
                    namespace,
                    name,
                    generation: s.metadata.generation,
                    releasing: releases_claims(s.annotations()),
                    spec: &s.spec,
                }
            })
            .collect()
    }
}

impl Cache {
    /// Starts the reflectors; `changed` is notified on every event, and `health` learns which
    /// watches fail and when they resync.
    pub fn start(
        client: Client,
        namespace: &str,
        changed: Arc<Notify>,
        health: WatchHealth,
    ) -> (Self, Vec<futures::future::BoxFuture<'static, ()>>) {
        let (n, h) = (&changed, &health);
        let any = watcher::Config::default;
        let (clients, a) = reflect("OAuthClient", Api::all(client.clone()), any(), n.clone(), h.clone());
        let (scopes, b) = reflect("Scope", Api::all(client.clone()), any(), n.clone(), h.clone());
        let keys = Api::namespaced(client.clone(), namespace);
        let (signing_keys, c) = reflect("SigningKey", keys, any(), n.clone(), h.clone());
        let labelled = any().labels(CREDENTIALS_LABEL);
        let secret_owners = broadcast::Sender::new(CHANGES_BUFFERED);
        let owners = secret_owners.clone();
        let own_writes = Arc::new(OwnWrites::default());
        let echoes = own_writes.clone();
        let tell_owner = move |secret: &Secret| {
            if echoes.is_echo(secret) {
                return;
            }
            if let Some(owner) = secrets::client_of(secret) {
                // No receiver (not the leader): nobody to tell.
                let _ = owners.send(owner);
            }
        };
        let (secrets, d) = reflect_observed(
            "Secret",
            Api::all(client.clone()),
            labelled,
            n.clone(),
            h.clone(),
            tell_owner,
        );
        let (namespaces, e) = reflect("Namespace", Api::all(client.clone()), any(), n.clone(), h.clone());
        // The claims record's shards, and the one ConfigMap it was kept in before.
        let record = any().labels(&format!("app.kubernetes.io/managed-by={}", super::MANAGER));
        let claims_api = Api::namespaced(client, namespace);
        let (claims, f) = reflect("claims ConfigMap", claims_api, record, n.clone(), h.clone());
        (
            Self {
                clients,
                scopes,
                signing_keys,
                namespaces,
                secrets,
                claims,
                claims_read: Arc::default(),
                verdicts: Arc::new(watch::Sender::new(Arc::default())),
                secret_owners,
                own_writes,
            },
            vec![a, b, c, d, e, f],
        )
    }

    /// True once every store has its first full list.
    pub async fn synced(&self) {
        let _ = futures::join!(
            self.clients.wait_until_ready(),
            self.scopes.wait_until_ready(),
            self.signing_keys.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.claims.wait_until_ready()
        );
    }

    /// Namespace labels, collected only when some Scope grants by namespace selector.
    fn namespace_labels(&self, scopes: &[ScopeInput<'_>]) -> NamespaceLabels {
        if scopes.iter().all(|s| s.spec.granted_to.namespace_selector.is_none()) {
            return NamespaceLabels::new();
        }
        self.namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect()
    }

    /// The claims record as last seen (empty before the first record; an unreadable shard
    /// counts as empty, and its claims are settled again from the objects' ages).
    pub fn recorded_claims(&self) -> super::claims_record::Recorded {
        self.claims_read.read(&self.claims)
    }

    /// Evaluates every client and scope against the recorded claims (the registry's view).
    fn catalog(&self, claims: &ClaimPolicy) -> Catalog {
        let ordered = Ordered::new(self.clients.state(), self.scopes.state());
        let scopes = ordered.scope_inputs();
        // A new claim is served once the leader has recorded it (and the record came back).
        let rules = claims.rules(jiff::Timestamp::now().as_second(), true);
        Catalog::evaluate_after(
            &self.published(),
            &ordered.client_inputs(),
            &scopes,
            &self.namespace_labels(&scopes),
            &self.recorded_claims().ledger,
            rules,
        )
    }

    /// Evaluates everything and publishes the catalog to the reconcilers.
    pub fn publish_catalog(&self, claims: &ClaimPolicy) -> Arc<Catalog> {
        let catalog = Arc::new(self.catalog(claims));
        self.verdicts.send_replace(catalog.clone());
        catalog
    }

    /// The catalog last published.
    pub fn published(&self) -> Arc<Catalog> {
        self.verdicts.borrow().clone()
    }

    /// A Secret carrying kauth's credentials label, as last seen.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// The serving snapshot of `catalog`, sharing what is unchanged with `previous`.
    fn snapshot(&self, catalog: &Catalog, previous: &Snapshot, kauth_namespace: &str) -> Snapshot {
        let (keys, keys_read_from) = self.key_ring(previous, kauth_namespace);
        let mut snapshot = Snapshot::build(
            catalog,
            previous,
            |v, settings, known| {
                let secret = self.secret(&v.key.namespace, settings.secret.secret_name()?)?;
                // The verdict is the one `known` was read with (same uid, same settings): the
                // same Secret version gives the same answer, so it need not be read again.
                let (uid, version) = (
                    secret.metadata.uid.as_deref(),
                    secret.metadata.resource_version.as_deref(),
                );
                if known.is_some_and(|k| Some(k.uid.as_str()) == uid && Some(k.resource_version.as_str()) == version) {
                    return Some(SecretRead::Unchanged);
                }
                let verifier = match settings.secret.secret_handling() {
                    SecretHandling::Generate(_) => {
                        // Only a Secret this very client (uid) owns counts: a look-alike is
                        // ignored.
                        let owned = !v.uid.is_empty() && secrets::owned_by(&secret, &v.uid);
                        (owned && secrets::labelled(&secret, secrets::GENERATED))
                            .then(|| secrets::credential_state(&secret))
                            .flatten()
                            .map(|s| s.verifier())
                    }
                    SecretHandling::Read(existing) => secrets::labelled(&secret, secrets::EXTERNAL)
                        .then(|| secrets::external_secret_value(&secret, &existing.key))
                        .flatten()
                        .map(SecretVerifier::for_secret),
                    SecretHandling::None(_) => None,
                }?;
                Some(SecretRead::Read(verifier, version_of(&secret)))
            },
            keys,
        );
        snapshot.keys_read_from = keys_read_from;
        snapshot
    }

    /// The signing keys of the valid SigningKeys in kauth's namespace, and the versions of the
    /// key-set Secrets they were read from. Parsing a private key checks it (an RSA check costs
    /// milliseconds), so while those Secrets stay at the versions `previous` was built from,
    /// its keys are kept.
    fn key_ring(&self, previous: &Snapshot, kauth_namespace: &str) -> (KeyRing, Option<Vec<SecretVersion>>) {
        let mut signing_keys = self.signing_keys.state();
        signing_keys.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut secrets = Vec::new();
        for sk in signing_keys {
            if sk.namespace().as_deref() != Some(kauth_namespace) || validate_signing_key(&sk.spec).is_err() {
                continue;
            }
            let Some(uid) = sk.uid() else { continue };
            if let Some(secret) = self.secret(kauth_namespace, &secrets::key_set_secret_name(&sk.name_any()))
                && secrets::owned_by(&secret, &uid)
            {
                secrets.push(secret);
            }
        }
        // None (a Secret without a version) is never the same as anything.
        let versions: Option<Vec<SecretVersion>> = secrets.iter().map(|s| version_of(s)).collect();
        if versions.is_some() && versions == previous.keys_read_from {
            return (previous.keys.clone(), versions);
        }
        let key_sets: Vec<_> = secrets.iter().filter_map(|s| secrets::key_set(s)).collect();
        let (keys, errors) = KeyRing::from_sets(&key_sets);
        for e in errors {
            tracing::warn!(error = %e, "unusable signing key skipped");
        }
        (keys, versions)
    }
}

/// The version a Secret from the apiserver is at (None for one without uid or resourceVersion).
fn version_of(secret: &Secret) -> Option<SecretVersion> {
    Some(SecretVersion {
        uid: secret.metadata.uid.clone()?,
        resource_version: secret.metadata.resource_version.clone()?,
    })
}

/// Rebuilds and publishes the snapshot and the catalog after every change (coalesced over
/// 20 ms), once the caches have synced. Never returns.
pub async fn run_registry(
    cache: Cache,
    changed: Arc<Notify>,
    registry: Registry,
    kauth_namespace: String,
    metrics: Arc<Metrics>,
    claims: ClaimPolicy,
) {
    cache.synced().await;
    let mut trims = TrimPacer::new(TRIM_AT_MOST_EVERY, std::time::Instant::now());
    loop {
        // Judging every client takes a while with thousands: off the threads that serve.
        let started = std::time::Instant::now();
        let (builder, namespace, claims) = (cache.clone(), kauth_namespace.clone(), claims.clone());
        let previous = registry.load();
        let built = tokio::task::spawn_blocking(move || {
            let catalog = builder.catalog(&claims);
            let snapshot = builder.snapshot(&catalog, &previous, &namespace);
            (catalog, snapshot)
        })
        .await;
        let took = started.elapsed();
        match built {
            Ok((catalog, snapshot)) => {
                metrics.registered_clients.set(snapshot.clients.len() as i64);
                metrics.claims_pending.set(catalog.pending_claims() as i64);
                let previous = (
                    registry.replace(snapshot),
                    cache.verdicts.send_replace(Arc::new(catalog)),
                );
                let trim = trims.freed(std::time::Instant::now());
                // Freeing the previous ones (what no request or listener still holds) waits on
                // no one: off the threads that serve.
                tokio::task::spawn_blocking(move || {
                    drop(previous);
                    if trim {
                        crate::memory::release_freed();
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "building the registry failed; serving the previous one"),
        }
        // A vacant claim lapses with time, not with an event: look again at least each minute.
        let mut next_change = std::pin::pin!(tokio::time::timeout(Duration::from_secs(60), changed.notified()));
        let mut waited = false;
        if trims.owed() {
            waited = tokio::time::timeout(QUIET_BEFORE_TRIM, next_change.as_mut())
                .await
                .is_ok();
            if !waited && trims.paused(std::time::Instant::now()) {
                tokio::task::spawn_blocking(crate::memory::release_freed);
            }
        }
        if !waited {
            let _ = next_change.await;
        }
        // Changes arriving meanwhile are taken together. Waiting as long as the last build
        // took keeps a storm of changes (thousands of new clients) from costing a build per
        // event: at most half of one core goes to rebuilding, and a change still shows within
        // twice a build's time.
        tokio::time::sleep(took.max(Duration::from_millis(20))).await;
    }
}

/// While changes keep coming, freed memory is given back at most this often (see [`TrimPacer`]).
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// A pause in changes this long ends a storm: what it freed is given back then.
const QUIET_BEFORE_TRIM: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, version: &str) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version}
        }))
        .unwrap()
    }

    #[test]
    fn only_the_very_version_kauth_wrote_is_its_own_echo() {
        let own = OwnWrites::default();
        own.note(&secret("web-oauth", "5"));
        assert!(!own.is_echo(&secret("api-oauth", "5")), "another Secret");
        assert!(!own.is_echo(&secret("web-oauth", "4")), "an older version");
        assert!(own.is_echo(&secret("web-oauth", "5")));
        // Told once: the same version again (a relist) or a later one (someone's edit or the
        // deletion) reaches the client's controller.
        assert!(!own.is_echo(&secret("web-oauth", "5")));
        own.note(&secret("web-oauth", "6"));
        assert!(!own.is_echo(&secret("web-oauth", "7")));
    }

    /// A store, and the writer that changes it as the watch would.
    fn store<K>(items: Vec<K>) -> (Store<K>, reflector::store::Writer<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut writer = reflector::store::Writer::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for item in items {
            writer.apply_watcher_event(&watcher::Event::InitApply(item));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (writer.as_reader(), writer)
    }

    /// A cache of these clients, SigningKeys and Secrets, with nothing else.
    fn cache_of(clients: Store<OAuthClient>, signing_keys: Store<SigningKey>, secrets: Store<Secret>) -> Cache {
        Cache {
            claims_read: Default::default(),
            clients,
            scopes: store(vec![]).0,
            signing_keys,
            secrets,
            namespaces: store(vec![]).0,
            claims: store(vec![]).0,
            verdicts: Default::default(),
            secret_owners: broadcast::Sender::new(1),
            own_writes: Default::default(),
        }
    }

    /// The team's own Secret for `shop/web`, as the watch delivers it.
    fn external_secret(uid: &str, version: &str, value: &str) -> Secret {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-credentials", "namespace": "shop", "uid": uid, "resourceVersion": version,
                "labels": {CREDENTIALS_LABEL: secrets::EXTERNAL}
            },
            "data": {"CLIENT_SECRET": encoded}
        }))
        .unwrap()
    }

    fn served_secret(snapshot: &Snapshot) -> &SecretVerifier {
        match &snapshot.clients["shop.web"].credential {
            crate::registry::ClientCredential::Secret(verifier) => verifier,
            other => panic!("a secret client, not {other:?}"),
        }
    }

    #[test]
    fn a_secret_is_read_again_only_when_its_version_changes() {
        let client = |generation: i64, lifetime: &str| -> OAuthClient {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
                "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "generation": generation},
                "spec": {
                    "grantTypes": ["client_credentials"], "accessTokenLifetime": lifetime,
                    "existingSecret": {"name": "web-credentials"}
                },
            }))
            .unwrap()
        };
        let (clients, mut client_watch) = store(vec![client(1, "5m")]);
        let (secrets, mut watch) = store(vec![external_secret("s1", "10", "first")]);
        let cache = cache_of(clients, store(vec![]).0, secrets);
        let catalog = cache.publish_catalog(&Default::default());
        let now = jiff::Timestamp::now();
        let first = cache.snapshot(&catalog, &Snapshot::default(), "kauth");
        assert!(served_secret(&first).verify("first", now));

        // Same version, content changed under it (which a real apiserver never does): proof
        // that an unchanged version is not read again, but kept.
        watch.apply_watcher_event(&watcher::Event::Apply(external_secret("s1", "10", "tampered")));
        let kept = cache.snapshot(&catalog, &first, "kauth");
        assert!(Arc::ptr_eq(&first.clients["shop.web"], &kept.clients["shop.web"]));

        // The spec changed, the Secret did not: the client is built from its new verdict.
        client_watch.apply_watcher_event(&watcher::Event::Apply(client(2, "2m")));
        let catalog = cache.publish_catalog(&Default::default());
        let kept = cache.snapshot(&catalog, &kept, "kauth");
        assert_eq!(kept.clients["shop.web"].access_token_lifetime, Duration::from_secs(120));

        // A new version is read: the new secret is served, the old one no longer.
        watch.apply_watcher_event(&watcher::Event::Apply(external_secret("s1", "11", "second")));
        let edited = cache.snapshot(&catalog, &kept, "kauth");
        assert!(served_secret(&edited).verify("second", now) && !served_secret(&edited).verify("first", now));

        // Deleted and re-created (an etcd restored from backup may repeat a resourceVersion):
        // the new object's uid alone makes it read.
        watch.apply_watcher_event(&watcher::Event::Apply(external_secret("s2", "11", "third")));
        let recreated = cache.snapshot(&catalog, &edited, "kauth");
        assert!(served_secret(&recreated).verify("third", now));

        // Gone: the client is no longer served, whatever it was read from before.
        watch.apply_watcher_event(&watcher::Event::Delete(external_secret("s2", "11", "third")));
        let deleted = cache.snapshot(&catalog, &recreated, "kauth");
        assert!(!deleted.clients.contains_key("shop.web"));
    }

    #[test]
    fn signing_keys_are_parsed_again_only_when_their_secret_changes_version() {
        use crate::keys::{KeySet, generate_key};
        let sk: SigningKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "SigningKey",
            "metadata": {"name": "main", "namespace": "kauth", "uid": "uid-sk"},
            "spec": {"algorithm": "ES256"},
        }))
        .unwrap();
        let owner = secrets::owner_reference(&sk).unwrap();
        let now = jiff::Timestamp::now();
        let key_set_secret = |uid: &str, version: &str, kid: &str| {
            let mut key = generate_key(crate::crd::KeyAlgorithm::ES256, now).unwrap();
            key.kid = kid.into();
            let keys = KeySet {
                keys: vec![key],
                trigger: None,
            };
            let mut secret = secrets::key_set_secret("main-signing-keys", "kauth", owner.clone(), &keys);
            secret.metadata.uid = Some(uid.into());
            secret.metadata.resource_version = Some(version.into());
            secret
        };
        let (secrets, mut watch) = store(vec![]);
        let cache = cache_of(store(vec![]).0, store(vec![sk]).0, secrets);
        let catalog = cache.publish_catalog(&Default::default());
        let signs_with = |snapshot: &Snapshot| snapshot.keys.signer(now).map(|k| k.kid.clone());
        let mut previous = Snapshot::default();
        for (uid, version, kid, signer, step) in [
            ("s1", "10", "first", "first", "the first read"),
            // Which a real apiserver never does: proof that a version is not parsed again.
            ("s1", "10", "swapped", "first", "other keys under the same version"),
            ("s1", "11", "rotated", "rotated", "a new version (a rotation)"),
            (
                "s2",
                "11",
                "recreated",
                "recreated",
                "a re-created Secret at an old version",
            ),
        ] {
            watch.apply_watcher_event(&watcher::Event::Apply(key_set_secret(uid, version, kid)));
            let next = cache.snapshot(&catalog, &previous, "kauth");
            assert_eq!(signs_with(&next).as_deref(), Some(signer), "{step}");
            previous = next;
        }

        // Gone: nothing signs, whatever was read before.
        watch.apply_watcher_event(&watcher::Event::Delete(key_set_secret("s2", "11", "recreated")));
        let deleted = cache.snapshot(&catalog, &previous, "kauth");
        assert_eq!(signs_with(&deleted), None);
    }

    #[test]
    fn cached_objects_keep_neither_managed_fields_nor_last_applied_copies() {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-oauth",
                "annotations": {LAST_APPLIED: "{\"big\": true}", "kauth.dev/secret-version": "1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "data": {"CLIENT_ID": "c2hvcC53ZWI="}
        }))
        .unwrap();
        trim(&mut secret);
        assert!(secret.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
        let annotations: Vec<_> = secret.annotations().keys().collect();
        assert_eq!(
            annotations,
            ["kauth.dev/secret-version"],
            "kauth's own annotations stay"
        );
        assert_eq!(secret.data.unwrap().len(), 1);
    }
}
