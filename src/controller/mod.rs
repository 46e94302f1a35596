//! The controller: reconcilers for OAuthClient, Scope and SigningKey, the reflector cache they
//! and the registry share, and the loop that turns that cache into registry snapshots.

mod cache;
pub mod claims_record;
mod client_secret;
pub mod jwks;
pub mod leader;
mod oauth_client;
mod scope;
pub mod secrets;
mod signing_key;
pub mod watch_health;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

pub use cache::{Cache, run_registry};
pub use oauth_client::reconcile as reconcile_client;
pub use scope::reconcile as reconcile_scope;
pub use signing_key::{ensure_default_signing_key, reconcile as reconcile_signing_key};

use crate::catalog::{Catalog, ObjectKey};
use crate::crd::{OAuthClient, SigningKey};
use crate::issuer::Issuer;
use crate::metrics::Metrics;

/// Field manager and event reporter name.
pub const MANAGER: &str = "kauth";

/// A reconcile failure; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A signing key could not be generated or read.
    #[error("signing key: {0}")]
    Keys(#[from] crate::keys::KeyError),
    /// The grant store (secret use) did not answer.
    #[error("grant store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl Error {
    /// Metric label of the error class.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Keys(_) => "keys",
            Self::Store(_) => "store",
        }
    }
}

/// What the reconcilers share.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Reflector stores.
    pub cache: Cache,
    /// Event recorder.
    pub recorder: Recorder,
    /// Issuer (written into credential Secrets).
    pub issuer: Arc<Issuer>,
    /// kauth's own namespace (SigningKeys live there).
    pub namespace: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where the JWKS is delivered (None: nowhere).
    pub jwks: Option<jwks::JwksDelivery>,
    /// The grant store, where replicas report secret use (None: use is unknown).
    pub store: Option<crate::store::GrantStore>,
    /// The audit trail (rotations, retirements, lost claims).
    pub audit: Arc<crate::audit::Audit>,
    /// Which shards of the claims record the leader cannot write.
    pub claims_record: Arc<claims_record::RecordHealth>,
}

impl Context {
    /// A context with a recorder named after kauth.
    pub fn new(client: Client, cache: Cache, issuer: Arc<Issuer>, namespace: String, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            cache,
            recorder,
            issuer,
            namespace,
            metrics,
            jwks: None,
            store: None,
            audit: Arc::default(),
            claims_record: Arc::default(),
        }
    }

    /// Reads secret use from `store`.
    pub fn with_store(mut self, store: crate::store::GrantStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Delivers the JWKS of `delivery` into the namespaces that want it.
    pub fn with_jwks(mut self, delivery: jwks::JwksDelivery) -> Self {
        self.jwks = Some(delivery);
        self
    }

    /// Writes an audit record about `obj` (`Kind/name` in its namespace).
    pub fn audit<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        event: crate::audit::Event,
        client_id: Option<&str>,
        reason: &str,
    ) {
        let resource = format!("{}/{}", K::kind(&()), obj.meta().name.as_deref().unwrap_or_default());
        let record = crate::audit::Record {
            client_id,
            resource: Some(&resource),
            reason: Some(reason),
            ..Default::default()
        };
        self.audit.record(event, &record, obj.meta().namespace.as_deref());
    }

    /// Publishes an Event about `obj`; a failure is logged, never fatal. The note is cut to what
    /// an Event holds (1,024 bytes), or the apiserver refuses the Event whole.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        const NOTE_MAX: usize = 1024;
        let note = if note.len() > NOTE_MAX {
            let mut end = NOTE_MAX - '…'.len_utf8();
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &note[..end])
        } else {
            note
        };
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }
}

fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<Context>, kind: &str) -> Action {
    tracing::warn!(kind, name = %obj.name_any(), namespace = ?obj.namespace(), %error, "reconcile failed");
    ctx.metrics.reconciled(kind, Some(error.class()));
    Action::requeue(Duration::from_secs(5))
}

/// At most this many reconciles of one kind run at once: enough to keep the apiserver busy,
/// few enough that a burst of thousands of changes does not hold thousands in memory.
const RECONCILE_CONCURRENCY: u16 = 16;

fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY)
}

/// The objects whose verdict changes in each catalog the registry loop publishes from now on,
/// as `changed(new, previous)` finds them.
fn verdict_changes<K>(
    cache: &Cache,
    changed: fn(&Catalog, &Catalog) -> Vec<ObjectKey>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let mut published = cache.verdicts.subscribe();
    let seen = published.borrow_and_update().clone();
    futures::stream::unfold((published, seen), move |(mut published, previous)| async move {
        published.changed().await.ok()?;
        let next = published.borrow_and_update().clone();
        let refs: Vec<ObjectRef<K>> = changed(&next, &previous)
            .into_iter()
            .map(|k| ObjectRef::new(&k.name).within(&k.namespace))
            .collect();
        Some((futures::stream::iter(refs), (published, next)))
    })
    .flatten()
}

