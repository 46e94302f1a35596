//! A relying party's back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0, §2.6),
//! at `client-fapi2.yaml`'s `backchannelLogoutUri`. Run kauth so it may call a loopback
//! address, then this, then sign in with `cargo run --example fapi2_client` and sign out at
//! `/end_session`:
//!
//!     cargo run --release -- standalone --manifests examples/ --outbound-allow-network 127.0.0.1/32
//!     cargo run --example backchannel_logout_receiver
//!
//! For each POST it checks what a relying party must before it ends its own session: the
//! signature against kauth's JWKS, `iss`, `aud` (its client id), `iat`/`exp`, `typ:
//! logout+jwt`, the back-channel logout event, `sid` or `sub`, no `nonce`, and a `jti` it has
//! not seen. It answers 200 (no-store) when the token is good, 400 with an OAuth error when not.
//!
//! Environment: KAUTH_ISSUER (default http://127.0.0.1:8080), CLIENT_ID (default shop.bank).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

struct Receiver {
    issuer: String,
    client_id: String,
    http: reqwest::Client,
    /// `jti`s accepted so far (a real app keeps them until the tokens' `exp`).
    seen: Mutex<HashSet<String>>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let receiver = Arc::new(Receiver {
        issuer: std::env::var("KAUTH_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        client_id: std::env::var("CLIENT_ID").unwrap_or_else(|_| "shop.bank".into()),
        http: reqwest::Client::new(),
        seen: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/backchannel-logout", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8403").await?;
    println!("waiting for logout tokens on http://127.0.0.1:8403/backchannel-logout");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(rp): State<Arc<Receiver>>, body: String) -> impl IntoResponse {
    // The POST is a form with one field, logout_token.
    let token = form_urlencoded::parse(body.as_bytes())
        .find(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let answer = match rp.check(&token).await {
        Ok(claims) => {
            println!(
                "end the sessions of sub {} / sid {} (jti {})",
                claims["sub"], claims["sid"], claims["jti"]
            );
            (StatusCode::OK, String::new())
        }
        Err(why) => {
            eprintln!("refused a logout token: {why}");
            let body = json!({"error": "invalid_request", "error_description": why});
            (StatusCode::BAD_REQUEST, body.to_string())
        }
    };
    ([(header::CACHE_CONTROL, "no-store")], answer)
}

impl Receiver {
    async fn check(&self, token: &str) -> Result<Value, String> {
        let head = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if head.typ.as_deref() != Some("logout+jwt") {
            return Err(format!("typ is {:?}, not logout+jwt", head.typ));
        }
        // Only the algorithms kauth signs with; never one the token picks for itself.
        if ![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA].contains(&head.alg) {
            return Err(format!("alg {:?} is not one kauth signs with", head.alg));
        }
        let jwks: JwkSet = self
            .http
            .get(format!("{}/jwks", self.issuer))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("JWKS: {e}"))?
            .json()
            .await
            .map_err(|e| format!("JWKS: {e}"))?;
        let jwk = head
            .kid
            .as_deref()
            .and_then(|kid| jwks.find(kid))
            .ok_or("no key in kauth's JWKS has the token's kid")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut rules = Validation::new(head.alg);
        rules.set_issuer(&[&self.issuer]);
        rules.set_audience(&[&self.client_id]);
        rules.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
        let claims: Value = jsonwebtoken::decode(token, &key, &rules)
            .map_err(|e| e.to_string())?
            .claims;
        if !claims["events"].get(EVENT).is_some_and(Value::is_object) {
            return Err("no back-channel logout event".into());
        }
        if claims.get("nonce").is_some() {
            return Err("a logout token must not carry a nonce".into());
        }
        if claims.get("sid").is_none() && claims.get("sub").is_none() {
            return Err("neither sid nor sub".into());
        }
        let jti = claims["jti"].as_str().ok_or("no jti")?.to_owned();
        if !self.seen.lock().unwrap().insert(jti) {
            return Err("this logout token was seen before".into());
        }
        Ok(claims)
    }
}
