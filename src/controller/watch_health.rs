//! How quickly the watch caches resync after the apiserver fails, and whether they are in step
//! now. A cache that cannot resync serves stale grants (a deleted client keeps getting tokens),
//! so readiness says so and the Service stops sending this replica traffic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};

/// First retry after a watch fails.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between retries: the cache resyncs within about a second of the apiserver
/// answering again. kube's default waits up to 30 s, which let a deleted client keep getting
/// tokens for half a minute after an apiserver restart.
const LONGEST_RETRY: Duration = Duration::from_secs(1);
/// How long a watch may fail before the replica reports itself not ready.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// How long a watch may stay silent after a failure (its retry included) before it is started
/// afresh. A watch of a custom resource sent while the apiserver was still starting was
/// accepted and then never answered: the cache missed a deletion for minutes.
const STALLED_AFTER: Duration = Duration::from_secs(3);

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

/// The events of `start()`'s watch, retried soon after failures ([`ResyncSoon`]); a watch that
/// has not answered [`STALLED_AFTER`] after a failure is dropped and started afresh (a new
/// list, then a watch). A quiet watch that has answered is left alone however long it is quiet.
pub fn restarted_when_stalled<K, S>(
    kind: &'static str,
    start: impl Fn() -> S + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    let retried = move || start().backoff(ResyncSoon::default()).boxed();
    let first = retried();
    futures::stream::unfold(
        (first, false, retried),
        move |(mut current, mut awaiting, retried)| async move {
            loop {
                let next = if awaiting {
                    match tokio::time::timeout(STALLED_AFTER, current.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::warn!(kind, "watch silent since it failed; starting it afresh");
                            current = retried();
                            continue;
                        }
                    }
                } else {
                    current.next().await
                };
                let event = next?;
                // Init is said before the list is even sent: it is no answer.
                awaiting = match &event {
                    Err(_) => true,
                    Ok(watcher::Event::Init) => awaiting,
                    Ok(_) => false,
                };
                return Some((event, (current, awaiting, retried)));
            }
        },
    )
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

    type Events = futures::stream::BoxStream<'static, watcher::Result<watcher::Event<String>>>;

    /// A factory of watches: the n-th call gets `scripts[n]`'s events, then silence.
    fn scripted(
        scripts: Vec<Vec<watcher::Result<watcher::Event<String>>>>,
    ) -> (impl Fn() -> Events, Arc<Mutex<usize>>) {
        let started = Arc::new(Mutex::new(0));
        let count = started.clone();
        let scripts = Arc::new(Mutex::new(scripts.into_iter().map(Some).collect::<Vec<_>>()));
        let start = move || {
            let mut n = count.lock().unwrap();
            let events = scripts.lock().unwrap()[*n].take().unwrap();
            *n += 1;
            futures::stream::iter(events).chain(futures::stream::pending()).boxed()
        };
        (start, started)
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_silent_after_a_failure_is_started_afresh() {
        let (start, started) = scripted(vec![
            vec![Err(watcher::Error::NoResourceVersion)],
            // The fresh one's Init is said before its list is sent: it must answer too.
            vec![Ok(watcher::Event::Init)],
            vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)],
        ]);
        let t0 = tokio::time::Instant::now();
        let events = restarted_when_stalled("test", start).take(4).collect::<Vec<_>>();
        let events = tokio::time::timeout(Duration::from_secs(60), events)
            .await
            .expect("four events within a minute");
        assert!(events[0].is_err());
        assert!(
            matches!(
                events[1..],
                [
                    Ok(watcher::Event::Init),
                    Ok(watcher::Event::Init),
                    Ok(watcher::Event::InitDone)
                ]
            ),
            "{events:?}"
        );
        assert_eq!(*started.lock().unwrap(), 3);
        let took = t0.elapsed();
        assert!(took >= STALLED_AFTER * 2 && took < STALLED_AFTER * 3, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_watch_that_answered_is_left_alone() {
        let (start, started) = scripted(vec![vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)]]);
        let mut events = Box::pin(restarted_when_stalled("test", start));
        assert!(matches!(events.next().await, Some(Ok(watcher::Event::Init))));
        assert!(matches!(events.next().await, Some(Ok(watcher::Event::InitDone))));
        let quiet = tokio::time::timeout(Duration::from_secs(600), events.next()).await;
        assert!(quiet.is_err(), "nothing more: {quiet:?}");
        assert_eq!(*started.lock().unwrap(), 1, "never restarted");
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
