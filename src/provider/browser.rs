//! What the browser-facing endpoints share: random handles and their digests, cookies,
//! the caller's address, and the headers every page carries.

use std::net::SocketAddr;

use aws_lc_rs::{constant_time, rand};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};

use crate::issuer::Issuer;

/// A fresh 256-bit random handle, base64url (codes, refresh tokens, cookies, CSRF tokens).
pub fn random_handle() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).expect("the OS random number generator is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub use crate::store::handle_digest;

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The two cookies kauth sets. With an https issuer they carry the `__Host-` prefix, so no
/// other host or path can set or shadow them.
#[derive(Clone, Copy)]
pub enum CookieName {
    /// Binds pending sign-ins to the browser that started them (login CSRF).
    Browser,
    /// A signed-in session.
    Session,
}

impl CookieName {
    fn name(self, secure: bool) -> &'static str {
        match (self, secure) {
            (Self::Browser, true) => "__Host-kauth-browser",
            (Self::Browser, false) => "kauth-browser",
            (Self::Session, true) => "__Host-kauth-session",
            (Self::Session, false) => "kauth-session",
        }
    }
}

/// True when cookies must be `Secure` (an https issuer; plain http is for local development).
pub fn secure_cookies(issuer: &Issuer) -> bool {
    issuer.url.starts_with("https://")
}

/// The value of cookie `which`, if the browser sent it.
pub fn read_cookie(headers: &HeaderMap, issuer: &Issuer, which: CookieName) -> Option<String> {
    let name = which.name(secure_cookies(issuer));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Sets cookie `which` (HttpOnly, SameSite=Lax so it rides the top-level redirect back from
/// a relying party, Path=/, Secure with https). `None` clears it.
pub fn set_cookie(response: &mut Response, issuer: &Issuer, which: CookieName, value: Option<&str>, max_age_secs: i64) {
    let secure = secure_cookies(issuer);
    let mut c = Cookie::new(which.name(secure), value.unwrap_or("").to_string());
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_path("/");
    c.set_secure(secure);
    c.set_max_age(cookie::time::Duration::seconds(if value.is_some() {
        max_age_secs
    } else {
        0
    }));
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The client's address, as the server loop resolved it (trusted proxies' forwarding
/// headers included), else the peer's.
pub fn client_ip<B>(request: &Request<B>) -> Option<std::net::IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<super::serve::ClientAddress>()
        .map(|a| a.0)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
}

/// The one script kauth's pages run (by its hash in the Content-Security-Policy): the passkey
/// ceremony of a form that asks for one.
pub const PASSKEY_SCRIPT: &str = include_str!("passkey.js");

/// The pages' Content-Security-Policy.
static PAGE_POLICY: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, PASSKEY_SCRIPT.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest);
    HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'"
    ))
    .expect("a header value")
});

/// Headers for every page: never cached, never framed (clickjacking a consent button), no
/// referrer (the URL may carry a pending request id), no script but the passkey ceremony's
/// (allowed by its hash, so nothing injected could run).
pub fn page_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, PAGE_POLICY.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_random_and_digests_stable() {
        let (a, b) = (random_handle(), random_handle());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(handle_digest("x"), handle_digest("x"));
        assert_eq!(handle_digest("x").len(), 64);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }

    #[test]
    fn cookies_are_host_prefixed_and_secure_with_https() {
        let https = Issuer::parse("https://auth.example.com").unwrap();
        let mut r = Response::new(axum::body::Body::empty());
        set_cookie(&mut r, &https, CookieName::Session, Some("v"), 60);
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
        for part in [
            "__Host-kauth-session=v",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(set.contains(part), "{part} in {set}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b; __Host-kauth-session=v"));
        assert_eq!(read_cookie(&headers, &https, CookieName::Session).as_deref(), Some("v"));
        let http = Issuer::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            read_cookie(&headers, &http, CookieName::Session),
            None,
            "names differ without https"
        );
    }
}
