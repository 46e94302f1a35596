//! OAuthClient reconciler: dereference (catalog, Secret) -> validate -> build the desired
//! Secret and status -> apply -> Events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::secrets::{self, CredentialsSecret};
use super::{Context, Error, MANAGER};
use crate::audit;
use crate::catalog::{ClientVerdict, Holder, ObjectKey};
use crate::crd::ExistingSecret;
use crate::crd::{OAuthClient, OAuthClientStatus, SecretUsage, set_condition};
use crate::credentials::{
    CredentialState, PreviousPlan, RotationReason, SecretPlan, digest_name, digest_secret, earliest, plan_previous,
    plan_secret, previous_decided_at,
};
use crate::secret_usage::last_used;
use crate::validation::{ClientSettings, GeneratedSecret, SecretHandling, describe};

/// Outcome of the Secret step: condition status, reason, message, and when to look again.
struct SecretOutcome {
    ready: bool,
    reason: &'static str,
    message: String,
    version: Option<i64>,
    rotated_at: Option<Timestamp>,
    recheck_at: Option<Timestamp>,
    usage: Vec<SecretUsage>,
}

impl SecretOutcome {
    fn failed(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
            version: None,
            rotated_at: None,
            recheck_at: None,
            usage: Vec::new(),
        }
    }
}

