//! What a person must agree to before a client gets tokens for them: pure policy over the
//! request, the snapshot and what they allowed before.

use super::AuthRequest;
use crate::provider::state::ProviderState;
use crate::registry::Snapshot;

pub use crate::published::IDENTITY_SCOPES;

/// True when the platform declared the request's client first-party (its namespace is in
/// kauth's own configuration, which app teams cannot change).
pub fn first_party(state: &ProviderState, snapshot: &Snapshot, req: &AuthRequest) -> bool {
    snapshot
        .clients
        .get(&req.client_id)
        .filter(|c| c.uid == req.client_uid)
        .is_some_and(|c| state.first_party_namespaces.contains(&c.namespace))
}

/// What the person has to agree to, less what they allowed this client object before
/// (`remembered`, None when they never approved it):
/// - being identified at all (`openid`), the first time, so no client learns who is signed in
///   without the person's say;
/// - identity scopes;
/// - API scopes whose Scope requires consent.
///
/// A first-party client asks for none of the identity ones; API scopes are their API team's
/// call either way.
pub fn consent_needed(
    snapshot: &Snapshot,
    req: &AuthRequest,
    remembered: Option<&[String]>,
    first_party: bool,
) -> Vec<String> {
    let mut needed: Vec<String> = req
        .scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .filter(|s| {
            let identity = IDENTITY_SCOPES.iter().any(|(v, _)| v == s);
            if identity {
                !first_party
            } else {
                snapshot.scopes.get(s.as_str()).is_none_or(|i| i.consent_required)
            }
        })
        .filter(|s| req.force_consent || !remembered.unwrap_or_default().contains(s))
        .cloned()
        .collect();
    if !first_party && (remembered.is_none() || req.force_consent) {
        needed.insert(0, "openid".to_string());
    }
    needed
}
