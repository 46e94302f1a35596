//! OIDC Back-Channel Logout 1.0: when a session ends (sign-out, or its person left), every
//! client it signed the person in to and that registered a `backchannelLogoutUri` is sent a
//! logout token (`typ: logout+jwt`, the logout event, `sid` and `sub`, a `jti`, no `nonce`),
//! in the background (`logout_delivery.rs` sends it), each delivery leaving an audit line.

use jiff::Timestamp;
use jsonwebtoken::Header;
use serde_json::json;

use super::state::ProviderState;
use crate::keys::jose_algorithm;
use crate::registry::RegisteredClient;
use crate::store::SessionClient;
use crate::tokens::new_jti;

/// The event a logout token carries.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a logout token is valid.
const TOKEN_LIFETIME_SECS: i64 = 120;

/// Tells the clients every session of `subject` signed in to that it ended (the person left),
/// in the background. Every replica may call this; the record is taken once, so each client
/// is told once.
pub fn person_left(state: &ProviderState, subject: String) {
    let state = state.clone();
    tokio::spawn(async move {
        match state.store.take_clients_of_subject(&subject).await {
            Ok(sessions) => {
                for (sid, client) in sessions {
                    deliver(&state, Some(&sid), client).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read a person's sessions for back-channel logout"),
        }
    });
}

/// Tells a client whose refresh family was revoked for reuse that its person's session there
/// is over, in the background.
pub fn family_revoked(state: &ProviderState, family: crate::store::Grant) {
    let state = state.clone();
    tokio::spawn(async move {
        let to = SessionClient {
            client_id: family.client_id,
            client_uid: family.client_uid,
            subject: family.subject,
        };
        deliver(&state, family.sid.as_deref(), to).await;
    });
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
            deliver(&state, Some(&sid), client).await;
        }
    });
}

/// Sends one client its logout token, if it still is the client it was and wants one.
async fn deliver(state: &ProviderState, sid: Option<&str>, to: SessionClient) {
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
    let deliveries = state.backchannel.clone();
    // Bounded per client and in all: past it, dropped (and audited), never queued.
    let Some(place) = deliveries.place(&client.client_id) else {
        audit(
            state,
            &client.client_id,
            &to.subject,
            "not delivered: too many logout tokens for this client are waiting",
        );
        return;
    };
    let state = state.clone();
    let sid = sid.map(str::to_string);
    tokio::spawn(async move {
        let _place = place;
        let Some(_slot) = deliveries.slot().await else { return };
        // Signed when its turn comes, so a wait in the queue does not eat its lifetime.
        let keys = state.registry.load().keys.clone();
        let outcome = match logout_token(&state, &keys, &client, &to.subject, sid.as_deref()) {
            Ok(token) => deliveries.send(&uri, &token).await,
            Err(e) => format!("not delivered: cannot sign ({e})"),
        };
        audit(&state, &client.client_id, &to.subject, &outcome);
    });
}

/// One delivery in the audit trail and the log.
fn audit(state: &ProviderState, client_id: &str, subject: &str, outcome: &str) {
    tracing::info!(client_id = %client_id, outcome = %outcome, "back-channel logout");
    let record = crate::audit::Record {
        client_id: Some(client_id),
        subject: Some(subject),
        reason: Some(outcome),
        ..Default::default()
    };
    state.audit_event(crate::audit::Event::BackchannelLogout, &record);
}

/// A logout token for `client` about `subject`'s session `sid`, signed like its ID tokens.
fn logout_token(
    state: &ProviderState,
    keys: &crate::keys::KeyRing,
    client: &RegisteredClient,
    subject: &str,
    sid: Option<&str>,
) -> Result<String, String> {
    let now = Timestamp::now();
    let signer = keys
        .signer_for(jose_algorithm(client.id_token_alg), now)
        .ok_or("no signing key for the client's ID token algorithm")?;
    let mut header = Header::new(signer.algorithm);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("logout+jwt".into());
    let iat = now.as_second();
    let mut claims = json!({
        "iss": state.issuer.url,
        "aud": client.client_id,
        "iat": iat,
        "exp": iat + TOKEN_LIFETIME_SECS,
        "jti": new_jti(),
        "sub": subject,
        "events": { LOGOUT_EVENT: {} },
    });
    if let Some(sid) = sid {
        claims["sid"] = json!(sid);
    }
    jsonwebtoken::encode(&header, &claims, &signer.encoding).map_err(|e| e.to_string())
}
