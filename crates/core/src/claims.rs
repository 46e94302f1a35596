//! Sticky claims: which namespace owns a Scope value, an API audience or an explicit client
//! id. The first namespace to claim a name keeps it while its object is invalid, and for a
//! grace period after the object is deleted, so no other tenant can take a name over by
//! waiting for a typo or a GitOps delete-and-recreate. The ledger is pure data: the catalog
//! settles it on every evaluation, and the controller (a ConfigMap) or standalone (a file in
//! the state folder) keeps it across restarts and leader changes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fields::MAX_TOKEN_LIFETIME;

/// Default (and shortest) time a claim outlives the last object that made it: the longest
/// access token kauth issues, so every token issued under the claim has expired before
/// another namespace may take the name.
pub const DEFAULT_CLAIM_GRACE: Duration = MAX_TOKEN_LIFETIME;

/// Annotation by which the owning namespace gives a claim up at once: an object carrying
/// `kauth.dev/release-claims: "true"` claims nothing, and once no other object of its
/// namespace claims the same name, the name is free.
pub const RELEASE_ANNOTATION: &str = "kauth.dev/release-claims";

/// Parses `--claim-grace`: a duration no shorter than [`DEFAULT_CLAIM_GRACE`].
pub fn parse_grace(value: &str) -> Result<Duration, String> {
    let grace = crate::fields::parse_duration(value)?;
    if grace < DEFAULT_CLAIM_GRACE {
        return Err(format!(
            "'{value}' is shorter than 24h: a claim must outlive every token issued under it"
        ));
    }
    Ok(grace)
}

/// A claimed name as kauth records it: the base64url SHA-256 of the name. Every claim takes
/// the same room in the record however long its name (a Scope audience may be 2,048
/// characters), so the record's size depends only on how many claims there are (T10).
pub type ClaimKey = String;

/// The record key of `name`.
pub fn claim_key(name: &str) -> ClaimKey {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Default number of claims (Scope values, audiences and explicit client ids, held or vacant)
/// one namespace may hold: a namespace's share of the record other teams' claims live in.
pub const DEFAULT_QUOTA: usize = 500;

/// The format of the stored ledger: 2 keys claims by [`claim_key`]; 0 (absent) by name, as
/// kauth kept it before, converted when read.
const FORMAT: u32 = 2;

/// The namespace that holds one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// The owning namespace.
    pub namespace: String,
    /// When the claim was first recorded (Unix seconds).
    pub since: i64,
    /// Since when no object of the owning namespace claims the name (Unix seconds); the claim
    /// lapses a grace period later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacant_since: Option<i64>,
}

/// Claims of one kind, by [`ClaimKey`].
pub type Claims = BTreeMap<ClaimKey, Claim>;

/// Every claim, by kind and key. Serialised as kauth keeps it (`claims.json`, or the shards of
/// the claims record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// The key format (see [`FORMAT`]).
    #[serde(default)]
    pub format: u32,
    /// Scope values (`spec.value`).
    #[serde(default)]
    pub scope_values: Claims,
    /// API audiences (`Scope.spec.audience`).
    #[serde(default)]
    pub audiences: Claims,
    /// Explicit client ids (`OAuthClient.spec.clientId`).
    #[serde(default)]
    pub client_ids: Claims,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            format: FORMAT,
            scope_values: Claims::new(),
            audiences: Claims::new(),
            client_ids: Claims::new(),
        }
    }
}

/// Number of shards of the claims record: a ConfigMap holds 1 MiB, a claim at most about 170
/// bytes, so 64 shards hold some 390,000 claims.
pub const SHARDS: usize = 64;

/// The shard a key belongs to: its first character (base64url has 64).
pub fn shard_of(key: &str) -> usize {
    let first = key.as_bytes().first().copied().unwrap_or(b'A');
    match first {
        b'A'..=b'Z' => (first - b'A') as usize,
        b'a'..=b'z' => (first - b'a') as usize + 26,
        b'0'..=b'9' => (first - b'0') as usize + 52,
        b'-' => 62,
        _ => 63,
    }
}

