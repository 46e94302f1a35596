//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::state::ProviderState;

/// GET /healthz: the process serves HTTP.
pub async fn healthz() -> &'static str {
    "ok"
}

/// GET /readyz: every cache synced (and, in a cluster, none failing for long) and a key can sign.
pub async fn readyz(State(state): State<ProviderState>) -> Response {
    let snapshot = state.registry.load();
    if !snapshot.complete {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
    } else if snapshot.keys.signer(Timestamp::now()).is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no active signing key yet").into_response()
    } else if let Some(why) = state.freshness.as_ref().and_then(|f| f.stale()) {
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    } else {
        "ready".into_response()
    }
}

/// GET /readyz/store: the grant store answers. Kept apart from `/readyz` on purpose: without
/// the store, client_credentials, introspection and discovery still work, so a replica must
/// not leave its Service; this tells operators (and sign-in routing) that stateful grants fail.
pub async fn store_ready(State(state): State<ProviderState>) -> Response {
    if state.store_up.load(std::sync::atomic::Ordering::Relaxed) {
        "grant store answers".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the grant store does not answer: sign-in, codes, refresh and revocation fail fast with 503",
        )
            .into_response()
    }
}

/// A claim waiting this long for the claims record is more than a write in flight.
const CLAIMS_PENDING_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// GET /readyz/claims: every claim is in the claims record. Kept apart from `/readyz` on
/// purpose: one namespace's claim that cannot be recorded must not take the replica out of
/// service for every team; this tells the platform team (and an alert) that it waits.
pub async fn claims_ready(State(state): State<ProviderState>) -> Response {
    let snapshot = state.registry.load();
    match snapshot.claims_pending_since {
        Some(since) if Timestamp::now().duration_since(since).unsigned_abs() >= CLAIMS_PENDING_FOR => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "claims have waited for the claims record since {since}: nothing is served under them (kauth_claims_pending; see the objects' conditions)"
            ),
        )
            .into_response(),
        _ => "every claim is recorded".into_response(),
    }
}

/// GET /metrics: OpenMetrics text.
pub async fn metrics(State(state): State<ProviderState>) -> Response {
    if let Some(f) = &state.freshness {
        state.metrics.watches_failing.set(f.failing() as i64);
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
