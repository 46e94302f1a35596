//! What every handler shares: the registry's snapshot, the grant store, the throttles and
//! budgets, people and connectors, the audit trail, and the housekeeping that keeps them. Kept
//! apart from the router (`mod.rs`): handlers take the state, and only the router knows them.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::password_checks::PasswordChecks;
use super::{flood, throttle, upstream};
use crate::connectors::Connectors;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::people::{Directory, Standing};
use crate::registry::Registry;
use crate::revocation::RevocationList;
use crate::store::{GrantStore, StoreError};
use crate::tokens::VerifiedTokens;
use crate::workload_identity::ServiceAccountTokens;

/// A word a refusal may quote in the audit trail: a registered client or Scope value, an
/// audience someone owns, a grant type, an identity scope, or a parameter name of OAuth.
fn known_word(snapshot: &crate::registry::Snapshot, word: &str) -> bool {
    const PARAMETERS: &[&str] = &[
        "grant_type",
        "client_id",
        "client_secret",
        "scope",
        "resource",
        "audience",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "device_code",
        "client_assertion",
        "client_assertion_type",
        "subject_token",
        "subject_token_type",
        "requested_token_type",
        "token",
        "token_type_hint",
    ];
    snapshot.clients.contains_key(word)
        || snapshot.scopes.contains_key(word)
        || snapshot.audience_owners.contains_key(&crate::claims::claim_key(word))
        || crate::crd::GrantType::parse(word).is_some()
        || crate::published::IDENTITY_SCOPES.iter().any(|(s, _)| *s == word)
        || PARAMETERS.contains(&word)
}

/// The current time in Unix seconds.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Everything the handlers share, in one allocation: every request (and every middleware)
/// takes its own copy, which is one reference count, not one per field (cloning and dropping
/// the fields' thirty-odd counts was 6% of a client_credentials request, contended across
/// cores). Changing it (the `with_*` settings, before serving) copies on write, so a copy
/// behaves as the value it always was.
#[derive(Clone)]
pub struct ProviderState(Arc<SharedState>);

impl std::ops::Deref for ProviderState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl std::ops::DerefMut for ProviderState {
    fn deref_mut(&mut self) -> &mut SharedState {
        Arc::make_mut(&mut self.0)
    }
}

/// The fields of [`ProviderState`].
#[derive(Clone)]
pub struct SharedState {
    /// The current snapshot of clients, scopes and keys.
    pub registry: Registry,
    /// Issuer and endpoint URLs.
    pub issuer: Arc<Issuer>,
    /// Codes, refresh tokens, sessions, consents and revocations.
    pub store: GrantStore,
    /// Revoked token ids (an in-memory mirror of the store's).
    pub revocations: RevocationList,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tokens whose signatures already verified.
    pub verified: VerifiedTokens,
    /// Verifies ServiceAccount tokens (None: secretless clients are not accepted).
    pub service_accounts: Option<Arc<ServiceAccountTokens>>,
    /// Local people who may sign in (replaced whole when their file changes).
    pub people: Arc<ArcSwap<Directory>>,
    /// Failed sign-in attempts.
    pub throttle: Arc<throttle::Throttle>,
    /// Device authorizations started, per address and in all.
    pub device_requests: Arc<flood::RowBudget>,
    /// Sign-ins parked while a person signs in, per address and in all.
    pub parked_requests: Arc<flood::RowBudget>,
    /// Password checks running at once (bounded: each holds ~19 MiB).
    pub password_checks: PasswordChecks,
    /// Upstream OpenID providers people may sign in with.
    pub connectors: Arc<ArcSwap<Connectors>>,
    /// Namespaces the platform declared first-party: their clients identify people without
    /// asking (set by kauth's own flags, never by an app team's object).
    pub first_party_namespaces: Arc<HashSet<String>>,
    /// Whether the registry's sources are in step (None: nothing to watch, as in standalone).
    pub freshness: Option<Arc<dyn crate::registry::Freshness>>,
    /// Whether the grant store answered its last check (every second): `/readyz/store`.
    pub store_up: Arc<std::sync::atomic::AtomicBool>,
    /// The audit trail (off unless configured).
    pub audit: Arc<crate::audit::Audit>,
    /// Which client secrets were used lately, reported to the store.
    pub secret_uses: Arc<crate::secret_usage::SecretUses>,
    /// How often `housekeeping` reports them.
    pub secret_use_report_interval: std::time::Duration,
    /// Their discovery documents.
    pub(super) upstream: Arc<upstream::UpstreamMetadata>,
    /// Every authorization request must be pushed first (RFC 9126), whatever the client says.
    pub par_required: bool,
    /// Keys fetched from clients' `jwksUri`s.
    pub(super) client_keys: Arc<super::client_key_cache::ClientKeyCache>,
    /// A client assertion's `aud` must be the issuer itself, not an endpoint's URL.
    pub strict_assertion_audience: bool,
    /// Logout tokens on their way to clients.
    pub(super) backchannel: Arc<super::logout_delivery::Deliveries>,
    /// DPoP server nonces, when proofs must carry one (`--dpop-nonce`).
    pub dpop_nonces: Option<Arc<super::dpop_nonce::DpopNonces>>,
    /// The key second-factor secrets are sealed with; without it none can be enrolled or used.
    pub second_factor_key: Option<Arc<crate::second_factors::SealingKey>>,
    /// Who proves a second factor at every sign-in (`--require-second-factor`, and
    /// `--require-second-factor-for-group`).
    pub second_factor_policy: Arc<crate::second_factors::Policy>,
    /// Passkeys, when second factors are set up and the issuer's host is a domain name.
    pub passkeys: Option<Arc<super::passkeys::Passkeys>>,
}

