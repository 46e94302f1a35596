//! The claims record in a cluster: which namespace owns each Scope value, audience and
//! explicit client id, kept across restarts and leader changes (README, Tenancy, T3, T10). It is
//! sharded over [`SHARDS`] ConfigMaps `kauth-claims-NN` in kauth's namespace by the first
//! character of each claim's key, so no one shard nears a ConfigMap's 1 MiB (a claim takes at
//! most about 170 bytes, whatever its name). Every replica reads it; the leader writes the
//! shards that changed, each against the version it read (a write over a version it has not
//! seen fails and is tried again once the cache has caught up). A shard that cannot be written
//! leaves its new claims pending: the catalog serves nothing under a claim the record does not
//! hold, the objects say so, and metrics and `/readyz/claims` tell the platform team.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::{Context, MANAGER};
use crate::claims::{Ledger, SHARDS};

/// Names of the shards: `kauth-claims-00` to `kauth-claims-63`.
pub const SHARD_PREFIX: &str = "kauth-claims-";
/// The one ConfigMap kauth kept the record in before it was sharded; read, moved into the
/// shards, then deleted.
pub const LEGACY: &str = "kauth-claims";
/// The key of each ConfigMap that holds its part of the ledger (JSON).
pub const KEY: &str = "claims.json";
/// The label on every shard.
pub const LABEL: &str = "kauth.dev/claims";
/// The data one ConfigMap holds at most (the apiserver refuses more).
const CONFIG_MAP_BYTES: usize = 1024 * 1024;
/// A shard that failed is tried again after this long, doubling up to [`MAX_BACKOFF`] (each try
/// may send a megabyte to the apiserver).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The name of shard `i`.
pub fn shard_name(i: usize) -> String {
    format!("{SHARD_PREFIX}{i:02}")
}

fn shard_index(name: &str) -> Option<usize> {
    let i: usize = name.strip_prefix(SHARD_PREFIX)?.parse().ok()?;
    (i < SHARDS && shard_name(i) == name).then_some(i)
}

/// The ConfigMap that holds `shard` (shard `i` of a ledger) in `namespace`.
pub fn shard_config_map(namespace: &str, i: usize, shard: &Ledger) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": shard_name(i),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGER, LABEL: "shard"},
            "annotations": {"kauth.dev/purpose": "which namespace owns each Scope value, audience and explicit client id (by the SHA-256 of the name); written by kauth only"},
        },
        "data": {KEY: shard.to_json()},
    }))
    .expect("a ConfigMap")
}

/// One ConfigMap of the record as read: its resourceVersion and its part of the ledger.
#[derive(Clone, Debug)]
pub struct RecordedPart {
    /// The version read (writes are made against it).
    pub version: String,
    /// Its claims (empty when unreadable: the claims are then settled again from the objects).
    pub ledger: Arc<Ledger>,
}

/// The record as this replica read it last.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Every claim of the shards (and of the record before sharding, where the shards have
    /// none of its keys).
    pub ledger: Arc<Ledger>,
    /// Each shard by index, when it exists.
    pub shards: BTreeMap<usize, RecordedPart>,
    /// The record of before still exists.
    pub legacy: bool,
}

/// Reads the record from the cached ConfigMaps, parsing a ConfigMap again only when its
/// version changed, and merging again only when one did.
#[derive(Debug, Default)]
pub struct RecordReader {
    parsed: Mutex<(HashMap<String, RecordedPart>, Option<Recorded>)>,
}

impl RecordReader {
    /// The record in `store` (kauth's ConfigMaps in its namespace).
    pub fn read(&self, store: &Store<ConfigMap>) -> Recorded {
        let mut guard = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let (parts, merged) = &mut *guard;
        let mut seen = HashMap::new();
        let mut changed = false;
        for cm in store.state() {
            let name = cm.name_any();
            if name != LEGACY && shard_index(&name).is_none() {
                continue;
            }
            let version = cm.resource_version().unwrap_or_default();
            let part = match parts.get(&name) {
                Some(p) if p.version == version => p.clone(),
                _ => {
                    changed = true;
                    let text = cm.data.as_ref().and_then(|d| d.get(KEY));
                    let ledger = match text.map(|t| Ledger::parse(t)) {
                        Some(Ok(ledger)) => ledger,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, config_map = %name, "claims record shard ignored");
                            Ledger::default()
                        }
                        None => Ledger::default(),
                    };
                    RecordedPart {
                        version,
                        ledger: Arc::new(ledger),
                    }
                }
            };
            seen.insert(name, part);
        }
        changed |= seen.len() != parts.len();
        *parts = seen;
        if changed || merged.is_none() {
            let mut ledger = Ledger::default();
            let mut shards = BTreeMap::new();
            for (name, part) in parts.iter() {
                if let Some(i) = shard_index(name) {
                    ledger.merge((*part.ledger).clone());
                    shards.insert(i, part.clone());
                }
            }
            let legacy = parts.get(LEGACY);
            if let Some(old) = legacy {
                ledger.merge((*old.ledger).clone());
            }
            *merged = Some(Recorded {
                ledger: Arc::new(ledger),
                shards,
                legacy: legacy.is_some(),
            });
        }
        merged.clone().unwrap_or_default()
    }
}

/// Which shards the leader could not write, and why: the reconcilers say so on the objects
/// whose claims wait for them.
#[derive(Debug, Default)]
pub struct RecordHealth {
    failing: Mutex<BTreeMap<usize, String>>,
}

