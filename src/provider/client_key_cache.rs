//! The keys OAuthClients publish at their `jwksUri` (`private_key_jwt`), fetched through the
//! outbound room as team-written addresses (public targets only unless the platform allows a
//! network), cached five minutes, and fetched again for an unknown `kid` at most every ten
//! seconds, so unknown `kid`s cannot make kauth hammer a server.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;

use crate::client_keys::parse_document;
use crate::outbound::Outbound;

/// How long fetched keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(300);
/// Shortest time between two fetches of one `jwksUri` (an unknown `kid` asks for one).
const REFETCH_AFTER: Duration = Duration::from_secs(10);

/// Most `jwksUri`s remembered; past it, entries not fetched lately make room.
const MAX_ENTRIES: usize = 10_000;

/// What kauth knows of one `jwksUri`.
#[derive(Clone)]
struct Entry {
    /// Its keys and when they were fetched, after the last successful fetch.
    keys: Option<(Arc<Vec<Jwk>>, Instant)>,
    /// When it was last tried, successfully or not.
    tried: Instant,
}

/// Keys fetched from clients' `jwksUri`s.
pub struct ClientKeyCache {
    http: Outbound,
    entries: RwLock<HashMap<String, Entry>>,
    /// One fetch of a URI at a time: callers that find one under way wait for it.
    fetching: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ClientKeyCache {
    /// A cache fetching with `http` (its [`Reach`](crate::outbound::Reach) decides where).
    pub fn new(http: Outbound) -> Self {
        Self {
            http,
            entries: RwLock::default(),
            fetching: std::sync::Mutex::default(),
        }
    }

    fn entry(&self, uri: &str) -> Option<Entry> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(uri).cloned()
    }

    /// The keys at `uri`: cached while fresh and while they hold `kid`; fetched otherwise, but
    /// a URI is tried at most every ten seconds whatever the outcome (so neither unknown
    /// `kid`s nor a failing server make kauth call it per request), and by one caller at a
    /// time. Keys a failing server published stay usable for one more TTL, not for ever.
    pub(super) async fn keys(&self, uri: &str, kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, String> {
        // Keys a failing server published serve one more TTL, not for ever.
        let usable = |entry: &Option<Entry>| -> Option<Arc<Vec<Jwk>>> {
            let (keys, at) = entry.as_ref()?.keys.as_ref()?;
            (at.elapsed() < 2 * KEYS_TTL).then(|| keys.clone())
        };
        let fresh = |entry: &Option<Entry>| {
            entry.as_ref().and_then(|e| e.keys.as_ref()).is_some_and(|(keys, at)| {
                at.elapsed() < KEYS_TTL
                    && kid.is_none_or(|kid| keys.iter().any(|k| k.common.key_id.as_deref() == Some(kid)))
            })
        };
        let recently_tried = |entry: &Option<Entry>| entry.as_ref().is_some_and(|e| e.tried.elapsed() < REFETCH_AFTER);
        let cached = self.entry(uri);
        if fresh(&cached) || recently_tried(&cached) {
            return usable(&cached).ok_or_else(|| "the jwksUri's keys are unavailable; try again shortly".into());
        }
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uri.to_string())
            .or_default()
            .clone();
        let _turn = lock.lock().await;
        // Someone else may have fetched while this caller waited.
        let cached = self.entry(uri);
        if fresh(&cached) || recently_tried(&cached) {
            return usable(&cached).ok_or_else(|| "the jwksUri's keys are unavailable; try again shortly".into());
        }
        let fetched = self.fetch(uri).await;
        let now = Instant::now();
        let entry = Entry {
            keys: match &fetched {
                Ok(keys) => Some((Arc::new(keys.clone()), now)),
                Err(_) => cached.as_ref().and_then(|e| e.keys.clone()),
            },
            tried: now,
        };
        {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(uri) {
                entries.retain(|_, e| e.tried.elapsed() < 2 * KEYS_TTL);
            }
            if entries.len() < MAX_ENTRIES || entries.contains_key(uri) {
                entries.insert(uri.to_string(), entry.clone());
            }
        }
        self.fetching.lock().unwrap_or_else(|p| p.into_inner()).remove(uri);
        match fetched {
            Ok(_) => usable(&Some(entry)).ok_or_else(|| "the jwksUri has no usable keys".into()),
            // A server that is down for a moment does not lock its clients out at once.
            Err(e) => usable(&Some(entry)).ok_or(e),
        }
    }

    async fn fetch(&self, uri: &str) -> Result<Vec<Jwk>, String> {
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| "the jwksUri is not a URL".to_string())?;
        let retry = crate::outbound::Retry {
            attempts: 2,
            first_delay: Duration::from_millis(200),
        };
        let response = self
            .http
            .send_with_retry("client_jwks", request, retry)
            .await
            .map_err(|e| format!("the jwksUri could not be read: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the jwksUri answered {}", response.status()));
        }
        parse_document(response.body()).map_err(|e| format!("the jwksUri's document {e}"))
    }
}
