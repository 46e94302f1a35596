//! Generated client secrets: creation, digests, constant-time checks and the rotation plan.
//! The same plan drives the controller (state in Secret annotations) and standalone mode
//! (state in a file), so rotation behaves identically in both.

use std::time::Duration;

use aws_lc_rs::{constant_time, digest, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Parsed secret rotation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationPolicy {
    /// Manual trigger value; a change rotates once.
    pub trigger: Option<String>,
    /// Scheduled rotation period.
    pub every: Option<Duration>,
    /// How long the previous secret stays valid.
    pub overlap: Duration,
    /// What ends the previous secret.
    pub retire: RetirePrevious,
}

/// SHA-256 of a secret. Secrets are 256-bit random values, so a fast digest compared in
/// constant time is as strong as a password hash and a hundred times cheaper per request.
pub type SecretDigest = [u8; 32];

/// A fresh secret: 256 bits from the OS RNG, base64url without padding (43 characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).expect("the OS random number generator is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Digest of a secret as stored and compared.
pub fn digest_secret(secret: &str) -> SecretDigest {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Constant-time digest comparison.
pub fn digests_match(a: &SecretDigest, b: &SecretDigest) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// What the provider needs to check a presented secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVerifier {
    /// Digest of the current secret.
    pub current: SecretDigest,
    /// Digest of the rotated-out secret and the end of its overlap window.
    pub previous: Option<(SecretDigest, Timestamp)>,
}

impl SecretVerifier {
    /// A verifier for one secret with no previous one (user-managed secrets).
    pub fn for_secret(secret: &str) -> Self {
        Self {
            current: digest_secret(secret),
            previous: None,
        }
    }

    /// True when `presented` is the current secret, or the previous one inside its window.
    pub fn verify(&self, presented: &str, now: Timestamp) -> bool {
        self.matched(presented, now).is_some()
    }

    /// Which secret `presented` is: the current one, or the previous one inside its window.
    pub fn matched(&self, presented: &str, now: Timestamp) -> Option<MatchedSecret> {
        let d = digest_secret(presented);
        let current = digests_match(&d, &self.current);
        // Both comparisons always run so timing does not tell which one matched.
        let previous = self
            .previous
            .is_some_and(|(p, until)| digests_match(&d, &p) & (now < until));
        if current {
            Some(MatchedSecret::Current(d))
        } else if previous {
            Some(MatchedSecret::Previous(d))
        } else {
            None
        }
    }
}

/// A presented secret that matched, with its digest (which names it in the usage records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedSecret {
    /// The current secret.
    Current(SecretDigest),
    /// The rotated-out secret, inside its window.
    Previous(SecretDigest),
}

impl MatchedSecret {
    /// The digest of the secret that matched.
    pub fn digest(&self) -> &SecretDigest {
        match self {
            Self::Current(d) | Self::Previous(d) => d,
        }
    }
}

/// How usage records name a secret: base64url SHA-256, as `PreviousSecret::sha256`.
pub fn digest_name(digest: &SecretDigest) -> String {
    URL_SAFE_NO_PAD.encode(digest)
}

/// The state of a generated secret, kept beside it (Secret annotations, or a state file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialState {
    /// The current secret.
    pub secret: String,
    /// 1 for the first secret, +1 per rotation.
    pub version: i64,
    /// When the current secret was generated.
    pub rotated_at: Timestamp,
    /// The manual trigger value the current secret answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The rotated-out secret's digest (base64url) and the end of its overlap window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSecret>,
}

/// A rotated-out secret that still works until `valid_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousSecret {
    /// base64url SHA-256 of the old secret (never the secret itself).
    pub sha256: String,
    /// End of the overlap window.
    pub valid_until: Timestamp,
}

impl CredentialState {
    /// A first secret.
    pub fn first(trigger: Option<String>, now: Timestamp) -> Self {
        Self {
            secret: generate_secret(),
            version: 1,
            rotated_at: now,
            trigger,
            previous: None,
        }
    }

    /// The next secret; the current one stays valid for `overlap`.
    pub fn rotated(&self, trigger: Option<String>, overlap: Duration, now: Timestamp) -> Self {
        let until = now + SignedDuration::try_from(overlap).unwrap_or(SignedDuration::ZERO);
        Self {
            secret: generate_secret(),
            version: self.version + 1,
            rotated_at: now,
            trigger,
            previous: (overlap > Duration::ZERO).then(|| PreviousSecret {
                sha256: digest_name(&digest_secret(&self.secret)),
                valid_until: until,
            }),
        }
    }

    /// The verifier the provider uses.
    pub fn verifier(&self) -> SecretVerifier {
        SecretVerifier {
            current: digest_secret(&self.secret),
            previous: self.previous.as_ref().and_then(|p| {
                let bytes = URL_SAFE_NO_PAD.decode(&p.sha256).ok()?;
                Some((bytes.try_into().ok()?, p.valid_until))
            }),
        }
    }
}