async fn generated_secret(
    ctx: &Context,
    obj: &OAuthClient,
    verdict: &ClientVerdict,
    settings: &ClientSettings,
    generated: &GeneratedSecret,
    now: Timestamp,
) -> Result<SecretOutcome, Error> {
    let GeneratedSecret {
        name,
        contents,
        rotation,
        metadata,
    } = generated;
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(owner) = secrets::owner_reference(obj) else {
        return Ok(SecretOutcome::failed(
            "Pending",
            "the OAuthClient has no uid yet".into(),
        ));
    };
    let client_name = obj.name_any();
    let values = verdict.secret_values(settings, &ctx.issuer);
    let layout = CredentialsSecret {
        name,
        namespace: &ns,
        owner: owner.clone(),
        client_name: &client_name,
        contents,
        metadata,
        values: &values,
    };
    let not_ours = || {
        SecretOutcome::failed(
            "SecretConflict",
            format!(
                "Secret {name} exists and was not created by kauth for this client; kauth leaves it alone (set spec.secret.name to another name)"
            ),
        )
    };
    // Ours, or left behind by a deleted OAuthClient of this name with policy Orphan.
    let ours = |s: &Secret| secrets::owned_by(s, &owner.uid) || secrets::adoptable_by(s, &client_name);
    // kauth's own Secrets are in the cache (they carry its label), so a reconcile reads none
    // from the apiserver; a stale copy only makes a write fail on its resourceVersion.
    let existing = ctx.cache.secret(&ns, name).map(|s| (*s).clone());
    if let Some(existing) = &existing
        && !ours(existing)
    {
        return Ok(not_ours());
    }
    let current = existing.as_ref().and_then(secrets::credential_state);
    let state = match plan_secret(rotation, current.as_ref(), now) {
        SecretPlan::Create(state) => {
            let secret = match layout.build(&state) {
                Ok(secret) => secret,
                Err(e) => return Ok(SecretOutcome::failed("TemplateFailed", e)),
            };
            match &existing {
                // Our Secret with unreadable bookkeeping: replace it rather than guess.
                Some(old) => {
                    let mut secret = secret;
                    secret.metadata.resource_version = old.metadata.resource_version.clone();
                    replace_secret(ctx, &api, name, &secret).await?;
                }
                None => {
                    match api.create(&PostParams::default(), &secret).await {
                        Ok(written) => ctx.cache.own_writes.note(&written),
                        Err(e) => {
                            let exists = matches!(&e, kube::Error::Api(status) if status.code == 409);
                            // Not in the cache yet there: someone else's Secret (left alone), or
                            // kauth's own that the cache has yet to see (retried).
                            if exists
                                && let Some(found) = api.get_opt(name).await?
                                && !ours(&found)
                            {
                                return Ok(not_ours());
                            }
                            return Err(e.into());
                        }
                    }
                }
            }
            // A new client's first Secret is routine: the audit trail and the SecretReady
            // condition say it, and at scale one Event less per client is one apiserver write
            // and one cached Event less. A Secret that was there before (its status names it)
            // and had to be generated again is news: someone deleted or broke it.
            let recreated = obj.status.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name.as_str());
            let what = if recreated {
                ctx.event(
                    obj,
                    true,
                    "SecretRecreated",
                    format!("Secret {name} was missing or unreadable: generated new credentials (version {}); workloads must reload them", state.version),
                )
                .await;
                "regenerated (the Secret was missing or unreadable)"
            } else {
                "first secret"
            };
            ctx.audit(
                obj,
                audit::Event::SecretCreated,
                Some(&verdict.client_id),
                &format!("version {} in Secret {name}: {what}", state.version),
            );
            state
        }
        SecretPlan::Rotate { state, reason } => {
            let mut secret = match layout.build(&state) {
                Ok(secret) => secret,
                Err(e) => return Ok(SecretOutcome::failed("TemplateFailed", e)),
            };
            secret.metadata.resource_version = existing.as_ref().and_then(|s| s.metadata.resource_version.clone());
            replace_secret(ctx, &api, name, &secret).await?;
            let why = match reason {
                RotationReason::Trigger => "spec.secret.rotation.trigger changed",
                RotationReason::Schedule => "spec.secret.rotation.every elapsed",
            };
            let overlap = humantime::format_duration(rotation.overlap);
            ctx.event(
                obj,
                false,
                "SecretRotated",
                format!(
                    "rotated the client secret to version {} ({why}); the previous secret works for {overlap}",
                    state.version
                ),
            )
            .await;
            ctx.audit(
                obj,
                audit::Event::SecretRotated,
                Some(&verdict.client_id),
                &format!("version {} ({why})", state.version),
            );
            state
        }
        SecretPlan::Keep { recheck_at } => {
            let mut state = current.expect("Keep is only planned for an existing secret");
            let used = secret_use(ctx, &state).await?;
            let previous_version = state.version - 1;
            let mut recheck_at = recheck_at;
            let mut event = None;
            let previous_last_used = state.previous.as_ref().and_then(|p| last_used(&used, &p.sha256));
            match plan_previous(rotation, &state, previous_last_used, now) {
                PreviousPlan::Keep { recheck_at: at } => recheck_at = earliest(recheck_at, at),
                PreviousPlan::Extend { until, recheck_at: at } => {
                    if let Some(previous) = state.previous.as_mut() {
                        previous.valid_until = until;
                    }
                    recheck_at = earliest(recheck_at, Some(at));
                    event = Some((
                        true,
                        "PreviousSecretInUse",
                        format!(
                            "the previous client secret (version {previous_version}) is still in use; it stays valid until {until}, or longer while used"
                        ),
                    ));
                }
                PreviousPlan::Retire { unused } => {
                    state.previous = None;
                    let why = if unused {
                        "its overlap has ended and it was not used for the quiet period"
                    } else {
                        "its overlap has ended"
                    };
                    event = Some((
                        false,
                        "PreviousSecretRetired",
                        format!("the previous client secret (version {previous_version}) no longer works: {why}"),
                    ));
                }
            }
            if let Some(old) = &existing
                && !layout.up_to_date(old, &state)
            {
                // Layout, values, labels, owner or the previous secret's window changed (or
                // an orphan is adopted): same secret, new Secret.
                let mut secret = match layout.build(&state) {
                    Ok(secret) => secret,
                    Err(e) => return Ok(SecretOutcome::failed("TemplateFailed", e)),
                };
                secret.metadata.resource_version = old.metadata.resource_version.clone();
                replace_secret(ctx, &api, name, &secret).await?;
            }
            if let Some((warning, reason, note)) = event {
                if reason == "PreviousSecretRetired" {
                    ctx.audit(
                        obj,
                        audit::Event::PreviousSecretRetired,
                        Some(&verdict.client_id),
                        &note,
                    );
                }
                ctx.event(obj, warning, reason, note).await;
            }
            return Ok(SecretOutcome {
                ready: true,
                reason: "SecretReady",
                message: format!("credentials are in Secret {name}"),
                version: Some(state.version),
                rotated_at: Some(state.rotated_at),
                recheck_at,
                usage: usage_status(&state, &used),
            });
        }
    };
    // A secret just written has not been used; only a rotated-out one may have been.
    let used = if state.previous.is_some() {
        secret_use(ctx, &state).await?
    } else {
        HashMap::new()
    };
    let scheduled = rotation
        .every
        .map(|every| state.rotated_at + jiff::SignedDuration::try_from(every).unwrap_or_default());
    let previous_ends = previous_decided_at(rotation, &state);
    Ok(SecretOutcome {
        ready: true,
        reason: "SecretReady",
        message: format!("credentials are in Secret {name}"),
        version: Some(state.version),
        rotated_at: Some(state.rotated_at),
        recheck_at: earliest(scheduled, previous_ends),
        usage: usage_status(&state, &used),
    })
}

