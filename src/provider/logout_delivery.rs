//! Where logout tokens go out (OIDC Back-Channel Logout 1.0): POSTed as `logout_token` through
//! the outbound room as team-written addresses (public targets only unless the platform allows
//! a network), at most [`CONCURRENT_DELIVERIES`] at once, each retried with backoff and counted
//! (purpose `backchannel_logout`). What is sent, and to whom, is `backchannel.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::outbound::{Outbound, Retry};

/// Deliveries under way at once, over all sessions.
pub const CONCURRENT_DELIVERIES: usize = 16;

/// Sends logout tokens.
pub struct Deliveries {
    http: Outbound,
    permits: Arc<Semaphore>,
    retry: Retry,
}

impl Deliveries {
    /// Deliveries through `http` (its reach decides where they may go).
    pub fn new(http: Outbound) -> Self {
        Self {
            http,
            permits: Arc::new(Semaphore::new(CONCURRENT_DELIVERIES)),
            retry: Retry {
                attempts: 3,
                first_delay: Duration::from_millis(500),
            },
        }
    }

    /// POSTs `token` to `uri` when a delivery slot is free; how it went, in words.
    pub async fn send(&self, uri: &str, token: &str) -> String {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return "not delivered: shutting down".into();
        };
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