/// What to do with a client's generated secret now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretPlan {
    /// No secret yet: write this one.
    Create(CredentialState),
    /// Rotate: write this state (it carries the previous digest). `reason` is for Events.
    Rotate {
        state: CredentialState,
        reason: RotationReason,
    },
    /// Nothing to do; look again at `recheck_at` if set (next scheduled rotation).
    Keep { recheck_at: Option<Timestamp> },
}

/// Why a secret was rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationReason {
    /// `spec.secret.rotation.trigger` changed.
    Trigger,
    /// `spec.secret.rotation.every` elapsed.
    Schedule,
}

/// Decides whether a generated secret must be created or rotated. It never re-randomises a
/// secret for any other reason.
pub fn plan_secret(policy: &RotationPolicy, current: Option<&CredentialState>, now: Timestamp) -> SecretPlan {
    let Some(current) = current else {
        return SecretPlan::Create(CredentialState::first(policy.trigger.clone(), now));
    };
    // A trigger that is set and differs from the one the current secret answers rotates once.
    if policy.trigger.is_some() && policy.trigger != current.trigger {
        return SecretPlan::Rotate {
            state: current.rotated(policy.trigger.clone(), policy.overlap, now),
            reason: RotationReason::Trigger,
        };
    }
    if let Some(every) = policy.every {
        let due = current.rotated_at + SignedDuration::try_from(every).unwrap_or(SignedDuration::MAX);
        if now >= due {
            return SecretPlan::Rotate {
                state: current.rotated(current.trigger.clone(), policy.overlap, now),
                reason: RotationReason::Schedule,
            };
        }
        return SecretPlan::Keep { recheck_at: Some(due) };
    }
    SecretPlan::Keep { recheck_at: None }
}

/// What to do with a rotated-out secret now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreviousPlan {
    /// Nothing to write; look again at `recheck_at` (if set).
    Keep { recheck_at: Option<Timestamp> },
    /// Still in use: valid until `until` (write it before the current window ends).
    Extend { until: Timestamp, recheck_at: Timestamp },
    /// Its window has ended: drop it from the state (and say so).
    Retire { unused: bool },
}

/// How long before a `whenUnused` window ends kauth decides whether to extend it: time for
/// usage records to arrive (replicas report every 30 s) and for the write to reach them.
fn extension_margin(quiet: Duration) -> SignedDuration {
    SignedDuration::try_from((quiet / 4).min(Duration::from_secs(120))).unwrap_or(SignedDuration::ZERO)
}

/// When the previous secret's fate is next decided (None: there is none): shortly before its
/// window ends with `whenUnused`, at its end otherwise.
pub fn previous_decided_at(policy: &RotationPolicy, state: &CredentialState) -> Option<Timestamp> {
    let margin = match policy.retire {
        RetirePrevious::WhenUnused { quiet } => extension_margin(quiet),
        RetirePrevious::AfterOverlap => SignedDuration::ZERO,
    };
    state.previous.as_ref().map(|p| p.valid_until - margin)
}

/// The earlier of two optional times (None: not set).
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How precisely uses are recorded (`secret_usage`): by the minute.
const USE_RESOLUTION: SignedDuration = SignedDuration::from_secs(60);

/// Decides the fate of the previous secret. `previous_last_used` is the minute of its last
/// use. After its overlap it ends, unless the policy is
/// `whenUnused`: then it stays valid until it has not been used for the quiet period, each
/// extension written shortly before the window it extends would end.
pub fn plan_previous(
    policy: &RotationPolicy,
    state: &CredentialState,
    previous_last_used: Option<Timestamp>,
    now: Timestamp,
) -> PreviousPlan {
    let Some(previous) = &state.previous else {
        return PreviousPlan::Keep { recheck_at: None };
    };
    let until = previous.valid_until;
    if now >= until {
        return PreviousPlan::Retire {
            unused: matches!(policy.retire, RetirePrevious::WhenUnused { .. }),
        };
    }
    let RetirePrevious::WhenUnused { quiet } = policy.retire else {
        return PreviousPlan::Keep {
            recheck_at: Some(until),
        };
    };
    let margin = extension_margin(quiet);
    let decide_at = until - margin;
    if now < decide_at {
        return PreviousPlan::Keep {
            recheck_at: Some(decide_at),
        };
    }
    let quiet = SignedDuration::try_from(quiet).unwrap_or(SignedDuration::MAX);
    // Uses are recorded by the minute they fell in: the last one may be at its very end.
    match previous_last_used.map(|minute| minute + USE_RESOLUTION + quiet) {
        Some(wanted) if wanted > until => PreviousPlan::Extend {
            until: wanted,
            recheck_at: wanted - margin,
        },
        // Not used lately, as far as the reports that have arrived say: look again a few
        // times before the window ends, for a report still on its way.
        _ => PreviousPlan::Keep {
            recheck_at: Some(until.min(now + (margin / 3).max(SignedDuration::from_secs(1)))),
        },
    }
}

