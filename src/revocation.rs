//! The deny list of revoked access tokens (by `jti`), kept until each token would have
//! expired anyway. The grant store holds it durably and for every replica; each replica
//! mirrors it in memory, so the hot path (introspection, userinfo) never waits on the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::store::{GrantStore, Issued, StoreError};

/// How far back each sync re-reads, covering clock skew between replicas and transactions
/// that committed late with an early `revoked_at`.
const SYNC_OVERLAP_SECONDS: i64 = 60;

/// Revoked token ids with their expiry (Unix seconds).
#[derive(Clone)]
pub struct RevocationList {
    revoked: Arc<RwLock<HashMap<String, i64>>>,
    /// The newest `revoked_at` seen in the store.
    seen_until: Arc<AtomicI64>,
    store: GrantStore,
}

impl RevocationList {
    /// Loads every unexpired revocation from `store`.
    pub async fn load(store: GrantStore, now: i64) -> Result<Self, StoreError> {
        let list = Self {
            revoked: Arc::default(),
            seen_until: Arc::new(AtomicI64::new(i64::MIN + SYNC_OVERLAP_SECONDS)),
            store,
        };
        list.sync(now).await?;
        Ok(list)
    }

    /// Revokes `jti` until `exp`; durable in the store before it returns.
    pub async fn revoke(&self, jti: &str, exp: i64, now: i64) -> Result<(), StoreError> {
        let issued = Issued {
            jti: jti.to_string(),
            exp,
        };
        self.store.revoke(&issued, now).await?;
        self.remember(std::slice::from_ref(&issued));
        Ok(())
    }

    /// Adds revocations the store already holds (a replayed code, a reused refresh token).
    pub fn remember(&self, revoked: &[Issued]) {
        let mut map = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        for r in revoked {
            map.insert(r.jti.clone(), r.exp);
        }
    }

    /// True when `jti` was revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains_key(jti)
    }

    /// Reads what other replicas revoked since the last sync and forgets expired entries;
    /// returns how many are held.
    pub async fn sync(&self, now: i64) -> Result<usize, StoreError> {
        let since = self.seen_until.load(Ordering::Relaxed) - SYNC_OVERLAP_SECONDS;
        let fresh = self.store.revocations_since(since, now).await?;
        let mut map = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        for r in fresh {
            self.seen_until.fetch_max(r.revoked_at, Ordering::Relaxed);
            map.insert(r.jti, r.exp);
        }
        map.retain(|_, exp| *exp > now);
        Ok(map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_a_restart_sees_other_replicas_and_forgets_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = GrantStore::open_file(dir.path()).await.unwrap();
        let list = RevocationList::load(store.clone(), 100).await.unwrap();
        list.revoke("a", 200, 100).await.unwrap();
        list.revoke("b", 150, 100).await.unwrap();
        assert!(list.is_revoked("a"));
        drop(list);
        let reopened = RevocationList::load(GrantStore::open_file(dir.path()).await.unwrap(), 160)
            .await
            .unwrap();
        assert!(reopened.is_revoked("a"));
        assert!(!reopened.is_revoked("b"), "expired entries are not loaded");
        // Another replica revokes through the same store.
        let other = RevocationList::load(store, 160).await.unwrap();
        other.revoke("c", 300, 161).await.unwrap();
        assert!(!reopened.is_revoked("c"));
        assert_eq!(reopened.sync(162).await.unwrap(), 2);
        assert!(reopened.is_revoked("c"));
        assert_eq!(reopened.sync(201).await.unwrap(), 1, "a expired");
    }
}
