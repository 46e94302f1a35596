//! A FAPI 2.0 web app you can run against `make run` (kauth standalone on these examples): the
//! OAuthClient `shop.bank` of `client-fapi2.yaml`, with its demo key `client-fapi2.key.json`.
//!
//!     cargo run --example fapi2_client            # then open the URL it prints; alice / alice-demo-password
//!
//! It does what a FAPI 2.0 client must, one step at a time, so each is easy to read:
//! 1. signs its authorization request (RFC 9101) and pushes it to `/par` (RFC 9126),
//!    authenticating with a client assertion signed by its key (`private_key_jwt`, RFC 7523)
//!    and binding the code to a DPoP key it made for this run (RFC 9449);
//! 2. sends the person's browser to `/authorize` with only `client_id` and `request_uri`;
//! 3. takes the code at its redirect URI, checking `state` and `iss` (RFC 9207);
//! 4. redeems it with the PKCE verifier, a new assertion and a DPoP proof: the tokens come back
//!    `token_type: DPoP`, the access token carries `cnf.jkt`;
//! 5. calls `/userinfo` with `Authorization: DPoP` and a proof that names the token (`ath`).
//!
//! Environment: KAUTH_ISSUER (default http://127.0.0.1:8080).

use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "shop.bank";
const REDIRECT_URI: &str = "http://127.0.0.1:8402/callback";
const KEY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/client-fapi2.key.json");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::var("KAUTH_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let meta: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await?
        .json()
        .await?;
    let endpoint = |name: &str| {
        meta[name]
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("discovery lacks {name}"))
    };
    let (par, authorize, token, userinfo) = (
        endpoint("pushed_authorization_request_endpoint")?,
        endpoint("authorization_endpoint")?,
        endpoint("token_endpoint")?,
        endpoint("userinfo_endpoint")?,
    );

    let client_key = ClientKey::load(KEY_FILE)?;
    let dpop = DpopKey::generate()?;
    let (verifier, state, nonce) = (random(32), random(16), random(16));
    let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));

    // 1. The signed request, pushed with a client assertion and a DPoP proof.
    let now = jiff::Timestamp::now().as_second();
    let request = client_key.sign(
        "oauth-authz-req+jwt",
        &json!({
            "iss": CLIENT_ID, "aud": issuer, "client_id": CLIENT_ID, "iat": now, "nbf": now,
            "exp": now + 60, "jti": random(16), "response_type": "code",
            "redirect_uri": REDIRECT_URI, "scope": "openid orders.read", "state": state,
            "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
        }),
    )?;
    let pushed: Value = http
        .post(&par)
        .header("DPoP", dpop.proof("POST", &par, None)?)
        .form(&[
            ("client_id", CLIENT_ID),
            ("request", &request),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &client_key.assertion(&issuer)?),
        ])
        .send()
        .await?
        .json()
        .await?;
    let request_uri = pushed["request_uri"]
        .as_str()
        .ok_or(format!("/par refused: {pushed}"))?;

    // 2. Only the request's handle travels through the browser.
    let url = url::Url::parse_with_params(&authorize, &[("client_id", CLIENT_ID), ("request_uri", request_uri)])?;
    println!(
        "Open this in your browser (it expires in {}s):\n\n  {url}\n",
        pushed["expires_in"]
    );

    // 3. The redirect back, on 127.0.0.1:8402.
    let callback = wait_for_callback().await?;
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        return Err(format!(
            "kauth answered {error}: {}",
            param("error_description").unwrap_or_default()
        )
        .into());
    }
    if param("state").as_deref() != Some(state.as_str()) || param("iss").as_deref() != Some(issuer.as_str()) {
        return Err(format!("the redirect's state or iss is not ours: {callback}").into());
    }
    let code = param("code").ok_or("no code in the redirect")?;

    // 4. The code, redeemed by the same key pair that pushed the request.
    let tokens: Value = http
        .post(&token)
        .header("DPoP", dpop.proof("POST", &token, None)?)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &client_key.assertion(&issuer)?),
        ])
        .send()
        .await?
        .json()
        .await?;
    let access_token = tokens["access_token"]
        .as_str()
        .ok_or(format!("/token refused: {tokens}"))?;
    println!("token_type: {}", tokens["token_type"]);
    println!("access token claims: {:#}", payload(access_token)?);
    println!(
        "ID token claims: {:#}",
        payload(tokens["id_token"].as_str().unwrap_or_default())?
    );

    // 5. The access token is worth nothing without a fresh proof of the DPoP key.
    let me: Value = http
        .get(&userinfo)
        .header("Authorization", format!("DPoP {access_token}"))
        .header("DPoP", dpop.proof("GET", &userinfo, Some(access_token))?)
        .send()
        .await?
        .json()
        .await?;
    println!("userinfo: {me:#}");
    let bearer = http.get(&userinfo).bearer_auth(access_token).send().await?;
    println!(
        "the same token as a plain Bearer token: {} ({})",
        bearer.status(),
        bearer
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    );
    Ok(())
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client's own key: signs its assertions and request objects.
struct ClientKey {
    key: EncodingKey,
    kid: String,
}

impl ClientKey {
    /// Reads a private EC P-256 JWK (`d`, `x`, `y`).
    fn load(path: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let jwk: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let part = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap_or_default());
        let public = [vec![4u8], part("x")?, part("y")?].concat();
        let pair =
            EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &part("d")?, &public)
                .map_err(|e| format!("{path}: {e}"))?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|e| format!("{path}: {e}"))?;
        Ok(Self {
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            kid: jwk["kid"].as_str().unwrap_or_default().to_owned(),
        })
    }

    fn sign(&self, typ: &str, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }

    /// A one-time client assertion: `aud` the issuer, as FAPI 2.0 asks.
    fn assertion(&self, issuer: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jiff::Timestamp::now().as_second();
        self.sign(
            "JWT",
            &json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": issuer, "iat": now, "exp": now + 60, "jti": random(16)}),
        )
    }
}

/// The DPoP key this run made; its public half travels in every proof's header.
struct DpopKey {
    key: EncodingKey,
    jwk: Jwk,
}

impl DpopKey {
    fn generate() -> Result<Self, Box<dyn std::error::Error>> {
        let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?.to_pkcs8v1()?;
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
        Ok(Self { key, jwk })
    }

    /// A proof for one request: its method and URL, and `ath` when it carries a token.
    fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let mut claims = json!({"jti": random(16), "htm": htm, "htu": htu, "iat": jiff::Timestamp::now().as_second()});
        if let Some(token) = token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(sha256(token.as_bytes())));
        }
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// Serves one request on the redirect URI's address and returns its URL.
async fn wait_for_callback() -> Result<url::Url, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8402").await?;
    loop {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await??;
        let head = String::from_utf8_lossy(&buf[..n]);
        let Some(target) = head.split_whitespace().nth(1) else {
            continue;
        };
        if !target.starts_with("/callback") {
            socket
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        }
        let body = "Signed in: see the terminal.";
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(reply.as_bytes()).await?;
        return Ok(url::Url::parse(&format!("http://127.0.0.1:8402{target}"))?);
    }
}

fn payload(jwt: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let part = jwt.split('.').nth(1).ok_or("not a JWT")?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn random(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
    URL_SAFE_NO_PAD.encode(bytes)
}
