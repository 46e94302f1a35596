//! Scope reconciler: reports whether a Scope is in force, invalid, or lost its value to an
//! earlier claimant.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error, MANAGER};
use crate::catalog::{Holder, ObjectKey, ScopeVerdict};
use crate::crd::{Scope, ScopeStatus, set_condition};
use crate::validation::describe;

/// Reconciles one Scope.
pub async fn reconcile(obj: Arc<Scope>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("Scope", None);
    let now = Timestamp::now();
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    // The verdict the registry loop published for this generation; until it has one, the
    // verdict change it publishes next triggers this reconcile again.
    let catalog = ctx.cache.published();
    let Some(verdict) = catalog
        .scope(&ObjectKey::new(&ns, &name))
        .filter(|(_, generation)| *generation == obj.metadata.generation)
        .map(|(v, _)| v.clone())
    else {
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    drop(catalog);
    let generation = obj.metadata.generation;
    let old = obj.status.clone().unwrap_or_default();
    let mut status = ScopeStatus {
        observed_generation: generation,
        conditions: old.conditions.clone(),
    };
    let (accepted, reason, message) = match &verdict {
        ScopeVerdict::Accepted => (
            true,
            "Accepted",
            format!("'{}' is offered by this Scope", obj.spec.value),
        ),
        ScopeVerdict::Invalid(errors) => (false, "InvalidSpec", describe(errors)),
        // A claim being recorded is no news: look again once it is (or has failed).
        ScopeVerdict::Conflict {
            holder: Holder::Pending,
            ..
        } => match ctx.claims_record.failure() {
            Some(why) => (
                false,
                "ClaimPending",
                format!("{}: {why}", verdict.conflict_message().unwrap_or_default()),
            ),
            None => return Ok(Action::requeue(Duration::from_secs(1))),
        },
        ScopeVerdict::Conflict { holder, .. } => {
            (false, holder.reason(), verdict.conflict_message().unwrap_or_default())
        }
    };
    set_condition(
        &mut status.conditions,
        "Accepted",
        accepted,
        reason,
        message.clone(),
        generation,
        now,
    );
    if status != old {
        let changed_reason = old
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted")
            .map(|c| c.reason.as_str())
            != Some(reason);
        if changed_reason {
            if ["Conflict", "Reserved", "ClaimQuotaExceeded"].contains(&reason) {
                ctx.audit(&*obj, crate::audit::Event::ClaimConflict, None, &message);
            }
            ctx.event(&*obj, !accepted, reason, message).await;
        }
        let api: Api<Scope> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(3600)))
}
