//! Which client secrets are in use: each replica notes, per secret and to the minute, when a
//! request last authenticated with it, and reports what changed to the grant store every
//! `REPORT_EVERY`, where the reports of all replicas merge. Requests never write: the note
//! is an atomic store, usually into a slot that already exists.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use crate::credentials::{SecretDigest, digest_name};
use crate::store::GrantStore;

/// How often a replica reports uses to the store, by default.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Most secrets noted between two reports; past it new ones wait for the next report.
const MAX_NOTED: usize = 1_000_000;

#[derive(Default)]
struct Slot {
    /// Minute of the last use (unix seconds, whole minutes).
    used: AtomicI64,
    /// What the last report said.
    reported: AtomicI64,
}

/// One replica's notes of secret uses.
#[derive(Default)]
pub struct SecretUses {
    slots: RwLock<HashMap<SecretDigest, Slot>>,
}

impl SecretUses {
    /// Notes that the secret with `digest` was used at `now`.
    pub fn note(&self, digest: &SecretDigest, now: Timestamp) {
        let minute = now.as_second() - now.as_second().rem_euclid(60);
        // Usually the slot exists: an atomic max under the shared lock.
        if let Some(slot) = self.slots.read().unwrap_or_else(|e| e.into_inner()).get(digest) {
            slot.used.fetch_max(minute, Ordering::Relaxed);
            return;
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= MAX_NOTED && !slots.contains_key(digest) {
            return;
        }
        slots
            .entry(*digest)
            .or_default()
            .used
            .fetch_max(minute, Ordering::Relaxed);
    }

    /// The uses not yet reported, as (digest name, minute); marks them reported.
    pub fn unreported(&self) -> Vec<(String, i64)> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .filter_map(|(digest, slot)| {
                let used = slot.used.load(Ordering::Relaxed);
                let before = slot.reported.swap(used, Ordering::Relaxed);
                (used > before).then(|| (digest_name(digest), used))
            })
            .collect()
    }

    /// Forgets slots with nothing new since the last report, so the map holds only secrets
    /// in use lately.
    fn forget_quiet(&self) {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, slot| slot.used.load(Ordering::Relaxed) > slot.reported.load(Ordering::Relaxed));
    }

    /// Hands back uses a failed report took, so the next report carries them.
    fn unreport(&self, uses: &[(String, i64)]) {
        let names: std::collections::HashSet<&str> = uses.iter().map(|(name, _)| name.as_str()).collect();
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        for (digest, slot) in slots.iter() {
            if names.contains(digest_name(digest).as_str()) {
                slot.reported.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Reports the uses not yet reported to `store`; a failed report is carried by the next.
    pub async fn report(&self, store: &GrantStore) {
        let uses = self.unreported();
        if let Err(e) = store.record_secret_uses(&uses).await {
            tracing::warn!(error = %e, secrets = uses.len(), "cannot report client secret use; the next report carries it");
            self.unreport(&uses);
            return;
        }
        self.forget_quiet();
    }
}

/// The usage-record name of a secret and when it was last used, from the store's answer.
pub fn last_used(found: &HashMap<String, i64>, name: &str) -> Option<Timestamp> {
    found.get(name).and_then(|s| Timestamp::from_second(*s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_noted_to_the_minute_and_reported_once() {
        const T: i64 = 1_800_000_000; // a whole minute
        let at = |s: i64| Timestamp::from_second(T + s).unwrap();
        let uses = SecretUses::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        uses.note(&a, at(125));
        uses.note(&a, at(61));
        uses.note(&b, at(59));
        let mut first = uses.unreported();
        first.sort();
        let mut wanted = vec![(digest_name(&a), T + 120), (digest_name(&b), T)];
        wanted.sort();
        assert_eq!(first, wanted);
        assert!(uses.unreported().is_empty(), "nothing new, nothing reported");
        uses.note(&a, at(130));
        assert!(uses.unreported().is_empty(), "the same minute is not news");
        uses.note(&a, at(180));
        let again = uses.unreported();
        assert_eq!(again, vec![(digest_name(&a), T + 180)]);
        uses.unreport(&again);
        assert_eq!(uses.unreported(), again, "a failed report is carried by the next");
        uses.forget_quiet();
        assert!(uses.slots.read().unwrap().is_empty(), "quiet secrets are forgotten");
    }
}
