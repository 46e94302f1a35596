//! Sticky claims: which namespace owns a Scope value, an API audience or an explicit client
//! id. The first namespace to claim a name keeps it while its object is invalid, and for a
//! grace period after the object is deleted, so no other tenant can take a name over by
//! waiting for a typo or a GitOps delete-and-recreate. The ledger is pure data: the catalog
//! settles it on every evaluation, and the controller (a ConfigMap) or standalone (a file in
//! the state folder) keeps it across restarts and leader changes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validation::MAX_TOKEN_LIFETIME;

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
    let grace = crate::validation::parse_duration(value)?;
    if grace < DEFAULT_CLAIM_GRACE {
        return Err(format!(
            "'{value}' is shorter than 24h: a claim must outlive every token issued under it"
        ));
    }
    Ok(grace)
}

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

/// Every claim, by kind and name. Serialised as kauth keeps it (`claims.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Scope values (`spec.value`).
    #[serde(default)]
    pub scope_values: BTreeMap<String, Claim>,
    /// API audiences (`Scope.spec.audience`).
    #[serde(default)]
    pub audiences: BTreeMap<String, Claim>,
    /// Explicit client ids (`OAuthClient.spec.clientId`).
    #[serde(default)]
    pub client_ids: BTreeMap<String, Claim>,
}

impl Ledger {
    /// Parses a stored ledger; an unreadable one is reported and treated as empty (the claims
    /// are then settled again from the objects' ages).
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("the claims record is unreadable ({e})"))
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a ledger serialises")
    }

    /// When the first vacant claim lapses (Unix seconds), if any is vacant.
    pub fn next_lapse(&self, grace: Duration) -> Option<i64> {
        [&self.scope_values, &self.audiences, &self.client_ids]
            .into_iter()
            .flat_map(|claims| claims.values())
            .filter_map(|c| c.vacant_since)
            .min()
            .map(|v| v + grace.as_secs() as i64)
    }
}

/// The clock and policy a settlement runs under.
#[derive(Clone, Copy, Debug)]
pub struct ClaimRules {
    /// Now (Unix seconds).
    pub now: i64,
    /// How long a vacant claim is kept.
    pub grace: Duration,
}

impl Default for ClaimRules {
    fn default() -> Self {
        Self {
            now: 0,
            grace: DEFAULT_CLAIM_GRACE,
        }
    }
}

/// One object asking for a name, in precedence order (oldest first).
#[derive(Clone, Copy, Debug)]
pub struct Claimant<'a> {
    /// The name asked for.
    pub name: &'a str,
    /// The asking object's namespace.
    pub namespace: &'a str,
    /// The object gives its claim up (see [`RELEASE_ANNOTATION`]).
    pub releasing: bool,
}

