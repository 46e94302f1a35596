//! OAuthClient reconciler: dereference (catalog, Secret) -> validate -> build the desired
//! Secret and status -> apply -> Events.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::client_secret::credentials;
use super::{Context, Error, MANAGER};
use crate::audit;
use crate::catalog::{Holder, ObjectKey};
use crate::crd::{OAuthClient, OAuthClientStatus, set_condition};
use crate::validation::describe;

/// The reason and message of the Ready condition in `after`, when it differs from `before`.
fn ready_changed(before: &[Condition], after: &[Condition]) -> Option<(String, String)> {
    let ready = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let now = ready(after)?;
    // A new client that becomes Ready at once needs no Event: the audit trail and the status
    // say it, and at scale one Event less per client is one apiserver write less.
    if ready(before).is_none() && now.0 == "True" {
        return None;
    }
    (ready(before) != Some(now.clone())).then_some((now.1, now.2))
}

/// Reconciles one OAuthClient.
pub async fn reconcile(obj: Arc<OAuthClient>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("OAuthClient", None);
    let now = Timestamp::now();
    let key = (obj.namespace().unwrap_or_default(), obj.name_any());
    // The verdict the registry loop published for this very object and generation; until it
    // has one, the verdict change it publishes next triggers this reconcile again. Only this
    // client's verdict is kept: nothing the size of the cluster lives across the awaits.
    let Some(verdict) = ctx
        .cache
        .published()
        .client(&ObjectKey::new(&key.0, &key.1))
        .filter(|v| Some(v.uid.as_str()) == obj.metadata.uid.as_deref() && v.generation == obj.metadata.generation)
        .cloned()
    else {
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    let generation = obj.metadata.generation;
    let old = obj.status.clone().unwrap_or_default();
    let mut status = OAuthClientStatus {
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    status.observed_generation = generation;
    let mut recheck = None;
    // Scopes and audiences not granted, each with the grant it needs.
    let granted = verdict.missing.is_empty() && verdict.missing_audiences.is_empty();
    let not_granted = if verdict.missing.is_empty() {
        "AudienceNotGranted"
    } else {
        "ScopeNotGranted"
    };
    let missing = verdict
        .missing
        .iter()
        .chain(&verdict.missing_audiences)
        .map(|m| m.reason.clone())
        .collect::<Vec<_>>()
        .join("; ");
    // Captures only status.conditions, so the other status fields stay writable beside it.
    let mut condition = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(&mut status.conditions, type_, ok, reason, message, generation, now)
    };

    let ready = match (&*verdict.settings, &verdict.id_conflict) {
        (Err(errors), _) => {
            condition("SecretReady", false, "InvalidSpec", "fix the spec first".into());
            condition("Ready", false, "InvalidSpec", describe(errors));
            false
        }
        (Ok(settings), Some(holder)) => {
            let mut msg = verdict.conflict_message().unwrap_or_default();
            // A claim being recorded is no news: look again once it is (or has failed).
            if *holder == Holder::Pending {
                match ctx.claims_record.failure() {
                    Some(why) => msg = format!("{msg}: {why}"),
                    None => return Ok(Action::requeue(Duration::from_secs(1))),
                }
            }
            let reason = match holder {
                Holder::Namespace(_) | Holder::Object(_) | Holder::Released => "ClientIdConflict",
                other => other.reason(),
            };
            status.secret_name = settings.secret.secret_name().map(str::to_string);
            condition(
                "SecretReady",
                false,
                reason,
                "no credentials for a client id this client does not hold".into(),
            );
            condition("Ready", false, reason, msg);
            false
        }
        (Ok(settings), None) => {
            status.client_id = Some(verdict.client_id.clone());
            status.secret_name = settings.secret.secret_name().map(str::to_string);
            let outcome = credentials(&ctx, &obj, &verdict, settings, now).await?;
            status.secret_version = outcome.version;
            // metav1.Time keeps whole seconds: truncate so an unchanged status compares equal.
            status.secret_rotated_at = outcome
                .rotated_at
                .and_then(|t| Timestamp::from_second(t.as_second()).ok())
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
            recheck = outcome.recheck_at;
            status.secret_usage = outcome.usage;
            condition("SecretReady", outcome.ready, outcome.reason, outcome.message.clone());
            let ready = outcome.ready && granted;
            let (reason, message) = if !outcome.ready {
                (outcome.reason, outcome.message)
            } else if !granted {
                (not_granted, missing.clone())
            } else {
                ("Ready", format!("client id {} can get tokens", verdict.client_id))
            };
            condition("Ready", ready, reason, message);
            ready
        }
    };
    status.granted_scopes = verdict.granted.iter().map(|g| g.value.clone()).collect();
    if granted {
        condition(
            "ScopesGranted",
            true,
            "Granted",
            "every requested scope and audience is granted".into(),
        );
    } else {
        condition("ScopesGranted", false, not_granted, missing);
    }

    // Tell about changes of Ready (and its reason), not about every reconcile.
    if let Some((reason, message)) = ready_changed(&old.conditions, &status.conditions) {
        if ["ClientIdConflict", "Reserved", "ClaimQuotaExceeded"].contains(&reason.as_str()) {
            ctx.audit(&*obj, audit::Event::ClaimConflict, Some(&verdict.client_id), &message);
        }
        ctx.event(&*obj, !ready, &reason, message).await;
    }
    if status != old {
        let api: Api<OAuthClient> = Api::namespaced(ctx.client.clone(), &key.0);
        api.patch_status(
            &key.1,
            &PatchParams::apply(MANAGER),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(Action::requeue(requeue_after(recheck, now)))
}

/// When to reconcile again: at `recheck` (at least 1 s on, at most an hour), or in an hour.
fn requeue_after(recheck: Option<Timestamp>, now: Timestamp) -> Duration {
    const HOUR: Duration = Duration::from_secs(3600);
    // A time already past is due now. (It once fell to the hour: converting a negative span
    // fails. A rotation with an overlap shorter than the retirement margin then decided the
    // previous secret's fate an hour late; kauth's own Secret write coming back through the
    // cache had hidden that by reconciling again at once.)
    let wait = recheck.map_or(HOUR, |t| Duration::try_from(t - now).unwrap_or(Duration::ZERO));
    wait.clamp(Duration::from_secs(1), HOUR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recheck_already_due_is_soon_not_in_an_hour() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Some(now + jiff::SignedDuration::from_secs(s));
        assert_eq!(requeue_after(at(-3), now), Duration::from_secs(1), "past: now");
        assert_eq!(requeue_after(at(10), now), Duration::from_secs(10));
        assert_eq!(requeue_after(at(99_999), now), Duration::from_secs(3600));
        assert_eq!(requeue_after(None, now), Duration::from_secs(3600));
    }

    fn ready(status: bool, reason: &str) -> Vec<Condition> {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            status,
            reason,
            "m".to_string(),
            Some(1),
            Timestamp::now(),
        );
        conditions
    }

    #[test]
    fn ready_events_tell_changes_but_not_a_new_clients_first_ready() {
        assert_eq!(ready_changed(&[], &ready(true, "Ready")), None, "the status says it");
        assert_eq!(
            ready_changed(&[], &ready(false, "InvalidSpec")).map(|r| r.0),
            Some("InvalidSpec".into())
        );
        assert_eq!(
            ready_changed(&ready(true, "Ready"), &ready(false, "ScopeNotGranted")).map(|r| r.0),
            Some("ScopeNotGranted".into())
        );
        assert_eq!(
            ready_changed(&ready(false, "ScopeNotGranted"), &ready(true, "Ready")).map(|r| r.0),
            Some("Ready".into())
        );
        assert_eq!(ready_changed(&ready(true, "Ready"), &ready(true, "Ready")), None);
    }
}
