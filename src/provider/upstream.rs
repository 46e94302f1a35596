//! What kauth knows of the upstream providers people sign in with (connectors): their
//! discovery documents, fetched on first use and kept a while, and the HTTP client it calls
//! them with.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;

use crate::outbound::Outbound;

/// How long a discovery document is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(300);

/// Upstream discovery documents (with their keys), fetched on first use and refreshed, and
/// the HTTP client that fetches them.
pub struct UpstreamMetadata {
    cached: RwLock<HashMap<String, (CoreProviderMetadata, Instant)>>,
    /// The client that fetches them (and redeems codes upstream).
    pub http: Outbound,
}

impl UpstreamMetadata {
    /// Upstream metadata fetched with `http`.
    pub fn new(http: Outbound) -> Self {
        Self {
            cached: RwLock::default(),
            http,
        }
    }

    pub async fn get(&self, issuer: &str) -> Result<CoreProviderMetadata, String> {
        if let Some((m, at)) = self.cached.read().unwrap_or_else(|p| p.into_inner()).get(issuer)
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let url = IssuerUrl::new(issuer.to_string()).map_err(|e| e.to_string())?;
        let metadata = CoreProviderMetadata::discover_async(url, &self.http)
            .await
            .map_err(|e| format!("discovery of {issuer} failed: {e}"))?;
        self.cached
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.to_string(), (metadata.clone(), Instant::now()));
        Ok(metadata)
    }
}