/// Replaces kauth's own Secret `name` and notes the write, so its echo in the cache does not
/// run the client's reconcile again ([`super::cache::OwnWrites`]).
async fn replace_secret(ctx: &Context, api: &Api<Secret>, name: &str, secret: &Secret) -> Result<(), kube::Error> {
    let written = api.replace(name, &PostParams::default(), secret).await?;
    ctx.cache.own_writes.note(&written);
    Ok(())
}

/// When the client's live secrets were last used, as all replicas reported it (nothing
/// without a store).
async fn secret_use(ctx: &Context, state: &CredentialState) -> Result<HashMap<String, i64>, Error> {
    let Some(store) = &ctx.store else {
        return Ok(HashMap::new());
    };
    let current = digest_name(&digest_secret(&state.secret));
    let mut names = vec![current.as_str()];
    if let Some(previous) = &state.previous {
        names.push(&previous.sha256);
    }
    Ok(store.secret_last_used(&names).await?)
}

/// The status' view of secret use: the current secret, then the previous one while it works.
fn usage_status(state: &CredentialState, used: &HashMap<String, i64>) -> Vec<SecretUsage> {
    let time = |t: Timestamp| Time(Timestamp::from_second(t.as_second()).unwrap_or(t));
    let current = digest_name(&digest_secret(&state.secret));
    let mut usage = vec![SecretUsage {
        version: state.version,
        last_used: last_used(used, &current).map(time),
        valid_until: None,
    }];
    if let Some(previous) = &state.previous {
        usage.push(SecretUsage {
            version: state.version - 1,
            last_used: last_used(used, &previous.sha256).map(time),
            valid_until: Some(time(previous.valid_until)),
        });
    }
    usage
}

async fn existing_secret(ctx: &Context, obj: &OAuthClient, existing: &ExistingSecret) -> Result<SecretOutcome, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let outcome = match api.get_opt(&existing.name).await? {
        None => SecretOutcome::failed(
            "ExistingSecretNotFound",
            format!("spec.existingSecret: Secret {} does not exist", existing.name),
        ),
        Some(s) if !secrets::labelled(&s, secrets::EXTERNAL) => SecretOutcome::failed(
            "ExistingSecretNotLabelled",
            format!(
                "spec.existingSecret: label Secret {} with {}={} so kauth may read it",
                existing.name,
                secrets::CREDENTIALS_LABEL,
                secrets::EXTERNAL
            ),
        ),
        Some(s) if secrets::external_secret_value(&s, &existing.key).is_none() => SecretOutcome::failed(
            "ExistingSecretKeyMissing",
            format!(
                "spec.existingSecret.key: Secret {} has no non-empty key {}",
                existing.name, existing.key
            ),
        ),
        Some(_) => SecretOutcome {
            ready: true,
            reason: "SecretReady",
            message: format!("using the client secret from Secret {}", existing.name),
            version: None,
            rotated_at: None,
            recheck_at: None,
            usage: Vec::new(),
        },
    };
    Ok(outcome)
}

/// The client's credentials in its namespace, as its credential source says: a Secret kauth
/// generates, a Secret the team keeps, or none.
async fn credentials(
    ctx: &Context,
    obj: &OAuthClient,
    verdict: &ClientVerdict,
    settings: &ClientSettings,
    now: Timestamp,
) -> Result<SecretOutcome, Error> {
    Ok(match settings.secret.secret_handling() {
        SecretHandling::Generate(generated) => generated_secret(ctx, obj, verdict, settings, generated, now).await?,
        SecretHandling::Read(existing) => existing_secret(ctx, obj, existing).await?,
        SecretHandling::None(proof) => SecretOutcome {
            ready: true,
            reason: proof.reason(),
            message: proof.describe(),
            version: None,
            rotated_at: None,
            recheck_at: None,
            usage: Vec::new(),
        },
    })
}

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
