//! Leadership through a `coordination.k8s.io` Lease: only the holder runs the reconcilers
//! (the only writers); every replica keeps serving tokens from its caches. Expiry is judged
//! as client-go does, by when this replica last saw the lease record change, so clock skew
//! between replicas does not matter.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// kauth's namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (followers retry at least every [`FOLLOWER_RETRY`]).
    pub renew_every: Duration,
}

/// How often a follower looks at the lease at most: a leader that steps down (a rollout's
/// SIGTERM) releases it, and a follower that only looked every `renew_every` (5 s by default)
/// left that long a gap in reconciling. One read of one object a second per follower.
pub const FOLLOWER_RETRY: Duration = Duration::from_secs(1);

/// What this replica last saw of the lease, and when it saw it change.
struct Observed {
    record: (Option<String>, Option<MicroTime>),
    since: Instant,
}

/// Holds (or waits for) the lease until `shutdown`, publishing whether this replica leads; at
/// shutdown it stops leading and releases the lease at once, before the provider drains its
/// connections, so the next leader takes over within a second instead of after the drain.
pub async fn hold_lease(
    client: Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut observed: Option<Observed> = None;
    let mut last_renewal: Option<Instant> = None;
    loop {
        match try_lead(&api, &cfg, &mut observed).await {
            Ok(true) => {
                last_renewal = Some(Instant::now());
                if !*leading.borrow() {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became the leader");
                }
                leading.send_replace(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(identity = %cfg.identity, "lost the lease to another replica");
                }
                leading.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the lease");
                // Step down before the others may take over, not after.
                let margin = cfg.duration.saturating_sub(cfg.renew_every);
                if last_renewal.is_none_or(|t| t.elapsed() >= margin) && *leading.borrow() {
                    tracing::warn!("stepping down: the lease could not be renewed in time");
                    leading.send_replace(false);
                }
            }
        }
        let next = if *leading.borrow() {
            cfg.renew_every
        } else {
            cfg.renew_every.min(FOLLOWER_RETRY)
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = &mut shutdown => {
                leading.send_replace(false);
                release(client, &cfg).await;
                return;
            }
        }
    }
}

/// Gives the lease up (on shutdown) so another replica takes over at once.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        if api.replace(&cfg.name, &PostParams::default(), &lease).await.is_ok() {
            tracing::info!("released the lease");
        }
    }
}

async fn try_lead(api: &Api<Lease>, cfg: &LeaseConfig, observed: &mut Option<Observed>) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let duration_secs = cfg.duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (spec.holder_identity.clone(), spec.renew_time.clone());
    if observed.as_ref().is_none_or(|o| o.record != record) {
        *observed = Some(Observed {
            record: record.clone(),
            since: Instant::now(),
        });
    }
    let mine = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let held_by_other = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) && !mine;
    let their_duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
    let expired = observed.as_ref().is_some_and(|o| o.since.elapsed() >= their_duration);
    if held_by_other && !expired {
        return Ok(false);
    }
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: if mine {
            spec.acquire_time.clone()
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
        ..spec
    });
    // The resourceVersion makes the write conditional: of two contenders, one wins.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