/// Every object in `store` once (a new leader looks at everything).
fn everything_in<K>(store: &Store<K>) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    futures::stream::iter(all_refs(store))
}

fn all_refs<K>(store: &Store<K>) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().iter().map(|o| ObjectRef::from_obj(&**o)).collect()
}

/// The OAuthClients whose generated Secret appeared, changed or went (in the cache). A
/// listener that falls behind the buffer looks at every client instead.
fn secret_owners(cache: &Cache) -> impl futures::Stream<Item = ObjectRef<OAuthClient>> + Send + 'static {
    let changes = cache.secret_owners.subscribe();
    let clients = cache.clients.clone();
    futures::stream::unfold((changes, clients), |(mut changes, clients)| async move {
        let refs = match changes.recv().await {
            Ok(owner) => vec![owner],
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => all_refs(&clients),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((futures::stream::iter(refs), (changes, clients)))
    })
    .flatten()
}

/// What a controller reconciles: a watch of `api` into a store of its own (managedFields left
/// out, as in the cache), retrying as soon after a failure as the registry's watches do.
fn reconciled<K>(
    api: Api<K>,
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "resource",
    };
    let events = watch_health::restarted_when_stalled(kind, move || {
        cache::watch_without_managed_fields(api.clone(), watcher::Config::default())
    });
    let objects = reflector::reflector(writer, events).applied_objects();
    (objects, reader)
}

/// A reconciler that runs in a span naming its object: one trace per reconcile, with the
/// grant-store calls it makes inside it.
fn traced<K, F, Fut>(
    kind: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> tracing::instrument::Instrumented<Fut>
where
    K: ResourceExt,
    F: Fn(Arc<K>, Arc<Context>) -> Fut,
{
    move |obj, ctx| {
        let span = tracing::info_span!(
            "reconcile",
            otel.name = %format!("reconcile {kind}"),
            kind,
            namespace = %obj.namespace().unwrap_or_default(),
            name = %obj.name_any(),
        );
        tracing::Instrument::instrument(reconcile(obj, ctx), span)
    }
}

/// Runs the three controllers until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static) {
    let client = ctx.client.clone();
    let key_secrets =
        watcher::Config::default().labels(&format!("{}={}", secrets::CREDENTIALS_LABEL, secrets::SIGNING_KEYS));

    // Other clients, Scopes and namespace labels decide a client's verdict, and other Scopes a
    // Scope's: each is reconciled when the registry loop sees its verdict change (its spec
    // changing included: the verdict names the generation). Both controllers read the cache's
    // stores and keep no watch of their own: one copy of every client and Secret, one watch
    // each on the apiserver.
    let owners = secret_owners(&ctx.cache); // listening before the store is read: nothing missed
    let clients = Controller::for_stream(futures::stream::pending(), ctx.cache.clients.clone())
        .reconcile_on(everything_in(&ctx.cache.clients))
        .reconcile_on(owners)
        .reconcile_on(verdict_changes(&ctx.cache, Catalog::changed_clients))
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            traced("OAuthClient", reconcile_client),
            |o, e, c| error_policy(o, e, c, "OAuthClient"),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let scopes = Controller::for_stream(futures::stream::pending(), ctx.cache.scopes.clone())
        .reconcile_on(everything_in(&ctx.cache.scopes))
        .reconcile_on(verdict_changes(&ctx.cache, Catalog::changed_scopes))
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            traced("Scope", reconcile_scope),
            |o, e, c| error_policy(o, e, c, "Scope"),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let (objects, store) = reconciled(Api::<SigningKey>::namespaced(client.clone(), &ctx.namespace));
    let keys = Controller::for_stream(objects, store)
        .owns(Api::<Secret>::namespaced(client.clone(), &ctx.namespace), key_secrets)
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            traced("SigningKey", reconcile_signing_key),
            |o, e, c| error_policy(o, e, c, "SigningKey"),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let claims = claims_record::record(ctx.clone());
    let delivery = async {
        match ctx.jwks.clone() {
            Some(delivery) => jwks::deliver(ctx.clone(), delivery).await,
            None => std::future::pending().await,
        }
    };

    let defaults = async {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = ensure_default_signing_key(&ctx).await {
                tracing::warn!(error = %e, "cannot ensure a default SigningKey");
            }
        }
    };
    tokio::select! {
        _ = futures::future::join3(clients, scopes, keys) => {}
        _ = claims => {}
        _ = delivery => {}
        _ = defaults => {}
        _ = shutdown => {}
    }
}
