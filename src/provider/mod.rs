//! The authorization server's HTTP surface (axum). Handlers read only the registry snapshot
//! and the revocation list; they never call the Kubernetes API.

mod account;
mod assertions;
mod authorization_request;
mod authorize;
mod backchannel;
mod browser;
mod browser_flow;
mod client_auth;
mod client_key_cache;
mod cors;
mod device;
mod discovery;
mod dpop_nonce;
pub mod error;
mod federation;
mod flood;
mod form;
mod grants;
mod housekeeping;
mod introspect;
mod issuance;
pub mod launch;
#[cfg(test)]
mod layering;
mod logout_delivery;
mod oidc;
mod ops;
mod pages;
mod par;
mod passkey_sign_in;
mod passkeys;
mod password_checks;
mod request_object;
mod second_factor;
mod sender;
pub mod serve;
mod signin;
mod state;
mod throttle;
mod token;
mod token_request;
mod upstream;

pub use password_checks::PasswordChecks;
pub use state::ProviderState;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};

use crate::metrics::{HttpLabels, RouteLabels};

/// The provider's router: the OAuth endpoints under the issuer's path.
pub fn router(state: ProviderState) -> Router {
    // The endpoints that read DPoP proofs hand out the server's nonce, when it uses them.
    let nonces = || middleware::from_fn_with_state(state.dpop_nonces.clone(), dpop_nonce::hand_out);
    let oauth = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::authorization_server_metadata),
        )
        .route("/jwks", get(discovery::jwks))
        .route("/token", any(token::token).layer(nonces()))
        .route("/introspect", any(introspect::introspect))
        .route("/revoke", any(introspect::revoke))
        .route("/authorize", get(authorize::authorize).post(authorize::authorize))
        .route("/par", any(par::push).layer(nonces()))
        .route("/login", get(signin::login_page).post(signin::login_submit))
        .route(browser_flow::completion::ACCOUNT_PAGE, get(account::page))
        .route(account::REVOKE_APP, any(account::revoke_app))
        .route(account::SIGN_OUT_EVERYWHERE, any(account::sign_out_everywhere))
        .route(account::REMOVE_SECOND_FACTOR, any(account::remove_second_factor))
        .route(account::END_SESSION, any(account::end_session))
        .route(
            browser_flow::SECOND_FACTOR_PAGE,
            get(second_factor::page).post(second_factor::submit),
        )
        .route(second_factor::RESUME, get(second_factor::resume))
        .route(browser_flow::PASSKEY_SIGN_IN, any(passkey_sign_in::submit))
        .route(account::ADD_PASSKEY, any(account::add_passkey))
        .route(account::REMOVE_PASSKEY, any(account::remove_passkey))
        .route("/consent", get(signin::consent_page).post(signin::consent_submit))
        .route("/device_authorization", any(device::device_authorization))
        .route("/device", get(device::device_page).post(device::device_submit))
        .route("/userinfo", get(oidc::userinfo).post(oidc::userinfo).layer(nonces()))
        .route("/end_session", get(oidc::end_session).post(oidc::end_session))
        .route("/connector/{id}/start", get(federation::start))
        .route("/connector/{id}/callback", get(federation::callback))
        .route("/", get(discovery::landing))
        .layer(middleware::from_fn_with_state(state.clone(), cors::cors));
    let routes = if state.issuer.path.is_empty() {
        oauth
    } else {
        Router::new().nest(&state.issuer.path, oauth)
    };
    routes
        .fallback(discovery::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// The operations router: liveness, readiness and metrics, served on a listener of their own
/// (never the provider's, which faces people and apps: metrics name every client).
pub fn ops_router(state: ProviderState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/readyz/store", get(ops::store_ready))
        .route("/readyz/claims", get(ops::claims_ready))
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}

async fn record(State(state): State<ProviderState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    // One span per request, joining the caller's trace when it sends a W3C traceparent.
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
        });
        // Fails only when no OpenTelemetry layer is installed: nothing to join.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .http_latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
