//! DPoP server nonces (RFC 9449 §8): with `--dpop-nonce`, a proof must carry a `nonce` kauth
//! handed out recently, so a proof made in advance (by someone who held the client's key for a
//! while) is useless later. A nonce is the number of its five-minute window and a MAC of it
//! under a key every replica shares (kept in the grant store), so any replica checks any
//! replica's nonce without a lookup; the windows before and after the current one are accepted
//! too (a nonce handed out at a turn, replicas' clocks a little apart). Every
//! response of an endpoint that reads proofs carries the current one in `DPoP-Nonce`.

use aws_lc_rs::hmac;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use std::sync::Arc;

/// How long one nonce is handed out; it is accepted in its window and the ones either side.
pub const WINDOW_SECS: i64 = 300;

/// The name of the nonce key in the grant store's shared secrets.
pub const SECRET_NAME: &str = "dpop-nonce";

/// Bytes of the MAC a nonce carries (128 bits).
const TAG_LEN: usize = 16;

/// Makes and checks nonces.
pub struct DpopNonces {
    key: hmac::Key,
}

impl DpopNonces {
    /// Nonces under `secret` (the same in every replica).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The nonce handed out at `now` (unix seconds).
    pub fn current(&self, now: i64) -> String {
        self.of_window(now.div_euclid(WINDOW_SECS))
    }

    /// True when `nonce` was handed out in this window or the one before.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Some((window, tag)) = bytes.split_first_chunk::<8>() else {
            return false;
        };
        let window = i64::from_be_bytes(*window);
        let current = now.div_euclid(WINDOW_SECS);
        // The window before (a nonce handed out just before it turned) and the one after (a
        // replica whose clock runs a little ahead made it).
        if !(current - 1..=current + 1).contains(&window) {
            return false;
        }
        let expected = hmac::sign(&self.key, &window.to_be_bytes());
        tag.len() == TAG_LEN
            && aws_lc_rs::constant_time::verify_slices_are_equal(tag, &expected.as_ref()[..TAG_LEN]).is_ok()
    }

    fn of_window(&self, window: i64) -> String {
        let tag = hmac::sign(&self.key, &window.to_be_bytes());
        let mut bytes = window.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// Middleware on the endpoints that read proofs: every answer carries the current nonce, the
/// refusals that ask for one (`use_dpop_nonce`) included.
pub async fn hand_out(State(nonces): State<Option<Arc<DpopNonces>>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(nonces) = &nonces
        && let Ok(value) = HeaderValue::from_str(&nonces.current(jiff::Timestamp::now().as_second()))
    {
        response.headers_mut().insert("dpop-nonce", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_for_its_window_and_the_next() {
        let nonces = DpopNonces::new(b"a shared secret");
        let start = 1_700_000_100;
        let nonce = nonces.current(start);
        assert!(nonces.accepts(&nonce, start));
        assert!(nonces.accepts(&nonce, start + WINDOW_SECS));
        assert!(!nonces.accepts(&nonce, start + 2 * WINDOW_SECS), "two windows on");
        assert!(nonces.accepts(&nonce, start - 1), "a replica a second ahead made it");
        assert!(!nonces.accepts(&nonce, start - 2 * WINDOW_SECS), "from further ahead");
    }

    #[test]
    fn only_the_key_makes_nonces() {
        let nonces = DpopNonces::new(b"a shared secret");
        let now = 1_700_000_100;
        assert!(!nonces.accepts(&DpopNonces::new(b"another secret").current(now), now));
        let mut forged = URL_SAFE_NO_PAD.decode(nonces.current(now)).unwrap();
        *forged.last_mut().unwrap() ^= 1;
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&forged), now));
        for junk in [
            "",
            "!!",
            "AAAA",
            &URL_SAFE_NO_PAD.encode((now / WINDOW_SECS).to_be_bytes()),
        ] {
            assert!(!nonces.accepts(junk, now), "{junk}");
        }
    }
}