impl Ledger {
    /// Parses a stored ledger (either format); an unreadable one is reported and treated as
    /// empty (the claims are then settled again from the objects' ages).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ledger: Self =
            serde_json::from_str(text).map_err(|e| format!("the claims record is unreadable ({e})"))?;
        if ledger.format < FORMAT {
            let by_key = |claims: Claims| claims.into_iter().map(|(name, c)| (claim_key(&name), c)).collect();
            ledger = Self {
                format: FORMAT,
                scope_values: by_key(ledger.scope_values),
                audiences: by_key(ledger.audiences),
                client_ids: by_key(ledger.client_ids),
            };
        }
        Ok(ledger)
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ledger serialises")
    }

    fn kinds(&self) -> [&Claims; 3] {
        [&self.scope_values, &self.audiences, &self.client_ids]
    }

    /// How many claims there are.
    pub fn len(&self) -> usize {
        self.kinds().iter().map(|c| c.len()).sum()
    }

    /// True when there are no claims.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ledger split into its [`SHARDS`] shards (by [`shard_of`]), in one pass.
    pub fn split(&self) -> Vec<Self> {
        let mut shards = vec![Self::default(); SHARDS];
        let parts = |shards: &mut Vec<Self>, claims: &Claims, pick: fn(&mut Self) -> &mut Claims| {
            for (k, c) in claims {
                pick(&mut shards[shard_of(k)]).insert(k.clone(), c.clone());
            }
        };
        parts(&mut shards, &self.scope_values, |l| &mut l.scope_values);
        parts(&mut shards, &self.audiences, |l| &mut l.audiences);
        parts(&mut shards, &self.client_ids, |l| &mut l.client_ids);
        shards
    }

    /// Adds `other`'s claims; where both have a key, this ledger's claim stays.
    pub fn merge(&mut self, other: Self) {
        let add = |into: &mut Claims, from: Claims| {
            for (k, c) in from {
                into.entry(k).or_insert(c);
            }
        };
        add(&mut self.scope_values, other.scope_values);
        add(&mut self.audiences, other.audiences);
        add(&mut self.client_ids, other.client_ids);
    }

    /// How many claims each namespace holds (held or vacant), across kinds.
    pub fn held_by_namespace(&self) -> HashMap<&str, usize> {
        let mut held: HashMap<&str, usize> = HashMap::new();
        for claim in self.kinds().into_iter().flat_map(|c| c.values()) {
            *held.entry(claim.namespace.as_str()).or_default() += 1;
        }
        held
    }

    /// When the first vacant claim lapses (Unix seconds), if any is vacant.
    pub fn next_lapse(&self, grace: Duration) -> Option<i64> {
        self.kinds()
            .into_iter()
            .flat_map(|claims| claims.values())
            .filter_map(|c| c.vacant_since)
            .min()
            .map(|v| v + grace.as_secs() as i64)
    }
}

/// Names the platform keeps for a namespace, or for nobody, before any team claims them
/// (`--reserve`, chart `tenancy.reserved`): `payments.*` for `payments` keeps every Scope
/// value, audience and client id starting with `payments.` for that namespace alone. kauth's
/// own URLs (its issuer, and every URL under it) are reserved as audiences for nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// The platform's list.
    pub names: Vec<Reservation>,
    /// The issuer URL: no audience may be it or lie under it.
    pub issuer: Option<String>,
}

/// One reserved name or prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The name, or a prefix when it ends with `*`.
    pub pattern: String,
    /// The namespace it is kept for; None: nobody may claim it.
    pub namespace: Option<String>,
}

impl Reservation {
    /// Parses `PATTERN=NAMESPACE` (or `PATTERN` alone: reserved for nobody).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (pattern, namespace) = match text.rsplit_once('=') {
            Some((p, ns)) => (p, Some(ns)),
            None => (text, None),
        };
        if pattern.is_empty() || pattern == "*" {
            return Err(format!(
                "'{text}': a reservation needs a name or a prefix such as payments.*"
            ));
        }
        if let Some(ns) = namespace
            && !crate::fields::is_dns_label(ns)
        {
            return Err(format!("'{text}': '{ns}' is not a namespace name"));
        }
        Ok(Self {
            pattern: pattern.to_string(),
            namespace: namespace.map(str::to_string),
        })
    }

    fn covers(&self, name: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.pattern,
        }
    }
}