/// What ends a rotated-out secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetirePrevious {
    /// The end of the overlap.
    #[default]
    AfterOverlap,
    /// The overlap's end, or later: once it has gone unused for `quiet`.
    WhenUnused { quiet: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn policy(trigger: Option<&str>, every: Option<u64>, overlap: u64) -> RotationPolicy {
        RotationPolicy {
            trigger: trigger.map(Into::into),
            every: every.map(Duration::from_secs),
            overlap: Duration::from_secs(overlap),
            retire: RetirePrevious::AfterOverlap,
        }
    }

    #[test]
    fn a_previous_secret_in_use_is_extended_and_an_unused_one_retired() {
        let mut p = policy(Some("a"), None, 60);
        p.retire = RetirePrevious::WhenUnused {
            quiet: Duration::from_secs(400),
        };
        let first = CredentialState::first(Some("a".into()), t(0));
        let state = first.rotated(Some("b".into()), p.overlap, t(1000));
        let until = t(1060);
        assert_eq!(state.previous.as_ref().unwrap().valid_until, until);
        // Before the decision point (100 s margin: a quarter of the quiet period).
        assert_eq!(
            plan_previous(&p, &state, Some(t(1040)), t(900)),
            PreviousPlan::Keep {
                recheck_at: Some(t(960))
            }
        );
        // At it, a use inside the quiet period extends the window to quiet after the end of
        // that use's minute.
        assert_eq!(
            plan_previous(&p, &state, Some(t(1000)), t(960)),
            PreviousPlan::Extend {
                until: t(1460),
                recheck_at: t(1360)
            }
        );
        // Last used long ago: the window ends as it is, and then the secret is retired;
        // until then it is looked at again every third of the margin, for late reports.
        let third = t(960) + SignedDuration::from_secs(100) / 3;
        assert_eq!(
            plan_previous(&p, &state, Some(t(560)), t(960)),
            PreviousPlan::Keep {
                recheck_at: Some(third)
            }
        );
        assert_eq!(
            plan_previous(&p, &state, None, t(1050)),
            PreviousPlan::Keep {
                recheck_at: Some(until)
            }
        );
        assert_eq!(
            plan_previous(&p, &state, Some(t(1059)), t(1060)),
            PreviousPlan::Retire { unused: true }
        );
        // afterOverlap ignores use.
        let after = policy(Some("b"), None, 60);
        assert_eq!(
            plan_previous(&after, &state, Some(t(1059)), t(1000)),
            PreviousPlan::Keep {
                recheck_at: Some(until)
            }
        );
        assert_eq!(
            plan_previous(&after, &state, Some(t(1059)), t(1060)),
            PreviousPlan::Retire { unused: false }
        );
        // The verifier says which secret matched.
        let v = state.verifier();
        assert!(matches!(
            v.matched(&first.secret, t(1001)),
            Some(MatchedSecret::Previous(_))
        ));
        assert!(matches!(
            v.matched(&state.secret, t(1001)),
            Some(MatchedSecret::Current(_))
        ));
    }

    #[test]
    fn secrets_are_long_random_and_url_safe() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn created_once_then_kept() {
        let p = policy(None, None, 60);
        let SecretPlan::Create(state) = plan_secret(&p, None, t(0)) else {
            panic!()
        };
        assert_eq!(state.version, 1);
        assert_eq!(
            plan_secret(&p, Some(&state), t(10_000)),
            SecretPlan::Keep { recheck_at: None }
        );
    }

    #[test]
    fn trigger_rotates_once_with_overlap() {
        let first = CredentialState::first(None, t(0));
        let p = policy(Some("2026-01-01"), None, 60);
        let SecretPlan::Rotate { state, reason } = plan_secret(&p, Some(&first), t(100)) else {
            panic!()
        };
        assert_eq!(reason, RotationReason::Trigger);
        assert_eq!(state.version, 2);
        assert_ne!(state.secret, first.secret);
        assert_eq!(
            plan_secret(&p, Some(&state), t(200)),
            SecretPlan::Keep { recheck_at: None }
        );

        let v = state.verifier();
        assert!(v.verify(&state.secret, t(100)));
        assert!(v.verify(&first.secret, t(159)), "old secret works inside the overlap");
        assert!(!v.verify(&first.secret, t(160)), "and not after it");
        assert!(!v.verify("guess", t(101)));
    }

    #[test]
    fn zero_overlap_ends_old_secret_at_once() {
        let first = CredentialState::first(None, t(0));
        let next = first.rotated(Some("x".into()), Duration::ZERO, t(5));
        assert!(next.previous.is_none());
        assert!(!next.verifier().verify(&first.secret, t(5)));
    }

    #[test]
    fn schedule_rotates_when_due() {
        let first = CredentialState::first(None, t(0));
        let p = policy(None, Some(3600), 60);
        assert_eq!(
            plan_secret(&p, Some(&first), t(3599)),
            SecretPlan::Keep {
                recheck_at: Some(t(3600))
            }
        );
        let SecretPlan::Rotate { reason, state } = plan_secret(&p, Some(&first), t(3600)) else {
            panic!()
        };
        assert_eq!(reason, RotationReason::Schedule);
        assert_eq!(state.rotated_at, t(3600));
    }
}
