//! OAuth error responses (RFC 6749 §5.2): a JSON body with `error` and a description that
//! helps the caller without revealing internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An OAuth error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// RFC 6749 error code.
    pub code: &'static str,
    /// Human-readable description.
    pub description: String,
    /// Ask for HTTP Basic (on 401 after Basic was used or no credentials came).
    pub basic_challenge: bool,
    /// Seconds for `Retry-After` on a 429.
    pub retry_after: Option<u64>,
    /// Challenge with the DPoP scheme (RFC 9449 §7.1) rather than Bearer.
    pub dpop_challenge: bool,
}

/// The error asking for a DPoP proof with the server's nonce (RFC 9449 §8).
pub const USE_DPOP_NONCE: &str = "use_dpop_nonce";

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
            dpop_challenge: false,
        }
    }

    /// `temporarily_unavailable` with 429 and `Retry-After`: this caller sent too many requests
    /// of a kind that stores a row (`what`); others are not affected.
    pub fn too_many(what: &str, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs().max(1);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            format!("too many {what} from this address; retry in {seconds} s"),
        );
        e.retry_after = Some(seconds);
        e
    }

    /// `invalid_request` with 404: no endpoint at that path.
    pub fn not_found(d: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request", d)
    }
    /// `invalid_request` (400).
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// `invalid_client` (401).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    /// `unauthorized_client` (400).
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    /// `unsupported_grant_type` (400).
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }
    /// `invalid_grant` (400): a bad, expired, replayed or foreign code or refresh token.
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    /// `invalid_token` (401, RFC 6750) at the userinfo endpoint.
    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", d)
    }
    /// `insufficient_scope` (403, RFC 6750).
    pub fn insufficient_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "insufficient_scope", d)
    }
    /// `invalid_scope` (400).
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    /// `invalid_target` (400, RFC 8707).
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", d)
    }
    /// `temporarily_unavailable` (503, with `Retry-After`).
    pub fn unavailable(d: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", d)
    }
    /// The device grant's answers while no token is due (RFC 8628 §3.5), all 400:
    /// `authorization_pending`, `slow_down`, `access_denied`, `expired_token`.
    pub fn device(code: &'static str, d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, d)
    }
    /// An error a request's checks produced, by its RFC 6749 code (400).
    pub fn refused(code: &'static str, d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, d)
    }
    /// `server_error` (500); the cause is logged, never sent.
    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }
    /// `invalid_request` with 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body is larger than {limit} bytes"),
        )
    }
    /// `invalid_request` with 405 for a method other than POST.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use POST with an application/x-www-form-urlencoded body",
        )
    }

    /// Challenges with `WWW-Authenticate: DPoP` (a token bound to a key was presented wrongly).
    pub fn with_dpop_challenge(mut self) -> Self {
        self.dpop_challenge = true;
        self
    }

    /// Adds a `WWW-Authenticate: Basic` challenge.
    pub fn with_basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }
}

/// A description as a quoted header parameter can carry it: visible ASCII and spaces (a
/// description may name a section, `§`, or echo a non-ASCII name), no quotes or backslashes.
fn header_safe(description: &str) -> String {
    description
        .replace('§', "section ")
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' ' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// Headers every token-bearing or error response carries (RFC 6749 §5.1).
pub fn no_store(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// What `Retry-After` says on every 503.
pub const RETRY_AFTER_SECONDS: &str = "2";

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                error: self.code,
                error_description: &self.description,
            }),
        )
            .into_response();
        no_store(&mut response);
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kauth\", charset=\"UTF-8\""),
            );
        }
        if matches!(self.code, "invalid_token" | "insufficient_scope")
            || (self.dpop_challenge && self.code == USE_DPOP_NONCE)
        {
            // RFC 6750 §3 (and RFC 9449 §7.1 for DPoP): the error is named in the challenge too.
            let scheme = if self.dpop_challenge {
                format!("DPoP algs=\"{}\",", crate::tokens::DPOP_ALGORITHMS.join(" "))
            } else {
                "Bearer".to_string()
            };
            let challenge = format!(
                "{scheme} realm=\"kauth\", error=\"{}\", error_description=\"{}\"",
                self.code,
                header_safe(&self.description)
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // The store or the keys come back on their own: tell clients when to try again.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_carries_only_visible_ascii() {
        let e = OAuthError::invalid_token("spec.profile FAPI2: \"ü\" \\ (FAPI 2.0 §5.3.2.2)").with_dpop_challenge();
        let response = e.into_response();
        let challenge = response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.ends_with("error_description=\"spec.profile FAPI2: '?' ' (FAPI 2.0 section 5.3.2.2)\""),
            "{challenge}"
        );
    }
}
