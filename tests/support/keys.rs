//! A test client's own key pair: DPoP proofs (RFC 9449) and client assertions
//! (`private_key_jwt`, RFC 7523) signed with it, and its public JWK as a manifest writes it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kauth::crd::KeyAlgorithm;
use serde_json::{Value, json};

/// A key pair (ES256 unless made otherwise).
pub struct TestKey {
    pub key: EncodingKey,
    pub jwk: Jwk,
    pub alg: Algorithm,
}

impl TestKey {
    pub fn new() -> Self {
        Self::of(KeyAlgorithm::ES256)
    }

    /// A key for `alg`.
    pub fn of(alg: KeyAlgorithm) -> Self {
        let stored = kauth::keys::generate_key(alg, jiff::Timestamp::now()).unwrap();
        Self {
            key: stored.encoding_key().unwrap(),
            jwk: stored.public_jwk().unwrap(),
            alg: kauth::keys::jose_algorithm(alg),
        }
    }

    /// Its RFC 7638 thumbprint (`jkt`).
    pub fn jkt(&self) -> String {
        self.jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
    }

    pub fn kid(&self) -> String {
        self.jwk.common.key_id.clone().unwrap()
    }

    /// The public key as an OAuthClient's `spec.jwks` holds it.
    pub fn manifest_jwk(&self) -> Value {
        let mut v = serde_json::to_value(&self.jwk).unwrap();
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| ["kty", "crv", "x", "y", "kid"].contains(&k.as_str()));
        v
    }

    /// A DPoP proof for `htm` at `htu`, issued `age` seconds ago (negative: ahead), with `ath`
    /// for `token` when given.
    pub fn proof_at(&self, htm: &str, htu: &str, age: i64, token: Option<&str>) -> String {
        self.signed_proof(htm, htu, age, token, None)
    }

    /// A fresh DPoP proof carrying the server's `nonce` (RFC 9449 §8).
    pub fn proof_with_nonce(&self, htm: &str, htu: &str, token: Option<&str>, nonce: &str) -> String {
        self.signed_proof(htm, htu, 0, token, Some(nonce))
    }

    fn signed_proof(&self, htm: &str, htu: &str, age: i64, token: Option<&str>, nonce: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let mut claims = json!({
            "jti": kauth::tokens::new_jti(),
            "htm": htm,
            "htu": htu,
            "iat": jiff::Timestamp::now().as_second() - age,
        });
        if let Some(token) = token {
            let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(hash));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    /// A fresh DPoP proof.
    pub fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> String {
        self.proof_at(htm, htu, 0, token)
    }

    /// A client assertion for `client_id` with `more` claims over the usual ones.
    pub fn assertion(&self, client_id: &str, aud: Value, more: Value) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = json!({
            "iss": client_id, "sub": client_id, "aud": aud,
            "jti": kauth::tokens::new_jti(), "iat": now, "exp": now + 60,
        });
        for (k, v) in more.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

/// The payload of a JWT, unverified.
pub fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}
