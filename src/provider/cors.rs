//! CORS for browser apps (public clients) that call kauth from JavaScript.
//!
//! Discovery and the JWKS are public documents: any origin may read them. The token,
//! userinfo and revocation endpoints answer cross-origin only to the origins of the
//! registered redirect URIs of public clients, so a page elsewhere cannot read their
//! responses. The browser pages (authorize, login, consent, logout) are never CORS-enabled.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::ProviderState;

/// What a path allows cross-origin.
enum Policy {
    /// Anyone may read it.
    Public,
    /// Only the origins of public clients.
    Clients,
    /// Not at all.
    None,
}

fn policy(path: &str, issuer_path: &str) -> Policy {
    match path.strip_prefix(issuer_path).unwrap_or(path) {
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" | "/jwks" => Policy::Public,
        "/token" | "/userinfo" | "/revoke" => Policy::Clients,
        _ => Policy::None,
    }
}

/// Adds CORS headers, and answers preflight requests, per [`policy`].
pub async fn cors(State(state): State<ProviderState>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let allowed = match policy(request.uri().path(), &state.issuer.path) {
        Policy::Public => Some(HeaderValue::from_static("*")),
        Policy::Clients if state.registry.load().browser_origins.contains(&origin) => {
            HeaderValue::from_str(&origin).ok()
        }
        _ => None,
    };
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if allowed.is_some() {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    if let Some(value) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_policies() {
        use crate::registry::web_origin;
        assert_eq!(
            web_origin("http://127.0.0.1:8401/callback").as_deref(),
            Some("http://127.0.0.1:8401")
        );
        assert_eq!(
            web_origin("https://app.example.com/cb?x=1").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            web_origin("com.example.app:/cb"),
            None,
            "native schemes have no web origin"
        );
        assert!(matches!(policy("/kauth/jwks", "/kauth"), Policy::Public));
        assert!(matches!(policy("/token", ""), Policy::Clients));
        assert!(matches!(policy("/login", ""), Policy::None));
    }
}