impl ProviderState {
    /// State for a provider serving `registry` as `issuer`, keeping grants in `store`.
    pub async fn new(
        registry: Registry,
        issuer: Issuer,
        store: GrantStore,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let revocations = RevocationList::load(store.clone(), now()).await?;
        // A client's jwksUri is a team's choice: public addresses only, unless the platform
        // allows networks (`with_outbound_allowed`).
        let client_keys = Arc::new(super::client_key_cache::ClientKeyCache::new(tenant_outbound(
            Vec::new(),
            &metrics,
        )));
        let backchannel = Arc::new(super::logout_delivery::Deliveries::new(tenant_outbound(
            Vec::new(),
            &metrics,
        )));
        // Upstream issuers are the platform's own configuration: they may be in-cluster.
        let upstream = Arc::new(upstream::UpstreamMetadata::new(Outbound::for_platform(
            metrics.outbound.clone(),
        )));
        // Every replica counts failed attempts against one limit, in the store.
        let throttle = Arc::new(super::throttle::Throttle::shared(store.clone()));
        Ok(Self(Arc::new(SharedState {
            registry,
            issuer: Arc::new(issuer),
            store,
            revocations,
            metrics,
            verified: VerifiedTokens::default(),
            service_accounts: None,
            people: Arc::default(),
            throttle,
            device_requests: Arc::new(flood::device_requests()),
            parked_requests: Arc::new(flood::parked_requests()),
            password_checks: PasswordChecks::default(),
            connectors: Arc::default(),
            first_party_namespaces: Arc::default(),
            store_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            freshness: None,
            audit: Arc::default(),
            secret_uses: Arc::default(),
            secret_use_report_interval: crate::secret_usage::REPORT_EVERY,
            upstream,
            par_required: false,
            client_keys,
            strict_assertion_audience: false,
            backchannel,
            dpop_nonces: None,
            second_factor_key: None,
            second_factor_policy: Arc::default(),
            passkeys: None,
        })))
    }

    /// The standing of a person (see [`crate::people::standing`]) by the people and
    /// connectors in force now.
    pub fn standing(&self, subject: &str, credential: Option<&str>) -> Standing {
        crate::people::standing(&self.people.load(), &self.connectors.load(), subject, credential)
    }

    /// Whether the platform requires a second factor of the local person `subject` (every
    /// person, or one of the listed groups, by the directory in force now).
    pub fn second_factor_required(&self, subject: &str) -> bool {
        let people = self.people.load();
        let groups = people.user(subject).map(|u| u.groups.as_slice()).unwrap_or_default();
        self.second_factor_policy.requires(groups)
    }

    /// Runs at most `permits` password checks at once (None: sized from the memory limit).
    pub fn with_password_checks(mut self, permits: Option<usize>) -> Self {
        if let Some(n) = permits {
            self.password_checks = PasswordChecks::new(n);
        }
        self
    }

    /// Lets calls to team-written addresses (a client's `jwksUri`) reach `allowed` networks
    /// besides public addresses.
    pub fn with_outbound_allowed(mut self, allowed: Vec<ipnet::IpNet>) -> Self {
        self.client_keys = Arc::new(super::client_key_cache::ClientKeyCache::new(tenant_outbound(
            allowed.clone(),
            &self.metrics,
        )));
        self.backchannel = Arc::new(super::logout_delivery::Deliveries::new(tenant_outbound(
            allowed,
            &self.metrics,
        )));
        self
    }