/// Why a namespace may not claim a reserved name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservedFor {
    /// Kept by the platform for this namespace.
    Namespace(String),
    /// Kept by the platform for nobody.
    Nobody,
    /// kauth's own URL (its issuer or under it).
    Kauth,
}

impl Reserved {
    /// Who may claim `name` of `kind` instead of `namespace`, when `namespace` may not.
    pub fn refuses(&self, kind: ClaimKind, name: &str, namespace: &str) -> Option<ReservedFor> {
        if kind == ClaimKind::Audience
            && let Some(issuer) = &self.issuer
            && is_under(name, issuer)
        {
            return Some(ReservedFor::Kauth);
        }
        let reservation = self.names.iter().find(|r| r.covers(name))?;
        match &reservation.namespace {
            Some(ns) if ns == namespace => None,
            Some(ns) => Some(ReservedFor::Namespace(ns.clone())),
            None => Some(ReservedFor::Nobody),
        }
    }
}

/// True when `uri` is `issuer` or lies under it, however either is spelled (case of scheme
/// and host, a host's trailing dot, a default port, a trailing slash, dot segments,
/// percent-encoded characters in the path).
fn is_under(uri: &str, issuer: &str) -> bool {
    let (Ok(uri), Ok(issuer)) = (url::Url::parse(uri), url::Url::parse(issuer)) else {
        return false;
    };
    let host = |u: &url::Url| u.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    let same_origin = uri.scheme() == issuer.scheme()
        && host(&uri) == host(&issuer)
        && uri.port_or_known_default() == issuer.port_or_known_default();
    let base = percent_decoded(issuer.path());
    let base = base.trim_end_matches('/');
    let path = percent_decoded(uri.path());
    same_origin && (path.trim_end_matches('/') == base || path.starts_with(&format!("{base}/")))
}

/// A URL path with its `%XX` escapes decoded (what a server routing it would see).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The three kinds of names that are claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// A Scope's `spec.value`.
    ScopeValue,
    /// A Scope's `spec.audience`.
    Audience,
    /// An OAuthClient's `spec.clientId`.
    ClientId,
}

/// The platform's claim settings, the same in both modes: grace, quota and reservations.
#[derive(Clone, Debug)]
pub struct ClaimPolicy {
    /// How long a vacant claim is kept.
    pub grace: Duration,
    /// Most claims one namespace may hold.
    pub quota: usize,
    /// Names the platform keeps (and kauth's own URLs).
    pub reserved: std::sync::Arc<Reserved>,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        Self {
            grace: DEFAULT_CLAIM_GRACE,
            quota: DEFAULT_QUOTA,
            reserved: Default::default(),
        }
    }
}

impl ClaimPolicy {
    /// The policy with kauth's own URLs (`issuer` and everything under it) reserved as
    /// audiences.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        let mut reserved = (*self.reserved).clone();
        reserved.issuer = Some(issuer.to_string());
        self.reserved = std::sync::Arc::new(reserved);
        self
    }

    /// The rules of an evaluation at `now` (Unix seconds).
    pub fn rules(&self, now: i64, pending_until_recorded: bool) -> ClaimRules {
        ClaimRules {
            now,
            grace: self.grace,
            quota: self.quota,
            reserved: self.reserved.clone(),
            pending_until_recorded,
        }
    }
}

/// The clock and policy a settlement runs under.
#[derive(Clone, Debug)]
pub struct ClaimRules {
    /// Now (Unix seconds).
    pub now: i64,
    /// How long a vacant claim is kept.
    pub grace: Duration,
    /// Most claims one namespace may hold.
    pub quota: usize,
    /// Names the platform keeps.
    pub reserved: std::sync::Arc<Reserved>,
    /// A new claim is served only once the record holds it (a cluster, where the leader
    /// records it after this evaluation); false where the evaluation's own ledger is recorded
    /// before anything of it is served (standalone writes it in the same pass).
    pub pending_until_recorded: bool,
}

