//! SigningKey reconciler: keeps the private key Secret on its rotation timeline and lists the
//! public keys in status. Also creates a default SigningKey when there is none.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::secrets;
use super::{Context, Error, MANAGER};
use crate::crd::{KeyAlgorithm, PublishedKey, SigningKey, SigningKeyStatus, default_signing_keys, set_condition};
use crate::keys::{KeyChange, KeySet, KeyState, plan_keys};
use crate::validation::describe;

async fn write_status(ctx: &Context, obj: &SigningKey, status: &SigningKeyStatus) -> Result<(), Error> {
    if obj.status.as_ref() != Some(status) {
        let api: Api<SigningKey> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(())
}

/// Reconciles one SigningKey.
pub async fn reconcile(obj: Arc<SigningKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("SigningKey", None);
    let now = Timestamp::now();
    let generation = obj.metadata.generation;
    let old = obj.status.clone().unwrap_or_default();
    let mut status = SigningKeyStatus {
        observed_generation: generation,
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let ns = obj.namespace().unwrap_or_default();
    if ns != ctx.namespace {
        let msg = format!("SigningKeys are only read in kauth's namespace '{}'", ctx.namespace);
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "WrongNamespace",
            msg,
            generation,
            now,
        );
        write_status(&ctx, &obj, &status).await?;
        return Ok(Action::await_change());
    }
    let (alg, schedule) = match crate::validation::validate_signing_key(&obj.spec) {
        Ok(v) => v,
        Err(errors) => {
            let msg = describe(&errors);
            if old
                .conditions
                .iter()
                .all(|c| c.reason != "InvalidSpec" || c.message != msg)
            {
                ctx.event(&*obj, true, "InvalidSpec", msg.clone()).await;
            }
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "InvalidSpec",
                msg,
                generation,
                now,
            );
            write_status(&ctx, &obj, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let Some(owner) = secrets::owner_reference(&*obj) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let secret_name = secrets::key_set_secret_name(&obj.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = api.get_opt(&secret_name).await?;
    if let Some(existing) = &existing
        && !secrets::owned_by(existing, &owner.uid)
    {
        let msg = format!(
            "Secret {secret_name} exists and was not created by kauth for this SigningKey; kauth leaves it alone"
        );
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "SecretConflict",
            msg,
            generation,
            now,
        );
        write_status(&ctx, &obj, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let current: KeySet = existing.as_ref().and_then(secrets::key_set).unwrap_or_default();
    let plan = plan_keys(alg, &schedule, &current, now)?;
    if plan.keys != current {
        write_key_set(
            &api,
            secrets::key_set_secret(&secret_name, &ns, owner, &plan.keys),
            existing.as_ref(),
        )
        .await?;
    }
    announce(&ctx, &obj, alg, &plan.changes).await;
    let retired: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            KeyChange::RetiredAtOnce { kid } => Some(kid.as_str()),
            _ => None,
        })
        .collect();
    if !retired.is_empty() {
        // Stays until the next emergency rotation: an operator sees it in `kubectl describe`.
        set_condition(
            &mut status.conditions,
            "RetiredImmediately",
            true,
            "KeyCompromiseProcedure",
            format!(
                "trigger {:?} retired {} at once; tokens they signed no longer verify",
                schedule.trigger.as_deref().unwrap_or_default(),
                retired.join(", ")
            ),
            generation,
            now,
        );
    }
    status.secret_name = Some(secret_name);
    (status.keys, status.active_kid) = published(&plan.keys, now);
    status.next_rotation_step = plan.next_step.map(Time);
    if let Some(next) = plan.next_step {
        let label = crate::metrics::SigningKeyLabels {
            signing_key: format!("{ns}/{}", obj.name_any()),
        };
        ctx.metrics
            .signing_key_next_step
            .get_or_create(&label)
            .set(next.as_second());
    }
    let active = status.active_kid.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        "Ready",
        true,
        "KeyActive",
        format!("key {active} signs"),
        generation,
        now,
    );
    write_status(&ctx, &obj, &status).await?;
    let wait = plan
        .next_step
        .and_then(|t| Duration::try_from(t - now).ok())
        .unwrap_or(Duration::from_secs(3600));
    Ok(Action::requeue(
        wait.clamp(Duration::from_secs(1), Duration::from_secs(3600)),
    ))
}

/// One Event per change of the key set; retiring a key at once is a Warning.
async fn announce(ctx: &Context, obj: &SigningKey, alg: KeyAlgorithm, changes: &[KeyChange]) {
    for change in changes {
        let (reason, note) = match change {
            KeyChange::Generated { kid, activates_at } => (
                "KeyGenerated",
                format!("generated {} key {kid}; it signs from {activates_at}", alg.as_str()),
            ),
            KeyChange::Removed { kid } => ("KeyRemoved", format!("key {kid} left the JWKS")),
            KeyChange::RetiredAtOnce { kid } => (
                "KeyRetiredImmediately",
                format!(
                    "key {kid} was retired and left the JWKS at once (rotation.retireImmediately): tokens it signed no longer verify"
                ),
            ),
        };
        let warning = matches!(change, KeyChange::RetiredAtOnce { .. });
        ctx.event(obj, warning, reason, note).await;
    }
}

/// The keys as the status lists them, and the kid of the newest active one.
fn published(keys: &KeySet, now: Timestamp) -> (Vec<PublishedKey>, Option<String>) {
    let listed = keys
        .keys
        .iter()
        .filter_map(|k| {
            let jwk = k.public_jwk().ok()?;
            Some(PublishedKey {
                kid: k.kid.clone(),
                state: k.state(now).as_str().into(),
                activates_at: Time(k.activates_at),
                retires_at: k.retires_at.map(Time),
                public_jwk: serde_json::to_string(&jwk).ok()?,
            })
        })
        .collect();
    let active = keys
        .keys
        .iter()
        .filter(|k| k.state(now) == KeyState::Active)
        .max_by_key(|k| k.activates_at)
        .map(|k| k.kid.clone());
    (listed, active)
}

/// Writes the key set Secret: replaces the one kauth owns, or creates it.
async fn write_key_set(api: &Api<Secret>, mut secret: Secret, existing: Option<&Secret>) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    match existing {
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            api.replace(&name, &PostParams::default(), &secret).await?;
        }
        None => {
            api.create(&PostParams::default(), &secret).await?;
        }
    }
    Ok(())
}

/// Creates the [`default_signing_keys`] that kauth's namespace lacks: `default` (ES256) when no
/// SigningKey exists, so a fresh install can sign at once, and `default-rs256` when no key is RS256.
pub async fn ensure_default_signing_key(ctx: &Context) -> Result<(), Error> {
    let api: Api<SigningKey> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let existing = api.list(&ListParams::default()).await?.items;
    let algorithms: Vec<KeyAlgorithm> = existing.iter().map(|k| k.spec.algorithm).collect();
    for (name, spec) in default_signing_keys(&algorithms) {
        let key = SigningKey {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ctx.namespace.clone()),
                ..Default::default()
            },
            spec,
            status: None,
        };
        match api.create(&PostParams::default(), &key).await {
            Ok(_) => tracing::info!(namespace = %ctx.namespace, name, "created a default SigningKey"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
