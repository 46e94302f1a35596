//! Standalone mode: the same manifests, validation and provider without a cluster. Generated
//! credentials go to a state folder laid out like mounted Secrets
//! (`secrets/<namespace>/<secret>/<KEY>`), kept across restarts.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use tokio::net::TcpListener;

use crate::catalog::{Catalog, ClientVerdict, ScopeVerdict};
use crate::claims::Ledger;
use crate::connectors::{CONNECTORS_CONFIG_MAP, CONNECTORS_KEY, Connectors};
use crate::crd::{KeyAlgorithm, default_signing_keys};
use crate::credentials::{
    CredentialState, PreviousPlan, SecretPlan, SecretVerifier, earliest, plan_previous, plan_secret,
    previous_decided_at,
};
use crate::issuer::Issuer;
use crate::keys::{KeyRing, KeySet, plan_keys};
use crate::manifests::{Manifests, Origin};
use crate::metrics::Metrics;
use crate::people::{Directory, USERS_KEY, USERS_SECRET};
use crate::provider::launch;
use crate::provider::serve::ServeOptions;
use crate::registry::{Registry, SecretRead, Snapshot};
use crate::secret_usage::last_used;
use crate::store::GrantStore;
use crate::tls::TlsChoice;
use crate::validation::{
    ClientSettings, GeneratedSecret, KeySchedule, NoSecret, SecretHandling, describe, validate_signing_key,
};

mod client_secrets;
mod key_files;
mod serving;
mod state_files;
pub use serving::{run, summary};
use state_files::StagedWrites;

/// The claims record in the state folder (who owns which Scope value, audience, client id).
const CLAIMS_FILE: &str = "claims.json";

/// Name of the file beside the key files that records the secret's rotation state.
const CREDENTIAL_STATE_FILE: &str = ".kauth-credential.json";

/// The example manifests compiled into the binary: what `kauth standalone` serves without
/// `--manifests`, the whole `examples/` folder (a test checks that none is missing), so the
/// README's commands work either way.
pub const EMBEDDED_EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/scope-orders.yaml",
        include_str!("../../examples/scope-orders.yaml"),
    ),
    (
        "examples/client-m2m.yaml",
        include_str!("../../examples/client-m2m.yaml"),
    ),
    (
        "examples/client-web.yaml",
        include_str!("../../examples/client-web.yaml"),
    ),
    (
        "examples/client-cli.yaml",
        include_str!("../../examples/client-cli.yaml"),
    ),
    (
        "examples/client-fapi2.yaml",
        include_str!("../../examples/client-fapi2.yaml"),
    ),
    ("examples/people.yaml", include_str!("../../examples/people.yaml")),
    (
        "examples/signing-key.yaml",
        include_str!("../../examples/signing-key.yaml"),
    ),
    ("examples/workload.yaml", include_str!("../../examples/workload.yaml")),
    (
        "examples/workload-secretless.yaml",
        include_str!("../../examples/workload-secretless.yaml"),
    ),
];

/// The ports standalone listens on, both on 127.0.0.1 (0 picks a free one).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The provider: OAuth endpoints and sign-in pages.
    pub provider: u16,
    /// Liveness, readiness and metrics (None: [`DEFAULT_OPS_PORT`], or a free port when it
    /// is taken).
    pub ops: Option<u16>,
}

/// The operations port standalone tries first.
pub const DEFAULT_OPS_PORT: u16 = 9090;

/// Where manifests come from.
#[derive(Clone, Debug)]
pub enum ManifestSource {
    /// A folder of YAML files.
    Dir(PathBuf),
    /// The examples compiled into the binary.
    Embedded,
}

/// When the named secrets (digest names) were last used, as the grant store has it.
pub type SecretUseLookup = dyn Fn(&[&str]) -> HashMap<String, i64> + Send + Sync;