impl Default for ClaimRules {
    fn default() -> Self {
        Self {
            now: 0,
            grace: DEFAULT_CLAIM_GRACE,
            quota: DEFAULT_QUOTA,
            reserved: Default::default(),
            pending_until_recorded: false,
        }
    }
}

/// One object asking for a name, in precedence order (oldest first).
#[derive(Clone, Debug)]
pub struct Claimant<'a> {
    /// The record key of the name asked for.
    pub key: ClaimKey,
    /// The asking object's namespace.
    pub namespace: &'a str,
    /// The object gives its claim up (see [`RELEASE_ANNOTATION`]).
    pub releasing: bool,
}

/// Settles the claims of one kind: `previous` is the stored ledger, `claimants` every object
/// asking for a name (valid or not, oldest first), `evicted` recorded claims the platform's
/// reservations take back. Returns the owner of every claimed key (whether or not an object
/// of the owner serves it) and the new ledger.
///
/// - A recorded claim stays with its namespace while any object there claims the name.
/// - With no such object it becomes vacant, and lapses `rules.grace` after that.
/// - A claim whose namespace only has releasing objects lapses at once.
/// - An unclaimed (or lapsed) name goes to its oldest claimant that is not releasing.
pub fn settle(
    previous: &Claims,
    claimants: &[Claimant<'_>],
    evicted: &std::collections::HashSet<ClaimKey>,
    rules: &ClaimRules,
) -> (HashMap<ClaimKey, String>, Claims) {
    // Per key: whether each namespace holds a live claimant, or only releasing ones.
    #[derive(Default)]
    struct Asked<'a> {
        live: Vec<&'a str>,
        releasing: Vec<&'a str>,
    }
    let mut asked: HashMap<&str, Asked<'_>> = HashMap::new();
    for c in claimants {
        let entry = asked.entry(c.key.as_str()).or_default();
        let list = if c.releasing {
            &mut entry.releasing
        } else {
            &mut entry.live
        };
        if !list.contains(&c.namespace) {
            list.push(c.namespace);
        }
    }
    let mut owners = HashMap::new();
    let mut next = Claims::new();
    for (key, claim) in previous {
        if evicted.contains(key) {
            continue;
        }
        let a = asked.get(key.as_str());
        let live = a.is_some_and(|a| a.live.contains(&claim.namespace.as_str()));
        let released = !live && a.is_some_and(|a| a.releasing.contains(&claim.namespace.as_str()));
        if released {
            continue;
        }
        let vacant_since = if live {
            None
        } else {
            Some(claim.vacant_since.unwrap_or(rules.now))
        };
        let lapsed = vacant_since.is_some_and(|v| rules.now.saturating_sub(v) >= rules.grace.as_secs() as i64);
        if lapsed {
            continue;
        }
        owners.insert(key.clone(), claim.namespace.clone());
        next.insert(
            key.clone(),
            Claim {
                namespace: claim.namespace.clone(),
                since: claim.since,
                vacant_since,
            },
        );
    }
    for c in claimants.iter().filter(|c| !c.releasing) {
        if !owners.contains_key(&c.key) {
            owners.insert(c.key.clone(), c.namespace.to_string());
            next.insert(
                c.key.clone(),
                Claim {
                    namespace: c.namespace.to_string(),
                    since: rules.now,
                    vacant_since: None,
                },
            );
        }
    }
    (owners, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(now: i64) -> ClaimRules {
        ClaimRules {
            now,
            grace: Duration::from_secs(100),
            ..ClaimRules::default()
        }
    }

    fn ask<'a>(name: &str, namespace: &'a str) -> Claimant<'a> {
        Claimant {
            key: claim_key(name),
            namespace,
            releasing: false,
        }
    }

    fn settle(previous: &Claims, claimants: &[Claimant<'_>], rules: ClaimRules) -> (HashMap<String, String>, Claims) {
        super::settle(previous, claimants, &Default::default(), &rules)
    }

    /// The claim on `name` in `claims`.
    fn on<'c>(claims: &'c Claims, name: &str) -> &'c Claim {
        &claims[&claim_key(name)]
    }

    #[test]
    fn the_oldest_claimant_wins_and_keeps_the_name() {
        let (owners, ledger) = settle(&Claims::new(), &[ask("x", "orders"), ask("x", "evil")], rules(10));
        assert_eq!(owners[&claim_key("x")], "orders");
        assert_eq!(on(&ledger, "x").since, 10);
        // Later the squatter is older than a re-created owner: the record still decides.
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil"), ask("x", "orders")], rules(20));
        assert_eq!(owners[&claim_key("x")], "orders");
        assert_eq!(on(&ledger, "x").since, 10, "the claim keeps its age");
    }

    #[test]
    fn a_vacant_claim_holds_for_the_grace_period_then_lapses() {
        let (_, ledger) = settle(&Claims::new(), &[ask("x", "orders")], rules(0));
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil")], rules(50));
        assert_eq!(owners[&claim_key("x")], "orders", "deleted owner keeps the name");
        assert_eq!(on(&ledger, "x").vacant_since, Some(50));
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil")], rules(149));
        assert_eq!(owners[&claim_key("x")], "orders", "still inside the grace period");
        assert_eq!(on(&ledger, "x").vacant_since, Some(50), "vacancy is not restarted");
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil")], rules(150));
        assert_eq!(owners[&claim_key("x")], "evil", "lapsed: the next claimant takes it");
        assert_eq!(on(&ledger, "x").namespace, "evil");
    }

    #[test]
    fn the_owner_coming_back_ends_the_vacancy() {
        let (_, ledger) = settle(&Claims::new(), &[ask("x", "orders")], rules(0));
        let (_, ledger) = settle(&ledger, &[], rules(50));
        assert_eq!(on(&ledger, "x").vacant_since, Some(50));
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil"), ask("x", "orders")], rules(60));
        assert_eq!(owners[&claim_key("x")], "orders");
        assert_eq!(on(&ledger, "x").vacant_since, None);
    }

    #[test]
    fn only_the_owner_can_release_at_once() {
        let (_, ledger) = settle(&Claims::new(), &[ask("x", "orders")], rules(0));
        let evil_releasing = Claimant {
            releasing: true,
            ..ask("x", "evil")
        };
        let (owners, _) = settle(&ledger, &[evil_releasing], rules(1));
        assert_eq!(
            owners[&claim_key("x")],
            "orders",
            "another namespace's annotation means nothing"
        );
        let releasing = Claimant {
            releasing: true,
            ..ask("x", "orders")
        };
        let (owners, ledger) = settle(&ledger, &[releasing.clone(), ask("x", "evil")], rules(2));
        assert_eq!(
            owners[&claim_key("x")],
            "evil",
            "released by its owner, taken by the next"
        );
        assert_eq!(on(&ledger, "x").namespace, "evil");
        let (owners, ledger) = settle(&ledger, &[releasing], rules(3));
        assert_eq!(owners[&claim_key("x")], "evil", "a releasing object claims nothing");
        assert_eq!(on(&ledger, "x").vacant_since, Some(3));
    }

    #[test]
    fn grace_is_never_shorter_than_a_token() {
        assert_eq!(parse_grace("48h").unwrap(), Duration::from_secs(48 * 3600));
        assert!(parse_grace("23h").unwrap_err().contains("shorter than 24h"));
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn ledger_round_trips() {
        let (_, scope_values) = settle(&Claims::new(), &[ask("orders.read", "orders")], rules(5));
        let ledger = Ledger {
            scope_values,
            ..Default::default()
        };
        assert_eq!(Ledger::parse(&ledger.to_json()).unwrap(), ledger);
        assert!(Ledger::parse("{").is_err());
        assert_eq!(Ledger::parse("{}").unwrap(), Ledger::default());
    }
}
