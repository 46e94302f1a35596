//! The Secret step of the OAuthClient reconciler: the credentials a client's spec asks for, in
//! its namespace. A generated secret follows its plan (`credentials::plan_secret`): written
//! first, rotated, or kept while the previous one is extended or retired, each step writing
//! the Secret, an Event and the audit trail as it needs; a team's own Secret is only checked;
//! a client without a Secret has nothing to do here.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::secrets::{self, CredentialsSecret};
use super::{Context, Error};
use crate::audit;
use crate::catalog::ClientVerdict;
use crate::crd::{ExistingSecret, OAuthClient, SecretUsage};
use crate::credentials::{
    CredentialState, PreviousPlan, RotationPolicy, RotationReason, SecretPlan, digest_name, digest_secret, earliest,
    plan_previous, plan_secret, previous_decided_at,
};
use crate::secret_usage::last_used;
use crate::validation::{ClientSettings, GeneratedSecret, SecretHandling};

/// Outcome of the Secret step: condition status, reason, message, and when to look again.
pub(super) struct SecretOutcome {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
    pub version: Option<i64>,
    pub rotated_at: Option<Timestamp>,
    pub recheck_at: Option<Timestamp>,
    pub usage: Vec<SecretUsage>,
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

    fn ready(name: &str, state: &CredentialState, recheck_at: Option<Timestamp>, used: &HashMap<String, i64>) -> Self {
        Self {
            ready: true,
            reason: "SecretReady",
            message: format!("credentials are in Secret {name}"),
            version: Some(state.version),
            rotated_at: Some(state.rotated_at),
            recheck_at,
            usage: usage_status(state, used),
        }
    }
}

/// The client's credentials in its namespace, as its credential source says: a Secret kauth
/// generates, a Secret the team keeps, or none.
pub(super) async fn credentials(
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

/// One client's generated Secret being brought in line with its plan.
struct Writing<'a> {
    ctx: &'a Context,
    obj: &'a OAuthClient,
    client_id: &'a str,
    api: Api<Secret>,
    name: &'a str,
    rotation: &'a RotationPolicy,
    layout: CredentialsSecret<'a>,
    owner_uid: &'a str,
    client_name: &'a str,
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
    let Some(owner) = secrets::owner_reference(obj) else {
        return Ok(SecretOutcome::failed(
            "Pending",
            "the OAuthClient has no uid yet".into(),
        ));
    };
    let client_name = obj.name_any();
    let values = verdict.secret_values(settings, &ctx.issuer);
    let writing = Writing {
        ctx,
        obj,
        client_id: &verdict.client_id,
        api: Api::namespaced(ctx.client.clone(), &ns),
        name,
        rotation,
        layout: CredentialsSecret {
            name,
            namespace: &ns,
            owner: owner.clone(),
            client_name: &client_name,
            contents,
            metadata,
            values: &values,
        },
        owner_uid: &owner.uid,
        client_name: &client_name,
    };
    // kauth's own Secrets are in the cache (they carry its label), so a reconcile reads none
    // from the apiserver; a stale copy only makes a write fail on its resourceVersion.
    let existing = ctx.cache.secret(&ns, name).map(|s| (*s).clone());
    if let Some(existing) = &existing
        && !writing.ours(existing)
    {
        return Ok(writing.not_ours());
    }
    let current = existing.as_ref().and_then(secrets::credential_state);
    let written = match plan_secret(rotation, current.as_ref(), now) {
        SecretPlan::Create(state) => writing.create(existing.as_ref(), state).await?,
        SecretPlan::Rotate { state, reason } => writing.rotate(existing.as_ref(), state, reason).await?,
        SecretPlan::Keep { recheck_at } => {
            let state = current.expect("Keep is only planned for an existing secret");
            return writing.keep(existing.as_ref(), state, recheck_at, now).await;
        }
    };
    match written {
        Ok(state) => writing.written(state).await,
        Err(outcome) => Ok(outcome),
    }
}