/// Settles the claims of one kind: `previous` is the stored ledger, `claimants` every object
/// asking for a name (valid or not, oldest first). Returns the owner of every claimed name
/// (whether or not an object of the owner serves it) and the new ledger.
///
/// - A recorded claim stays with its namespace while any object there claims the name.
/// - With no such object it becomes vacant, and lapses `rules.grace` after that.
/// - A claim whose namespace only has releasing objects lapses at once.
/// - An unclaimed (or lapsed) name goes to its oldest claimant that is not releasing.
pub fn settle(
    previous: &BTreeMap<String, Claim>,
    claimants: &[Claimant<'_>],
    rules: ClaimRules,
) -> (HashMap<String, String>, BTreeMap<String, Claim>) {
    // Per name: whether each namespace holds a live claimant, or only releasing ones.
    #[derive(Default)]
    struct Asked<'a> {
        live: Vec<&'a str>,
        releasing: Vec<&'a str>,
    }
    let mut asked: HashMap<&str, Asked<'_>> = HashMap::new();
    for c in claimants {
        let entry = asked.entry(c.name).or_default();
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
    let mut next = BTreeMap::new();
    for (name, claim) in previous {
        let a = asked.get(name.as_str());
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
        owners.insert(name.clone(), claim.namespace.clone());
        next.insert(
            name.clone(),
            Claim {
                namespace: claim.namespace.clone(),
                since: claim.since,
                vacant_since,
            },
        );
    }
    for c in claimants.iter().filter(|c| !c.releasing) {
        if !owners.contains_key(c.name) {
            owners.insert(c.name.to_string(), c.namespace.to_string());
            next.insert(
                c.name.to_string(),
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
        }
    }

    fn ask<'a>(name: &'a str, namespace: &'a str) -> Claimant<'a> {
        Claimant {
            name,
            namespace,
            releasing: false,
        }
    }

    #[test]
    fn the_oldest_claimant_wins_and_keeps_the_name() {
        let (owners, ledger) = settle(&BTreeMap::new(), &[ask("x", "orders"), ask("x", "evil")], rules(10));
        assert_eq!(owners["x"], "orders");
        assert_eq!(ledger["x"].since, 10);
        // Later the squatter is older than a re-created owner: the record still decides.
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil"), ask("x", "orders")], rules(20));
        assert_eq!(owners["x"], "orders");
        assert_eq!(ledger["x"].since, 10, "the claim keeps its age");
    }

    #[test]
    fn a_vacant_claim_holds_for_the_grace_period_then_lapses() {
        let (_, ledger) = settle(&BTreeMap::new(), &[ask("x", "orders")], rules(0));
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil")], rules(50));
        assert_eq!(owners["x"], "orders", "deleted owner keeps the name");
        assert_eq!(ledger["x"].vacant_since, Some(50));
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil")], rules(149));
        assert_eq!(owners["x"], "orders", "still inside the grace period");
        assert_eq!(ledger["x"].vacant_since, Some(50), "vacancy is not restarted");
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil")], rules(150));
        assert_eq!(owners["x"], "evil", "lapsed: the next claimant takes it");
        assert_eq!(ledger["x"].namespace, "evil");
    }

    #[test]
    fn the_owner_coming_back_ends_the_vacancy() {
        let (_, ledger) = settle(&BTreeMap::new(), &[ask("x", "orders")], rules(0));
        let (_, ledger) = settle(&ledger, &[], rules(50));
        assert_eq!(ledger["x"].vacant_since, Some(50));
        let (owners, ledger) = settle(&ledger, &[ask("x", "evil"), ask("x", "orders")], rules(60));
        assert_eq!(owners["x"], "orders");
        assert_eq!(ledger["x"].vacant_since, None);
    }

    #[test]
    fn only_the_owner_can_release_at_once() {
        let (_, ledger) = settle(&BTreeMap::new(), &[ask("x", "orders")], rules(0));
        let evil_releasing = Claimant {
            releasing: true,
            ..ask("x", "evil")
        };
        let (owners, _) = settle(&ledger, &[evil_releasing], rules(1));
        assert_eq!(owners["x"], "orders", "another namespace's annotation means nothing");
        let releasing = Claimant {
            releasing: true,
            ..ask("x", "orders")
        };
        let (owners, ledger) = settle(&ledger, &[releasing, ask("x", "evil")], rules(2));
        assert_eq!(owners["x"], "evil", "released by its owner, taken by the next");
        assert_eq!(ledger["x"].namespace, "evil");
        let (owners, ledger) = settle(&ledger, &[releasing], rules(3));
        assert_eq!(owners["x"], "evil", "a releasing object claims nothing");
        assert_eq!(ledger["x"].vacant_since, Some(3));
    }

    #[test]
    fn grace_is_never_shorter_than_a_token() {
        assert_eq!(parse_grace("48h").unwrap(), Duration::from_secs(48 * 3600));
        assert!(parse_grace("23h").unwrap_err().contains("shorter than 24h"));
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn ledger_round_trips() {
        let (_, scope_values) = settle(&BTreeMap::new(), &[ask("orders.read", "orders")], rules(5));
        let ledger = Ledger {
            scope_values,
            ..Default::default()
        };
        assert_eq!(Ledger::parse(&ledger.to_json()).unwrap(), ledger);
        assert!(Ledger::parse("{").is_err());
        assert_eq!(Ledger::parse("{}").unwrap(), Ledger::default());
    }
}
