//! How quickly the watch caches resync after the apiserver fails, and whether they are in step
//! now. A cache that cannot resync serves stale grants (a deleted client keeps getting tokens),
//! so readiness says so and the Service stops sending this replica traffic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

/// First retry after a watch fails.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between retries: the cache resyncs within about a second of the apiserver
/// answering again. kube's default waits up to 30 s, which let a deleted client keep getting
/// tokens for half a minute after an apiserver restart.
const LONGEST_RETRY: Duration = Duration::from_secs(1);
/// How long a watch may fail before the replica reports itself not ready.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// Watch retries: 250 ms, doubling to 1 s, then every second (a handful of list calls per
/// second per replica at worst, which an apiserver that is back can take).
#[derive(Debug)]
pub struct ResyncSoon {
    next: Duration,
}

impl Default for ResyncSoon {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Iterator for ResyncSoon {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(LONGEST_RETRY);
        Some(wait)
    }
}

impl Backoff for ResyncSoon {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// For each watch, since when it has failed without an answer from the apiserver since.
#[derive(Clone, Debug, Default)]
pub struct WatchHealth {
    failing: Arc<Mutex<BTreeMap<&'static str, (Instant, String)>>>,
}

impl WatchHealth {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, (Instant, String)>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watch of `kind` got an answer (an event, or the end of a relist): it is in step.
    pub fn answered(&self, kind: &'static str) {
        let mut map = self.map();
        if map.contains_key(kind) {
            map.remove(kind);
            tracing::info!(kind, "watch resynced");
        }
    }

    /// The watch of `kind` failed; the first failure since its last answer counts.
    pub fn failed(&self, kind: &'static str, error: String, now: Instant) {
        self.map().entry(kind).or_insert((now, error));
    }

    /// How many watches are failing now (the `kauth_watches_failing` metric).
    pub fn failing(&self) -> usize {
        self.map().len()
    }

    /// Why this replica may serve stale grants: the first watch that has failed for longer
    /// than `bound` without resyncing.
    pub fn stale(&self, bound: Duration, now: Instant) -> Option<String> {
        self.map()
            .iter()
            .find(|(_, (since, _))| now.duration_since(*since) >= bound)
            .map(|(kind, (since, error))| {
                format!(
                    "the {kind} cache has not resynced for {} s (last error: {error}); grants may be stale",
                    now.duration_since(*since).as_secs()
                )
            })
    }
}

impl crate::registry::Freshness for WatchHealth {
    fn failing(&self) -> usize {
        WatchHealth::failing(self)
    }

    fn stale(&self) -> Option<String> {
        WatchHealth::stale(self, STALE_AFTER, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_quick_and_never_wait_more_than_a_second() {
        let mut b = ResyncSoon::default();
        let waits: Vec<u128> = (0..5).map(|_| b.next().unwrap().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST_RETRY));
    }

    #[test]
    fn a_watch_failing_past_the_bound_is_stale_until_it_answers() {
        let health = WatchHealth::default();
        let t0 = Instant::now();
        health.failed("OAuthClient", "connection refused".into(), t0);
        health.failed(
            "OAuthClient",
            "too old resource version".into(),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(health.stale(STALE_AFTER, t0 + Duration::from_secs(9)), None, "not yet");
        let why = health.stale(STALE_AFTER, t0 + Duration::from_secs(12)).unwrap();
        assert!(why.contains("OAuthClient cache has not resynced for 12 s"), "{why}");
        assert!(why.contains("connection refused"), "the first failure counts: {why}");
        assert_eq!(health.failing(), 1);
        health.answered("OAuthClient");
        assert_eq!(health.stale(STALE_AFTER, t0 + Duration::from_secs(20)), None);
        assert_eq!(health.failing(), 0);
    }
}
