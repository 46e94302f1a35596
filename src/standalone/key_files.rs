//! The signing keys in the state folder: planned, generated and retired per SigningKey, and
//! the key ring built from them.

use super::*;

impl StandaloneConfig {
    pub(super) fn key_ring(
        &self,
        manifests: &Manifests,
        now: Timestamp,
        writes: &mut StagedWrites,
        pass: &mut PassNotes,
    ) -> Result<KeyRing, StandaloneError> {
        let keys_dir = self.state_dir.join("signing-keys");
        private_dir(&keys_dir)?;
        let mut wanted: Vec<(String, KeyAlgorithm, KeySchedule)> = Vec::new();
        // Every SigningKey in kauth's namespace, valid or not, as the controller counts them.
        let mut algorithms = Vec::new();
        for (origin, sk) in &manifests.signing_keys {
            let ns = sk.metadata.namespace.clone().unwrap_or_default();
            let name = sk.metadata.name.clone().unwrap_or_default();
            if ns != self.kauth_namespace {
                pass.problems.push(format!(
                    "{origin}: SigningKey {ns}/{name}: ignored, signing keys are only read in kauth's namespace '{}'",
                    self.kauth_namespace
                ));
                continue;
            }
            algorithms.push(sk.spec.algorithm);
            match validate_signing_key(&sk.spec) {
                Ok((alg, schedule)) => wanted.push((format!("{ns}.{name}.json"), alg, schedule)),
                Err(errors) => pass
                    .problems
                    .push(format!("{origin}: SigningKey {ns}/{name}: {}", describe(&errors))),
            }
        }
        // The same default keys as in a cluster, judged by the same rules.
        for (name, spec) in default_signing_keys(&algorithms) {
            let (alg, schedule) = validate_signing_key(&spec).expect("the default SigningKeys are valid");
            wanted.push((format!("{name}.json"), alg, schedule));
        }
        let mut sets = Vec::new();
        for (file, alg, schedule) in wanted {
            let path = keys_dir.join(&file);
            let current: KeySet = read_json(&path)?.unwrap_or_default();
            let plan = plan_keys(alg, &schedule, &current, now).map_err(|e| StandaloneError(e.to_string()))?;
            if plan.keys != current {
                writes.write(&path, &serde_json::to_vec_pretty(&plan.keys).expect("keys serialise"))?;
            }
            for change in &plan.changes {
                pass.changes.push(format!("signing key {file}: {change:?}"));
            }
            pass.next_step = earliest(pass.next_step, plan.next_step);
            sets.push(plan.keys);
        }
        let (ring, errors) = KeyRing::from_sets(&sets);
        pass.problems.extend(errors.into_iter().map(|e| e.to_string()));
        Ok(ring)
    }
}
