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

/// Keys fetched from one `jwksUri`, and when.
type Fetched = (Arc<Vec<Jwk>>, Instant);

/// Keys fetched from clients' `jwksUri`s.
pub struct ClientKeyCache {
    http: Outbound,
    fetched: RwLock<HashMap<String, Fetched>>,
}

impl ClientKeyCache {
    /// A cache fetching with `http` (its [`Reach`](crate::outbound::Reach) decides where).
    pub fn new(http: Outbound) -> Self {
        Self {
            http,
            fetched: RwLock::default(),
        }
    }

    /// The keys at `uri`: cached while fresh and while they hold `kid`; fetched otherwise (not
    /// more often than every ten seconds, so unknown `kid`s cannot make kauth hammer a server).
    pub(super) async fn keys(&self, uri: &str, kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, String> {
        let cached = self.fetched.read().unwrap_or_else(|p| p.into_inner()).get(uri).cloned();
        if let Some((keys, at)) = &cached {
            let has_kid = kid.is_none_or(|kid| keys.iter().any(|k| k.common.key_id.as_deref() == Some(kid)));
            if at.elapsed() < KEYS_TTL && (has_kid || at.elapsed() < REFETCH_AFTER) {
                return Ok(keys.clone());
            }
        }
        match self.fetch(uri).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.fetched
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(uri.to_string(), (keys.clone(), Instant::now()));
                Ok(keys)
            }
            // A server that is down for a moment does not lock its clients out.
            Err(e) => cached.map(|(keys, _)| keys).ok_or(e),
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