    /// Requires a client assertion's `aud` to be the issuer itself (RFC 7523bis) when `strict`.
    pub fn with_strict_assertion_audience(mut self, strict: bool) -> Self {
        self.strict_assertion_audience = strict;
        self
    }

    /// Requires DPoP proofs to carry a server nonce made under `secret` (shared by every
    /// replica), when given.
    pub fn with_dpop_nonces(mut self, secret: Option<&[u8]>) -> Self {
        self.dpop_nonces = secret.map(|s| Arc::new(super::dpop_nonce::DpopNonces::new(s)));
        self
    }

    /// Seals second factors with `key` (none: they are unavailable); `policy` says whom the
    /// platform asks for one at every sign-in.
    pub fn with_second_factors(
        mut self,
        key: Option<crate::second_factors::SealingKey>,
        policy: crate::second_factors::Policy,
    ) -> Self {
        self.passkeys = key
            .as_ref()
            .and_then(|_| super::passkeys::Passkeys::for_issuer(&self.issuer))
            .map(Arc::new);
        self.second_factor_key = key.map(Arc::new);
        self.second_factor_policy = Arc::new(policy);
        self
    }

    /// Requires every client to push its authorization requests (RFC 9126) when `required`.
    pub fn with_par_required(mut self, required: bool) -> Self {
        self.par_required = required;
        self
    }

    /// Writes the audit trail to `audit`.
    pub fn with_audit(mut self, audit: Arc<crate::audit::Audit>) -> Self {
        self.audit = audit;
        self
    }

    /// Reports secret use to the store this often.
    pub fn with_secret_use_report_interval(mut self, every: std::time::Duration) -> Self {
        self.secret_use_report_interval = every;
        self
    }

    /// Writes one audit record, with the namespace of its client (when one is served). A
    /// caller can type anything where a client id, a username or a grant type goes (a secret,
    /// a password): the trail names only registered clients, known people and grant types
    /// kauth has, and `unknown` for anything else (T12).
    pub fn audit_event(&self, event: crate::audit::Event, record: &crate::audit::Record<'_>) {
        const UNKNOWN: &str = "unknown";
        let snapshot = self.registry.load();
        let served = record.client_id.and_then(|id| snapshot.clients.get(id));
        // A refusal's description quotes what was asked for ('scope', 'grant type', a
        // parameter's name): only names kauth knows are kept.
        let reason = record
            .reason
            .map(|r| crate::audit::redact_quoted(r, |word| known_word(&snapshot, word)));
        let record = crate::audit::Record {
            client_id: record.client_id.map(|id| if served.is_some() { id } else { UNKNOWN }),
            subject: record.subject.map(|s| if self.knows(s) { s } else { UNKNOWN }),
            grant_type: record.grant_type.map(|g| {
                if crate::crd::GrantType::parse(g).is_some() {
                    g
                } else {
                    UNKNOWN
                }
            }),
            reason: reason.as_deref(),
            ..*record
        };
        self.audit.record(event, &record, served.map(|c| c.namespace.as_str()));
    }

    /// True when `subject` names a person kauth knows: a local account, or someone of a
    /// connector that is configured.
    fn knows(&self, subject: &str) -> bool {
        match subject.split_once(':') {
            Some((connector, _)) => self.connectors.load().get(connector).is_some(),
            None => self.people.load().user(subject).is_some(),
        }
    }

    /// Treats the clients of these namespaces as first-party (no consent to identify people).
    pub fn with_first_party_namespaces(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.first_party_namespaces = Arc::new(namespaces.into_iter().collect());
        self
    }

    /// Reports not ready while `freshness` says the snapshot may be stale.
    pub fn with_freshness(mut self, freshness: Arc<dyn crate::registry::Freshness>) -> Self {
        self.freshness = Some(freshness);
        self
    }

    /// Accepts ServiceAccount tokens verified by `tokens`.
    pub fn with_service_accounts(mut self, tokens: Arc<ServiceAccountTokens>) -> Self {
        self.service_accounts = Some(tokens);
        self
    }
}

/// The client for addresses teams write: public targets, and the platform's `allowed` networks.
fn tenant_outbound(allowed: Vec<ipnet::IpNet>, metrics: &Metrics) -> Outbound {
    Outbound::new(
        None,
        crate::outbound::Reach::Public { allowed },
        metrics.outbound.clone(),
    )
    .unwrap_or_else(|_| Outbound::for_platform(metrics.outbound.clone()))
}