/// Standalone settings.
#[derive(Clone, Debug)]
pub struct StandaloneConfig {
    /// The manifests to serve.
    pub manifests: ManifestSource,
    /// Where credentials, keys and revocations are kept.
    pub state_dir: PathBuf,
    /// Issuer URL.
    pub issuer: Issuer,
    /// Only SigningKeys in this namespace are used (as in a cluster, kauth's own namespace).
    pub kauth_namespace: String,
    /// Claim grace, quota and reservations.
    pub claims: crate::claims::ClaimPolicy,
    /// Namespaces whose clients are first-party (no consent to identify people).
    pub first_party_namespaces: Vec<String>,
    /// Unknown fields refuse their resource instead of being reported and ignored.
    pub strict: bool,
}

/// A client that is served, for the start-up summary.
#[derive(Clone, Debug)]
pub struct ReadyClient {
    /// `namespace/name`.
    pub resource: String,
    /// Client id.
    pub client_id: String,
    /// Folder with the credential files.
    pub credentials_dir: PathBuf,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Key names of id and secret in that folder.
    pub id_key: String,
    /// Key name of the secret.
    pub secret_key: String,
    /// It may get tokens for itself (client_credentials): the one the summary's curl uses.
    pub client_credentials: bool,
}

/// The outcome of one pass over the manifests.
pub struct Pass {
    /// What the provider serves.
    pub snapshot: Snapshot,
    /// Served clients.
    pub ready: Vec<ReadyClient>,
    /// Problems, each naming the file, the resource and the field.
    pub problems: Vec<String>,
    /// Fields that were ignored (unknown to the schema), each naming file, resource and field.
    pub warnings: Vec<String>,
    /// Valid resources standalone mode does not serve (secretless clients need a cluster).
    pub notices: Vec<String>,
    /// Events worth telling (created or rotated secrets, new keys).
    pub changes: Vec<String>,
    /// Earliest time a schedule needs another pass.
    pub next_step: Option<Timestamp>,
    /// Local people from the `kauth-users` Secret manifest (None: it is missing or invalid,
    /// and the problem is listed).
    pub people: Option<Directory>,
    /// Upstream providers from the `kauth-connectors` ConfigMap manifest.
    pub connectors: Option<Connectors>,
}

/// A standalone failure that stops the pass (unreadable folders, unwritable state).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StandaloneError(String);

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StandaloneError {
    StandaloneError(format!("{what} {}: {e}", path.display()))
}

fn load_manifests(source: &ManifestSource, strict: bool) -> Result<Manifests, StandaloneError> {
    match source {
        ManifestSource::Dir(dir) => {
            Manifests::load_dir_strictly(dir, strict).map_err(|e| io_err("cannot read manifests in", dir, e))
        }
        ManifestSource::Embedded => {
            let mut m = Manifests::default();
            for (file, text) in EMBEDDED_EXAMPLES {
                m.add_text(Path::new(file), text);
            }
            Ok(m)
        }
    }
}