impl Writing<'_> {
    /// Ours, or left behind by a deleted OAuthClient of this name with policy Orphan.
    fn ours(&self, s: &Secret) -> bool {
        secrets::owned_by(s, self.owner_uid) || secrets::adoptable_by(s, self.client_name)
    }

    fn not_ours(&self) -> SecretOutcome {
        let name = self.name;
        SecretOutcome::failed(
            "SecretConflict",
            format!(
                "Secret {name} exists and was not created by kauth for this client; kauth leaves it alone (set spec.secret.name to another name)"
            ),
        )
    }

    /// The Secret for `state` (replacing `over`), or why its template failed.
    fn build(&self, state: &CredentialState, over: Option<&Secret>) -> Result<Secret, String> {
        let mut secret = self.layout.build(state)?;
        secret.metadata.resource_version = over.and_then(|old| old.metadata.resource_version.clone());
        Ok(secret)
    }

    /// A first secret, or a new one for a Secret that went missing or unreadable.
    async fn create(
        &self,
        existing: Option<&Secret>,
        state: CredentialState,
    ) -> Result<Result<CredentialState, SecretOutcome>, Error> {
        let (ctx, obj, name) = (self.ctx, self.obj, self.name);
        let secret = match self.build(&state, existing) {
            Ok(secret) => secret,
            Err(e) => return Ok(Err(SecretOutcome::failed("TemplateFailed", e))),
        };
        match existing {
            // Our Secret with unreadable bookkeeping: replace it rather than guess.
            Some(_) => replace_secret(ctx, &self.api, name, &secret).await?,
            None => match self.api.create(&PostParams::default(), &secret).await {
                Ok(written) => ctx.cache.own_writes.note(&written),
                Err(e) => {
                    let exists = matches!(&e, kube::Error::Api(status) if status.code == 409);
                    // Not in the cache yet there: someone else's Secret (left alone), or
                    // kauth's own that the cache has yet to see (retried).
                    if exists
                        && let Some(found) = self.api.get_opt(name).await?
                        && !self.ours(&found)
                    {
                        return Ok(Err(self.not_ours()));
                    }
                    return Err(e.into());
                }
            },
        }
        // A new client's first Secret is routine: the audit trail and the SecretReady
        // condition say it, and at scale one Event less per client is one apiserver write
        // and one cached Event less. A Secret that was there before (its status names it)
        // and had to be generated again is news: someone deleted or broke it.
        let recreated = obj.status.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name);
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
            Some(self.client_id),
            &format!("version {} in Secret {name}: {what}", state.version),
        );
        Ok(Ok(state))
    }

    /// A rotation the trigger or the schedule asked for.
    async fn rotate(
        &self,
        existing: Option<&Secret>,
        state: CredentialState,
        reason: RotationReason,
    ) -> Result<Result<CredentialState, SecretOutcome>, Error> {
        let (ctx, obj) = (self.ctx, self.obj);
        let secret = match self.build(&state, existing) {
            Ok(secret) => secret,
            Err(e) => return Ok(Err(SecretOutcome::failed("TemplateFailed", e))),
        };
        replace_secret(ctx, &self.api, self.name, &secret).await?;
        let why = match reason {
            RotationReason::Trigger => "spec.secret.rotation.trigger changed",
            RotationReason::Schedule => "spec.secret.rotation.every elapsed",
        };
        let overlap = humantime::format_duration(self.rotation.overlap);
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
            Some(self.client_id),
            &format!("version {} ({why})", state.version),
        );
        Ok(Ok(state))
    }

    /// The same secret: the previous one kept, extended while in use, or retired; the Secret
    /// rewritten only when its layout, values, labels, owner or windows changed.
    async fn keep(
        &self,
        existing: Option<&Secret>,
        mut state: CredentialState,
        recheck_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<SecretOutcome, Error> {
        let (ctx, obj) = (self.ctx, self.obj);
        let used = secret_use(ctx, &state).await?;
        let previous_version = state.version - 1;
        let mut recheck_at = recheck_at;
        let mut event = None;
        let previous_last_used = state.previous.as_ref().and_then(|p| last_used(&used, &p.sha256));
        match plan_previous(self.rotation, &state, previous_last_used, now) {
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
        if let Some(old) = existing
            && !self.layout.up_to_date(old, &state)
        {
            // Layout, values, labels, owner or the previous secret's window changed (or an
            // orphan is adopted): same secret, new Secret.
            let secret = match self.build(&state, Some(old)) {
                Ok(secret) => secret,
                Err(e) => return Ok(SecretOutcome::failed("TemplateFailed", e)),
            };
            replace_secret(ctx, &self.api, self.name, &secret).await?;
        }
        if let Some((warning, reason, note)) = event {
            if reason == "PreviousSecretRetired" {
                ctx.audit(obj, audit::Event::PreviousSecretRetired, Some(self.client_id), &note);
            }
            ctx.event(obj, warning, reason, note).await;
        }
        Ok(SecretOutcome::ready(self.name, &state, recheck_at, &used))
    }

    /// The outcome after a secret was written: ready, looked at again when the schedule
    /// rotates it or the previous one's end is decided.
    async fn written(&self, state: CredentialState) -> Result<SecretOutcome, Error> {
        // A secret just written has not been used; only a rotated-out one may have been.
        let used = if state.previous.is_some() {
            secret_use(self.ctx, &state).await?
        } else {
            HashMap::new()
        };
        let scheduled = self
            .rotation
            .every
            .map(|every| state.rotated_at + jiff::SignedDuration::try_from(every).unwrap_or_default());
        let previous_ends = previous_decided_at(self.rotation, &state);
        Ok(SecretOutcome::ready(
            self.name,
            &state,
            earliest(scheduled, previous_ends),
            &used,
        ))
    }
}

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
