//! A client's secret in the state folder, laid out like a mounted Secret: generated and
//! rotated as its plan says (with the rotation state in a file beside the keys), or read
//! from the file a team put there.

use super::*;

impl StandaloneConfig {
    /// Brings generated credentials up to date and returns the verifier, or a problem.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn credentials(
        &self,
        verdict: &ClientVerdict,
        settings: &ClientSettings,
        now: Timestamp,
        used: &SecretUseLookup,
        writes: &mut StagedWrites,
        changes: &mut Vec<String>,
        next_step: &mut Option<Timestamp>,
    ) -> Result<SecretVerifier, String> {
        let Some(secret_name) = settings.secret.secret_name() else {
            return Err("spec.serviceAccount: this client has no secret".into());
        };
        let dir = self.secret_dir(&verdict.key.namespace, secret_name);
        match settings.secret.secret_handling() {
            SecretHandling::None(_) => Err("this client has no secret".into()),
            SecretHandling::Read(existing) => {
                let path = dir.join(&existing.key);
                let secret = fs::read_to_string(&path).map_err(|_| {
                    format!(
                        "spec.existingSecret: put the client secret into {} (standalone stands in for the Secret)",
                        path.display()
                    )
                })?;
                let secret = secret.trim_end_matches(['\n', '\r']);
                Ok(SecretVerifier::for_secret(secret))
            }
            // The Secret's labels, annotations and deletion policy have no files to apply to:
            // standalone keeps every state file until it is removed by hand.
            SecretHandling::Generate(GeneratedSecret { contents, rotation, .. }) => {
                let state_path = dir.join(CREDENTIAL_STATE_FILE);
                let current: Option<CredentialState> = read_json(&state_path).map_err(|e| e.to_string())?;
                let state = match plan_secret(rotation, current.as_ref(), now) {
                    SecretPlan::Keep { recheck_at } => {
                        *next_step = earliest(*next_step, recheck_at);
                        let mut state = current.clone().expect("Keep is only planned for an existing secret");
                        let previous_last_used = state.previous.as_ref().and_then(|p| {
                            let found = used(&[p.sha256.as_str()]);
                            last_used(&found, &p.sha256)
                        });
                        match plan_previous(rotation, &state, previous_last_used, now) {
                            PreviousPlan::Keep { .. } => {}
                            PreviousPlan::Extend { until, .. } => {
                                if let Some(previous) = state.previous.as_mut() {
                                    previous.valid_until = until;
                                }
                                changes.push(format!(
                                    "OAuthClient {}: the previous secret is still in use; it stays valid until {until}",
                                    verdict.key
                                ));
                            }
                            PreviousPlan::Retire { .. } => {
                                state.previous = None;
                                changes.push(format!(
                                    "OAuthClient {}: the previous secret no longer works",
                                    verdict.key
                                ));
                            }
                        }
                        state
                    }
                    SecretPlan::Create(state) => {
                        changes.push(format!(
                            "OAuthClient {}: created credentials in {}",
                            verdict.key,
                            dir.display()
                        ));
                        state
                    }
                    SecretPlan::Rotate { state, reason } => {
                        changes.push(format!(
                            "OAuthClient {}: rotated the secret ({reason:?}) to version {}",
                            verdict.key, state.version
                        ));
                        state
                    }
                };
                // Look again when the previous secret's fate is due.
                *next_step = earliest(*next_step, previous_decided_at(rotation, &state));
                let values = verdict.secret_values(settings, &self.issuer);
                let files = contents.render(&values.with_secret(&state.secret))?;
                // A client seen before has its folder (its state file is in it) and files to
                // compare with; a new one has neither, so it is spared the failing lookups
                // (metadata operations are most of a first start's cost).
                let seen_before = current.is_some();
                if !seen_before {
                    let (ns, secret) = (verdict.key.namespace.as_str(), secret_name);
                    state_files::private_dirs(&self.state_dir, &["secrets", ns, secret]).map_err(|e| e.to_string())?;
                }
                for (key, value) in &files {
                    let path = dir.join(key);
                    if !seen_before || fs::read_to_string(&path).ok().as_deref() != Some(value.as_str()) {
                        writes.write(&path, value.as_bytes()).map_err(|e| e.to_string())?;
                    }
                }
                if current.as_ref() != Some(&state) {
                    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
                    writes.write(&state_path, &json).map_err(|e| e.to_string())?;
                }
                Ok(state.verifier())
            }
        }
    }
}