impl RecordHealth {
    /// Why the record cannot be written, when a shard cannot.
    pub fn failure(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let (shard, why) = failing.iter().next()?;
        Some(format!(
            "the claims record cannot be written ({} of {SHARDS} shards failing; {}: {why})",
            failing.len(),
            shard_name(*shard)
        ))
    }

    fn set(&self, shard: usize, failure: Option<String>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match failure {
            Some(why) => failing.insert(shard, why),
            None => failing.remove(&shard),
        };
    }
}

/// A shard that failed: what was tried, over which version, and when to try again. A new
/// version of the shard (someone fixed or removed what was in the way) is tried at once.
struct Backoff {
    tried: Arc<Ledger>,
    over: Option<String>,
    next: Instant,
    wait: Duration,
}

/// Keeps the record equal to the ledger of the catalog the registry loop published last. Only
/// the leader runs it.
pub async fn record(ctx: Arc<Context>) {
    let mut published = ctx.cache.verdicts.subscribe();
    let mut backoffs: HashMap<usize, Backoff> = HashMap::new();
    loop {
        let ledger = {
            let catalog = published.borrow_and_update();
            catalog.settled.then(|| catalog.ledger.clone())
        };
        let mut retry_in = None;
        if let Some(ledger) = ledger {
            retry_in = write_changes(&ctx, &ledger, &mut backoffs).await;
        }
        match retry_in {
            // Woken by the next catalog (the cache caught up) or by the time to try again.
            Some(wait) => {
                if let Ok(Err(_)) = tokio::time::timeout(wait, published.changed()).await {
                    return;
                }
            }
            None => {
                if published.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes the shards of `ledger` that differ from the record; returns when to look again if
/// some write is owed.
async fn write_changes(ctx: &Context, ledger: &Ledger, backoffs: &mut HashMap<usize, Backoff>) -> Option<Duration> {
    let recorded = ctx.cache.recorded_claims();
    ctx.metrics.claims_recorded.set(recorded.ledger.len() as i64);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let now = Instant::now();
    let mut retry_in: Option<Duration> = None;
    let mut owed = |wait: Duration| retry_in = Some(retry_in.map_or(wait, |r| r.min(wait)));
    for (i, desired) in ledger.split().into_iter().enumerate() {
        let current = recorded.shards.get(&i);
        let same = match current {
            Some(part) => *part.ledger == desired,
            None => desired.is_empty(),
        };
        if same {
            backoffs.remove(&i);
            ctx.claims_record.set(i, None);
            continue;
        }
        let desired = Arc::new(desired);
        let over = current.map(|part| part.version.clone());
        if let Some(b) = backoffs.get(&i)
            && *b.tried == *desired
            && b.over == over
            && now < b.next
        {
            owed(b.next - now);
            continue;
        }
        match write_shard(&api, &ctx.namespace, i, &desired, current).await {
            Ok(()) => {
                backoffs.remove(&i);
                ctx.claims_record.set(i, None);
            }
            // Written meanwhile by someone (an earlier write of ours the cache has not
            // shown yet): look again once it has.
            Err(WriteError::Stale) => owed(FIRST_BACKOFF),
            Err(WriteError::Failed(why)) => {
                ctx.metrics.claims_record_failures.inc();
                tracing::warn!(shard = %shard_name(i), error = %why, "cannot write the claims record; its new claims stay pending");
                let wait = backoffs
                    .get(&i)
                    .map_or(FIRST_BACKOFF, |b| (b.wait * 2).min(MAX_BACKOFF));
                backoffs.insert(
                    i,
                    Backoff {
                        tried: desired,
                        over,
                        next: now + wait,
                        wait,
                    },
                );
                ctx.claims_record.set(i, Some(why));
                owed(wait);
            }
        }
    }
    // Moved into the shards: the record of before goes once every shard is written.
    if recorded.legacy && retry_in.is_none() && backoffs.is_empty() {
        match api.delete(LEGACY, &DeleteParams::default()).await {
            Ok(_) => tracing::info!("claims record moved into its shards"),
            Err(e) => tracing::warn!(error = %e, "cannot delete the claims record of before"),
        }
    }
    retry_in
}

enum WriteError {
    /// The shard changed since it was read.
    Stale,
    /// The apiserver refused it, or it is too large to try.
    Failed(String),
}

async fn write_shard(
    api: &Api<ConfigMap>,
    namespace: &str,
    i: usize,
    shard: &Ledger,
    current: Option<&RecordedPart>,
) -> Result<(), WriteError> {
    let mut cm = shard_config_map(namespace, i, shard);
    let size = shard.to_json().len();
    if size >= CONFIG_MAP_BYTES {
        return Err(WriteError::Failed(format!("{size} bytes, more than a ConfigMap holds")));
    }
    let result = match current {
        None => api.create(&PostParams::default(), &cm).await,
        Some(part) => {
            cm.metadata.resource_version = Some(part.version.clone());
            api.replace(&shard_name(i), &PostParams::default(), &cm).await
        }
    };
    match result {
        Ok(_) => {
            tracing::info!(shard = %shard_name(i), claims = shard.len(), "claims recorded");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(WriteError::Stale),
        Err(e) => Err(WriteError::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_round_trip_and_nothing_else_is_a_shard() {
        for i in 0..SHARDS {
            assert_eq!(shard_index(&shard_name(i)), Some(i));
        }
        for other in [
            LEGACY,
            "kauth-claims-64",
            "kauth-claims-7",
            "kauth-claims-007",
            "kauth-jwks",
        ] {
            assert_eq!(shard_index(other), None, "{other}");
        }
    }
}
