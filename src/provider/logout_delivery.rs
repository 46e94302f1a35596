//! Where logout tokens go out (OIDC Back-Channel Logout 1.0): POSTed as `logout_token` through
//! the outbound room as team-written addresses (public targets only unless the platform allows
//! a network), at most [`CONCURRENT_DELIVERIES`] at once, each retried once and counted
//! (purpose `backchannel_logout`). The queue is bounded per client and in all, so one team's
//! slow or endless logout address delays nobody else's for long, and fills no memory: past its
//! bound a delivery is dropped and audited as such. What is sent, and to whom, is
//! `backchannel.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::outbound::{Outbound, Retry};

/// Deliveries under way at once, over all sessions.
pub const CONCURRENT_DELIVERIES: usize = 16;

/// Deliveries one client may have queued or under way.
pub const PER_CLIENT: usize = 4;

/// Deliveries queued or under way, over all clients.
pub const IN_ALL: usize = 2_000;

/// Sends logout tokens.
pub struct Deliveries {
    http: Outbound,
    permits: Arc<Semaphore>,
    retry: Retry,
    /// Deliveries queued or under way, by client id.
    queued: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// A place in the queue, given back when dropped.
pub struct Place {
    queued: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    client_id: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = queued.get_mut(&self.client_id) {
            *n -= 1;
            if *n == 0 {
                queued.remove(&self.client_id);
            }
        }
    }
}

impl Deliveries {
    /// Deliveries through `http` (its reach decides where they may go).
    pub fn new(http: Outbound) -> Self {
        Self {
            http,
            permits: Arc::new(Semaphore::new(CONCURRENT_DELIVERIES)),
            retry: Retry {
                attempts: 2,
                first_delay: Duration::from_millis(500),
            },
            queued: Arc::default(),
        }
    }

    /// A place in the queue for `client_id`, unless it or the queue is full.
    pub fn place(&self, client_id: &str) -> Option<Place> {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = queued.values().sum();
        let mine = queued.get(client_id).copied().unwrap_or(0);
        if mine >= PER_CLIENT || total >= IN_ALL {
            return None;
        }
        *queued.entry(client_id.to_string()).or_default() += 1;
        Some(Place {
            queued: self.queued.clone(),
            client_id: client_id.to_string(),
        })
    }

    /// Waits for a delivery slot (none while shutting down).
    pub async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// POSTs `token` to `uri` (holding a slot); how it went, in words.
    pub async fn send(&self, uri: &str, token: &str) -> String {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", token)
            .finish();
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.into_bytes());
        match request {
            Ok(request) => match self
                .http
                .send_with_retry("backchannel_logout", request, self.retry)
                .await
            {
                Ok(r) if r.status().is_success() => "delivered".to_string(),
                Ok(r) => format!("refused with {}", r.status()),
                Err(e) => format!("not delivered: {e}"),
            },
            Err(_) => "not delivered: the address is not a URL".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_per_client() {
        let deliveries = Deliveries::new(Outbound::for_platform(Default::default()));
        let mine: Vec<Place> = (0..PER_CLIENT).map(|_| deliveries.place("evil.app").unwrap()).collect();
        assert!(deliveries.place("evil.app").is_none(), "a fifth waits nowhere");
        let other = deliveries.place("shop.web").expect("another client is not held up");
        drop(mine);
        assert!(deliveries.place("evil.app").is_some(), "places come back");
        drop(other);
        assert!(deliveries.queued.lock().unwrap().get("shop.web").is_none());
    }
}