fn private_dir(path: &Path) -> Result<(), StandaloneError> {
    fs::create_dir_all(path).map_err(|e| io_err("cannot create", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|e| io_err("cannot protect", path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StandaloneError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StandaloneError(format!(
                "state file {} is corrupt ({e}); move it away to regenerate",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("cannot read", path, e)),
    }
}

impl StandaloneConfig {
    fn secret_dir(&self, namespace: &str, secret: &str) -> PathBuf {
        self.state_dir.join("secrets").join(namespace).join(secret)
    }

    /// One full pass: load, evaluate, write credentials and keys, build the snapshot.
    pub fn pass(&self, now: Timestamp) -> Result<Pass, StandaloneError> {
        self.pass_with(now, &|_| HashMap::new())
    }

    /// One full pass that reads secret use through `used` (`retirePrevious: WhenUnused`).
    pub fn pass_with(&self, now: Timestamp, used: &SecretUseLookup) -> Result<Pass, StandaloneError> {
        let manifests = load_manifests(&self.manifests, self.strict)?;
        let mut notes = PassNotes::default();
        private_dir(&self.state_dir)?;
        let mut writes = StagedWrites::new(&self.state_dir);
        notes.problems.extend(manifests.errors.iter().map(ToString::to_string));
        notes
            .warnings
            .extend(manifests.warnings.iter().map(ToString::to_string));

        let claims_path = self.state_dir.join(CLAIMS_FILE);
        let recorded: Ledger = read_json(&claims_path)
            .unwrap_or_else(|e| {
                notes
                    .problems
                    .push(format!("{e}; claims are settled again from the manifests"));
                None
            })
            .unwrap_or_default();
        // The ledger is written in this pass, before anything of it is served: no claim waits.
        let rules = self
            .claims
            .clone()
            .with_issuer(&self.issuer.url)
            .rules(now.as_second(), false);
        let catalog = manifests.catalog(&recorded, rules);
        if catalog.ledger != recorded {
            writes.write(&claims_path, catalog.ledger.to_json().as_bytes())?;
        }
        if let Some(lapse) = catalog.ledger.next_lapse(self.claims.grace) {
            notes.next_step = earliest(notes.next_step, Timestamp::from_second(lapse).ok());
        }
        scope_problems(&manifests, &catalog, &mut notes);

        let mut verifiers: HashMap<String, SecretVerifier> = HashMap::new();
        let mut ready = Vec::new();
        let mut secret_owner: HashMap<(String, String), String> = HashMap::new();
        for (verdict, (origin, _)) in catalog.clients.iter().zip(&manifests.clients) {
            if let Some((verifier, listed)) =
                self.client(verdict, origin, now, used, &mut secret_owner, &mut writes, &mut notes)
            {
                verifiers.insert(verdict.client_id.clone(), verifier);
                ready.push(listed);
            }
        }

        let keys = self.key_ring(&manifests, now, &mut writes, &mut notes)?;
        // Everything written above is durable before anything of it is served.
        writes.commit()?;
        let snapshot = Snapshot::build(
            &catalog,
            &Snapshot::default(), // manifests carry no generation: nothing to share
            |v, _, _| Some(SecretRead::Read(verifiers.get(&v.client_id)?.clone(), None)),
            keys,
        );
        let people = self.people(&manifests, &mut notes);
        let connectors = self.connectors(&manifests, &mut notes);
        Ok(Pass {
            people,
            connectors,
            snapshot,
            ready,
            problems: notes.problems,
            warnings: notes.warnings,
            notices: notes.notices,
            changes: notes.changes,
            next_step: notes.next_step,
        })
    }

    /// One client of a pass: its problems noted, its credentials made; its verifier and
    /// how it is listed as ready, when it can get tokens.
    #[allow(clippy::too_many_arguments)]
    fn client(
        &self,
        verdict: &ClientVerdict,
        origin: &Origin,
        now: Timestamp,
        used: &SecretUseLookup,
        secret_owner: &mut HashMap<(String, String), String>,
        writes: &mut StagedWrites,
        notes: &mut PassNotes,
    ) -> Option<(SecretVerifier, ReadyClient)> {
        let key = &verdict.key;
        let settings = match (&*verdict.settings, &verdict.id_conflict) {
            (Err(errors), _) => {
                notes
                    .problems
                    .push(format!("{origin}: OAuthClient {key}: {}", describe(errors)));
                return None;
            }
            (Ok(_), Some(_)) => {
                notes.problems.push(format!(
                    "{origin}: OAuthClient {key}: {}",
                    verdict.conflict_message().unwrap_or_default()
                ));
                return None;
            }
            (Ok(s), None) => s,
        };
        let (secret_name, (id_key, secret_key)) = match settings.secret.secret_handling() {
            SecretHandling::Generate(g) => (
                g.name.clone(),
                (g.contents.keys.client_id.clone(), g.contents.keys.client_secret.clone()),
            ),
            SecretHandling::Read(e) => (e.name.clone(), (String::new(), e.key.clone())),
            SecretHandling::None(proof) => {
                notes.notices.push(match proof {
                    NoSecret::ServiceAccount(_) => format!(
                        "OAuthClient {key} is secretless (spec.serviceAccount): ServiceAccount tokens need a cluster's issuer, so `kauth run` serves it, not standalone"
                    ),
                    NoSecret::Public => format!(
                        "OAuthClient {key} is public: client_id {}, people sign in at {}",
                        verdict.client_id,
                        self.issuer.endpoint("/authorize")
                    ),
                    NoSecret::Keys(_) => format!("OAuthClient {key}: client_id {}, {}", verdict.client_id, proof.describe()),
                });
                return None;
            }
        };
        if let Some(other) = secret_owner.insert((key.namespace.clone(), secret_name.clone()), key.name.clone()) {
            notes.problems.push(format!(
                "{origin}: OAuthClient {key}: Secret {secret_name} already belongs to OAuthClient {}/{other}",
                key.namespace
            ));
            return None;
        }
        for missing in &verdict.missing {
            notes.problems.push(format!(
                "{origin}: OAuthClient {key}: spec.scopes '{}': {}",
                missing.name, missing.reason
            ));
        }
        for missing in &verdict.missing_audiences {
            notes.problems.push(format!(
                "{origin}: OAuthClient {key}: spec.audiences '{}': {}",
                missing.name, missing.reason
            ));
        }
        match self.credentials(
            verdict,
            settings,
            now,
            used,
            writes,
            &mut notes.changes,
            &mut notes.next_step,
        ) {
            Ok(verifier) => Some((
                verifier,
                ReadyClient {
                    resource: key.to_string(),
                    client_id: verdict.client_id.clone(),
                    credentials_dir: self.secret_dir(&key.namespace, &secret_name),
                    scopes: verdict.granted.iter().map(|g| g.value.clone()).collect(),
                    id_key,
                    secret_key,
                    client_credentials: verdict.grant_types.contains(&crate::crd::GrantType::ClientCredentials),
                },
            )),
            Err(problem) => {
                notes.problems.push(format!("{origin}: OAuthClient {key}: {problem}"));
                None
            }
        }
    }

    /// The local people of the `kauth-users` Secret in kauth's namespace, as a cluster would
    /// mount it.
    fn people(&self, manifests: &Manifests, notes: &mut PassNotes) -> Option<Directory> {
        let key = (self.kauth_namespace.clone(), USERS_SECRET.to_string());
        let (origin, data) = manifests.secrets.get(&key)?;
        let Some(text) = data.get(USERS_KEY) else {
            notes.problems.push(format!(
                "{origin}: Secret {}/{USERS_SECRET}: no key {USERS_KEY}",
                self.kauth_namespace
            ));
            return None;
        };
        match Directory::parse(text) {
            Ok(d) => {
                for problem in d.problems() {
                    notes.problems.push(format!(
                        "{origin}: Secret {}/{USERS_SECRET}: {problem}",
                        self.kauth_namespace
                    ));
                }
                Some(d)
            }
            Err(e) => {
                notes
                    .problems
                    .push(format!("{origin}: Secret {}/{USERS_SECRET}: {e}", self.kauth_namespace));
                None
            }
        }
    }

    /// The upstream providers of the `kauth-connectors` ConfigMap in kauth's namespace, their
    /// secrets from Secret manifests there.
    fn connectors(&self, manifests: &Manifests, notes: &mut PassNotes) -> Option<Connectors> {
        let ns = &self.kauth_namespace;
        let (origin, data) = manifests
            .config_maps
            .get(&(ns.clone(), CONNECTORS_CONFIG_MAP.to_string()))?;
        let Some(text) = data.get(CONNECTORS_KEY) else {
            notes.problems.push(format!(
                "{origin}: ConfigMap {ns}/{CONNECTORS_CONFIG_MAP}: no key {CONNECTORS_KEY}"
            ));
            return None;
        };
        let secret = |name: &str, key: &str| {
            let (_, data) = manifests.secrets.get(&(ns.clone(), name.to_string()))?;
            data.get(key).cloned()
        };
        match Connectors::parse(text, secret) {
            Ok(c) => Some(c),
            Err(e) => {
                notes
                    .problems
                    .push(format!("{origin}: ConfigMap {ns}/{CONNECTORS_CONFIG_MAP}: {e}"));
                None
            }
        }
    }

    /// A cheap fingerprint of the manifest folder: a change triggers a new pass. Each file's
    /// and each skipped entry's size, modification and change time: a file or folder made
    /// readable again (`chmod`, `chown` change only the change time) is read again too.
    fn fingerprint(&self) -> Vec<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let ManifestSource::Dir(dir) = &self.manifests else {
            return Vec::new();
        };
        let (files, skipped) = crate::manifests::manifest_files(dir).unwrap_or_default();
        files
            .into_iter()
            .chain(skipped.into_iter().map(|e| e.origin.file))
            .map(|p| {
                // The file read (a link's target) and, for a link, the link itself.
                let (link, target) = (fs::symlink_metadata(&p).ok(), fs::metadata(&p).ok());
                let read = target.as_ref().or(link.as_ref());
                let changed = [&link, &target]
                    .into_iter()
                    .flatten()
                    .map(|m| (m.ctime(), m.ctime_nsec()))
                    .max()
                    .unwrap_or_default();
                (
                    p,
                    read.map_or(0, |m| m.len()),
                    read.and_then(|m| m.modified().ok()),
                    changed,
                )
            })
            .collect()
    }
}

/// A manifest file (or skipped entry) as the fingerprint sees it: path, size, modification
/// time, and change time (seconds, nanoseconds).
type FileStamp = (PathBuf, u64, Option<SystemTime>, (i64, i64));

#[derive(Default)]
struct PassNotes {
    problems: Vec<String>,
    warnings: Vec<String>,
    notices: Vec<String>,
    changes: Vec<String>,
    next_step: Option<Timestamp>,
}

/// The problems of Scopes the catalog did not accept, each with the file it came from.
fn scope_problems(manifests: &Manifests, catalog: &Catalog, notes: &mut PassNotes) {
    let name_of = |m: &kube::core::ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let scope_keys: Vec<_> = manifests.scopes.iter().map(|(_, s)| name_of(&s.metadata)).collect();

    let origin_of_scope: HashMap<_, _> = manifests
        .scopes
        .iter()
        .zip(&scope_keys)
        .map(|((o, _), k)| (k.clone(), o))
        .collect();
    for (key, verdict) in &catalog.scopes {
        let origin = origin_of_scope[&(key.namespace.clone(), key.name.clone())];
        match verdict {
            ScopeVerdict::Accepted => {}
            ScopeVerdict::Invalid(errors) => notes
                .problems
                .push(format!("{origin}: Scope {key}: {}", describe(errors))),
            ScopeVerdict::Conflict { .. } => notes.problems.push(format!(
                "{origin}: Scope {key}: {}",
                verdict.conflict_message().unwrap_or_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_examples_are_the_examples_folder() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
        let mut on_disk: Vec<String> = fs::read_dir(folder)
            .unwrap()
            .map(|e| format!("examples/{}", e.unwrap().file_name().to_string_lossy()))
            // The manifests; beside them are the runnable examples (`cargo run --example`).
            .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = EMBEDDED_EXAMPLES.iter().map(|(f, _)| f.to_string()).collect();
        built_in.sort();
        assert_eq!(built_in, on_disk);
    }

    /// A file made readable again (`chmod`, `chown`: only its change time moves) is read again.
    #[test]
    fn a_change_of_mode_alone_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        fs::write(&file, "{}").unwrap();
        let cfg = StandaloneConfig {
            manifests: ManifestSource::Dir(dir.path().to_path_buf()),
            state_dir: dir.path().join("state"),
            issuer: Issuer::parse("http://127.0.0.1").unwrap(),
            kauth_namespace: "kauth".into(),
            claims: Default::default(),
            first_party_namespaces: Vec::new(),
            strict: false,
        };
        let before = cfg.fingerprint();
        std::thread::sleep(Duration::from_millis(20));
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(cfg.fingerprint(), before);
    }
}
