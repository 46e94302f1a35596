//! OIDC Back-Channel Logout 1.0: when a session ends, every client it signed a person in to
//! and that registered a `backchannelLogoutUri` is sent a logout token (`typ: logout+jwt`, the
//! logout event, `sid` and `sub`, a `jti`, no `nonce`), POSTed as `logout_token`. Deliveries
//! run in the background through the outbound room as team-written addresses (public targets
//! only unless the platform allows a network), at most [`CONCURRENT_DELIVERIES`] at once, each
//! retried with backoff, and each leaves an audit line and a metric (purpose
//! `backchannel_logout`).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::Header;
use serde_json::json;
use tokio::sync::Semaphore;

use super::state::ProviderState;
use crate::keys::jose_algorithm;
use crate::outbound::{Outbound, Retry};
use crate::registry::RegisteredClient;
use crate::store::SessionClient;
use crate::tokens::new_jti;

/// The event a logout token carries.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Deliveries under way at once, over all sessions.
pub const CONCURRENT_DELIVERIES: usize = 16;

/// How long a logout token is valid.
const TOKEN_LIFETIME_SECS: i64 = 120;

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
}

/// Tells the clients session `sid` signed in to that it ended, in the background.
pub fn session_ended(state: &ProviderState, sid: String) {
    let state = state.clone();
    tokio::spawn(async move {
        let clients = match state.store.take_session_clients(&sid).await {
            Ok(clients) => clients,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session's clients for back-channel logout");
                return;
            }
        };
        for client in clients {
            deliver(&state, &sid, client).await;
        }
    });
}

/// Sends one client its logout token, if it still is the client it was and wants one.
async fn deliver(state: &ProviderState, sid: &str, to: SessionClient) {
    let snapshot = state.registry.load();
    let Some(client) = snapshot
        .clients
        .get(&to.client_id)
        .filter(|c| c.uid == to.client_uid)
        .cloned()
    else {
        return;
    };
    let Some(uri) = client.backchannel_logout_uri.clone() else {
        return;
    };
    let token = match logout_token(state, &snapshot.keys, &client, &to.subject, sid) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, client_id = %client.client_id, "cannot sign a logout token");
            return;
        }
    };
    let deliveries = state.backchannel.clone();
    let state = state.clone();
    let subject = to.subject;
    tokio::spawn(async move {
        let Ok(_permit) = deliveries.permits.clone().acquire_owned().await else {
            return;
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", &token)
            .finish();
        let request = http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.into_bytes());
        let outcome = match request {
            Ok(request) => match deliveries
                .http
                .send_with_retry("backchannel_logout", request, deliveries.retry)
                .await
            {
                Ok(r) if r.status().is_success() => "delivered".to_string(),
                Ok(r) => format!("refused with {}", r.status()),
                Err(e) => format!("not delivered: {e}"),
            },
            Err(_) => "not delivered: the address is not a URL".to_string(),
        };
        tracing::info!(client_id = %client.client_id, outcome = %outcome, "back-channel logout");
        let record = crate::audit::Record {
            client_id: Some(&client.client_id),
            subject: Some(&subject),
            reason: Some(&outcome),
            ..Default::default()
        };
        state.audit_event(crate::audit::Event::BackchannelLogout, &record);
    });
}

/// A logout token for `client` about `subject`'s session `sid`, signed like its ID tokens.
fn logout_token(
    state: &ProviderState,
    keys: &crate::keys::KeyRing,
    client: &RegisteredClient,
    subject: &str,
    sid: &str,
) -> Result<String, String> {
    let now = Timestamp::now();
    let signer = keys
        .signer_for(jose_algorithm(client.id_token_alg), now)
        .ok_or("no signing key for the client's ID token algorithm")?;
    let mut header = Header::new(signer.algorithm);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("logout+jwt".into());
    let iat = now.as_second();
    let claims = json!({
        "iss": state.issuer.url,
        "aud": client.client_id,
        "iat": iat,
        "exp": iat + TOKEN_LIFETIME_SECS,
        "jti": new_jti(),
        "sub": subject,
        "sid": sid,
        "events": { LOGOUT_EVENT: {} },
    });
    jsonwebtoken::encode(&header, &claims, &signer.encoding).map_err(|e| e.to_string())
}
