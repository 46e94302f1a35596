//! A client's own public keys for `private_key_jwt` (RFC 7523 §2.2): the keys an OAuthClient
//! registers inline (`spec.jwks`) or publishes at its `jwksUri`, checked the same way either
//! way: public members only, EC P-256, Ed25519 or RSA of at least 2048 bits, and an algorithm
//! kauth accepts for client assertions.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, OctetKeyPairType};

use crate::crd::{ClientJwk, ClientJwks};

/// The algorithms of client assertions kauth accepts (the FAPI 2.0 set: no RS256, no HMAC).
pub const ASSERTION_ALGORITHMS: &[&str] = &["PS256", "ES256", "EdDSA"];

/// Longest member of a fetched key (base64url of an 8192-bit RSA modulus).
const MAX_MEMBER_LEN: usize = 1366;

/// Most keys read from a `jwksUri` (more are ignored, as are unusable ones).
pub const MAX_FETCHED_KEYS: usize = 32;

/// Where a client's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKeys {
    /// Registered inline.
    Inline(Vec<Jwk>),
    /// Published at this URL.
    Uri(String),
}

/// The inline keys of `spec.jwks`, each checked; the first problem refuses the set.
pub fn parse_inline(jwks: &ClientJwks) -> Result<Vec<Jwk>, String> {
    if jwks.keys.is_empty() {
        return Err("has no keys".into());
    }
    jwks.keys
        .iter()
        .enumerate()
        .map(|(i, key)| parse_one(key).map_err(|e| format!("keys[{i}]: {e}")))
        .collect()
}

fn parse_one(key: &ClientJwk) -> Result<Jwk, String> {
    let value = serde_json::to_value(key).map_err(|e| e.to_string())?;
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "is not a JWK kauth can read".to_string())?;
    usable(&jwk)?;
    Ok(jwk)
}

/// The usable keys of a JWK Set document (a `jwksUri`'s answer): unusable ones are skipped,
/// private members refuse the whole document (its publisher leaks keys).
pub fn parse_document(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| "is not JSON".to_string())?;
    let keys = doc["keys"].as_array().ok_or("has no keys array")?;
    if keys.iter().any(has_private_member) {
        return Err("publishes a private key".into());
    }
    // Members no larger than a registered key's may be (an 8192-bit RSA modulus).
    let small = |k: &&serde_json::Value| {
        k.as_object()
            .is_some_and(|o| o.values().all(|v| v.as_str().is_none_or(|s| s.len() <= MAX_MEMBER_LEN)))
    };
    Ok(keys
        .iter()
        .filter(small)
        .take(MAX_FETCHED_KEYS)
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| usable(k).is_ok())
        .collect())
}

/// True when a JWK (as JSON) has a private member: `d`, RSA's primes and factors, or `k`.
pub fn has_private_member(key: &serde_json::Value) -> bool {
    ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| key.get(m).is_some())
}

/// Whether a key may verify client assertions.
pub fn usable(jwk: &Jwk) -> Result<(), String> {
    if let Some(alg) = &jwk.common.key_algorithm {
        let name = format!("{alg:?}");
        if !ASSERTION_ALGORITHMS.contains(&name.as_str()) {
            return Err(format!(
                "alg {name} is not accepted (use one of {})",
                ASSERTION_ALGORITHMS.join(", ")
            ));
        }
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Ok(()),
        AlgorithmParameters::EllipticCurve(_) => Err("only the P-256 curve is accepted for EC keys".into()),
        AlgorithmParameters::OctetKeyPair(okp)
            if okp.key_type == OctetKeyPairType::OctetKeyPair && okp.curve == EllipticCurve::Ed25519 =>
        {
            Ok(())
        }
        AlgorithmParameters::OctetKeyPair(_) => Err("only Ed25519 is accepted for OKP keys".into()),
        // base64url: 4 characters per 3 bytes; 2048 bits are 256 bytes.
        AlgorithmParameters::RSA(rsa) if rsa.n.len() * 3 / 4 >= 256 => Ok(()),
        AlgorithmParameters::RSA(_) => Err("RSA keys must have at least 2048 bits".into()),
        AlgorithmParameters::OctetKey(_) => Err("symmetric keys cannot verify client assertions".into()),
        #[allow(unreachable_patterns)]
        _ => Err("this key type is not accepted".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec() -> ClientJwk {
        ClientJwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into()),
            y: Some("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into()),
            kid: Some("k1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn inline_keys_are_checked() {
        assert_eq!(parse_inline(&ClientJwks { keys: vec![ec()] }).unwrap().len(), 1);
        assert!(parse_inline(&ClientJwks { keys: vec![] }).is_err());
        let p384 = ClientJwk {
            crv: Some("P-384".into()),
            ..ec()
        };
        assert!(
            parse_inline(&ClientJwks { keys: vec![p384] })
                .unwrap_err()
                .contains("P-256")
        );
        let rs256 = ClientJwk {
            alg: Some("RS256".into()),
            ..ec()
        };
        assert!(
            parse_inline(&ClientJwks { keys: vec![rs256] })
                .unwrap_err()
                .contains("RS256")
        );
        let small_rsa = ClientJwk {
            kty: "RSA".into(),
            n: Some("AQAB".repeat(20)),
            e: Some("AQAB".into()),
            crv: None,
            x: None,
            y: None,
            ..Default::default()
        };
        assert!(
            parse_inline(&ClientJwks { keys: vec![small_rsa] })
                .unwrap_err()
                .contains("2048")
        );
    }

    #[test]
    fn a_published_set_with_a_private_key_is_refused_and_unusable_keys_are_skipped() {
        let good = serde_json::to_value(ec()).unwrap();
        let mut private = good.clone();
        private["d"] = "secret".into();
        let doc = |keys: Vec<serde_json::Value>| serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
        assert!(parse_document(&doc(vec![good.clone(), private])).is_err());
        let hmac = serde_json::json!({"kty": "oct", "k": "c2VjcmV0"});
        assert!(parse_document(&doc(vec![hmac])).is_err(), "a symmetric key is a secret");
        let mut p384 = good.clone();
        p384["crv"] = "P-384".into();
        assert_eq!(parse_document(&doc(vec![p384, good])).unwrap().len(), 1);
        assert!(parse_document(b"not json").is_err());
    }
}
