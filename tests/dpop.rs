//! DPoP (RFC 9449) over HTTP: proofs checked at /token for every grant (method, URL, age, one
//! use, algorithm, a public key), DPoP-bound access tokens (`token_type: DPoP`, `cnf.jkt`, in
//! introspection too), userinfo that takes a bound token only with a proof of its key, codes
//! bound with `dpop_jkt` (at /authorize or by a proof at /par), a public client's refresh
//! tokens bound to its key, and clients that require DPoP.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::browser::{Browser, param};
use support::keys::{TestKey, payload};
use support::{SCOPES, TestProvider, people};

const CB: &str = "https://shop.example.com/callback";
const SPA_CB: &str = "http://127.0.0.1:8401/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9rSgNRX2I2uiLbnhmJCdOtRuE";
const CHALLENGE: &str = "y1TGVqhhAAjGpE17KeQY7W3RetSoXnY1i4uUXGB6iqg";

const CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["https://shop.example.com/callback"]
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: spa, namespace: shop}
spec:
  clientType: public
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["http://127.0.0.1:8401/callback"]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: backend, namespace: shop}
spec:
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: strict, namespace: shop}
spec:
  scopes: [orders.read]
  dpop: Required
"#;

async fn provider() -> TestProvider {
    let people = people();
    TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", CLIENTS),
        ("people.yaml", &people),
    ])
    .await
}

/// A client_credentials request with `proof` (if any).
async fn client_token(p: &TestProvider, client: &str, proof: Option<&str>) -> (StatusCode, Value) {
    let (id, secret) = p.credentials("shop", client);
    let mut request = support::rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "orders.read")]);
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    let r = request.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_proof_binds_the_token_and_is_checked_for_method_url_age_and_one_use() {
    let p = provider().await;
    let key = TestKey::new();
    let token_url = format!("{}/token", p.url);
    let proof = key.proof("POST", &token_url, None);
    let (status, body) = client_token(&p, "backend", Some(&proof)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let at = body["access_token"].as_str().unwrap();
    assert_eq!(payload(at)["cnf"]["jkt"], key.jkt());

    // Introspection shows the binding.
    let (id, secret) = p.credentials("shop", "backend");
    let seen: Value = support::rp_http()
        .post(format!("{}/introspect", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["token_type"], "DPoP", "{seen}");
    assert_eq!(seen["cnf"]["jkt"], key.jkt());

    // Replayed, for another URL or method, too old, too far ahead: refused.
    let refused = [
        ("replayed", proof.clone()),
        ("another URL", key.proof("POST", &format!("{}/introspect", p.url), None)),
        ("another method", key.proof("GET", &token_url, None)),
        ("61 s old", key.proof_at("POST", &token_url, 61, None)),
        ("61 s ahead", key.proof_at("POST", &token_url, -61, None)),
        ("with ath", key.proof("POST", &token_url, Some("a-token"))),
    ];
    for (what, proof) in refused {
        let (status, body) = client_token(&p, "backend", Some(&proof)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
            "{what}: {body}"
        );
    }
    // A clock 10 s ahead is fine.
    let (status, body) = client_token(&p, "backend", Some(&key.proof_at("POST", &token_url, -10, None))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Without a proof the token is Bearer, unless the client requires DPoP.
    let (status, body) = client_token(&p, "backend", None).await;
    assert_eq!((status, body["token_type"].as_str()), (StatusCode::OK, Some("Bearer")));
    assert!(payload(body["access_token"].as_str().unwrap()).get("cnf").is_none());
    let (status, body) = client_token(&p, "strict", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
        "{body}"
    );
    let (status, body) = client_token(&p, "strict", Some(&key.proof("POST", &token_url, None))).await;
    assert_eq!(
        (status, body["token_type"].as_str()),
        (StatusCode::OK, Some("DPoP")),
        "{body}"
    );

    // Discovery lists the algorithms.
    let doc: Value = support::get_json(&format!("{}/.well-known/openid-configuration", p.url)).await;
    assert!(
        doc["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "ES256")
    );
}

#[tokio::test]
async fn proofs_with_a_private_key_a_symmetric_algorithm_or_a_bad_signature_are_refused() {
    let p = provider().await;
    let key = TestKey::new();
    let token_url = format!("{}/token", p.url);
    // A private member in the header's key.
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(key.jwk.clone());
    let claims = json!({"jti": "x1", "htm": "POST", "htu": token_url, "iat": jiff::Timestamp::now().as_second()});
    // Signed properly over a header whose key has a private member: only that is wrong.
    let mut h = serde_json::to_value(&header).unwrap();
    h["jwk"]["d"] = json!("c2VjcmV0");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.key, Algorithm::ES256).unwrap();
    let with_private = format!("{signing_input}.{signature}");
    // HS256 with a shared secret.
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("dpop+jwt".into());
    let symmetric = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(b"shared")).unwrap();
    // Another key's signature under this key's JWK.
    let other = TestKey::new();
    let forged = {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(key.jwk.clone());
        jsonwebtoken::encode(
            &header,
            &json!({"jti": "x2", "htm": "POST", "htu": token_url, "iat": jiff::Timestamp::now().as_second()}),
            &other.key,
        )
        .unwrap()
    };
    // typ is not dpop+jwt.
    let wrong_typ = {
        let mut header = Header::new(Algorithm::ES256);
        header.jwk = Some(key.jwk.clone());
        jsonwebtoken::encode(
            &header,
            &json!({"jti": "x3", "htm": "POST", "htu": token_url, "iat": jiff::Timestamp::now().as_second()}),
            &key.key,
        )
        .unwrap()
    };
    for (what, proof) in [
        ("private jwk", with_private),
        ("HS256", symmetric),
        ("forged", forged),
        ("typ", wrong_typ),
    ] {
        let (status, body) = client_token(&p, "backend", Some(&proof)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
            "{what}: {body}"
        );
    }
}

/// Signs alice in for `client` (`query` adds parameters to /authorize) and returns the code.
async fn code_for(p: &TestProvider, client_id: &str, redirect: &str, query: &str) -> String {
    let url = format!(
        "{}/authorize?client_id={client_id}&response_type=code&scope=openid+profile&redirect_uri={}&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256{query}",
        p.url,
        form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"))
}

async fn redeem(
    p: &TestProvider,
    client: (&str, Option<&str>),
    redirect: &str,
    code: &str,
    proof: Option<String>,
) -> (StatusCode, Value) {
    let mut request = support::rp_http().post(format!("{}/token", p.url));
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", VERIFIER),
    ];
    match client.1 {
        Some(secret) => request = request.basic_auth(client.0, Some(secret)),
        None => form.push(("client_id", client.0)),
    }
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    let r = request.form(&form).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn userinfo_takes_a_bound_token_only_with_a_proof_of_its_key() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "web");
    let key = TestKey::new();
    let token_url = format!("{}/token", p.url);
    let code = code_for(&p, &id, CB, "").await;
    let (status, tokens) = redeem(
        &p,
        (&id, Some(&secret)),
        CB,
        &code,
        Some(key.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "DPoP");
    let at = tokens["access_token"].as_str().unwrap();
    let userinfo = format!("{}/userinfo", p.url);
    let call = async |scheme: &str, proof: Option<String>| {
        let mut r = support::rp_http()
            .get(&userinfo)
            .header("Authorization", format!("{scheme} {at}"));
        if let Some(proof) = proof {
            r = r.header("DPoP", proof);
        }
        let r = r.send().await.unwrap();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status(), challenge)
    };
    // As Bearer: refused, and told to use DPoP.
    let (status, challenge) = call("Bearer", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().starts_with("DPoP "), "RFC 9449 §7.1");
    // DPoP without a proof, with another key's proof, with a proof for another token.
    assert_eq!(call("DPoP", None).await.0, StatusCode::UNAUTHORIZED);
    let other = TestKey::new();
    assert_eq!(
        call("DPoP", Some(other.proof("GET", &userinfo, Some(at)))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("DPoP", Some(key.proof("GET", &userinfo, Some("another")))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("DPoP", Some(key.proof("POST", &userinfo, Some(at)))).await.0,
        StatusCode::UNAUTHORIZED
    );
    // With a fresh proof of its key for this request and token: the person's claims.
    let (status, _) = call("DPoP", Some(key.proof("GET", &userinfo, Some(at)))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_code_bound_with_dpop_jkt_is_redeemed_only_with_that_key() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "web");
    let token_url = format!("{}/token", p.url);
    let key = TestKey::new();
    let bound = format!("&dpop_jkt={}", key.jkt());
    // Without a proof, or with another key: refused.
    let code = code_for(&p, &id, CB, &bound).await;
    let (status, body) = redeem(&p, (&id, Some(&secret)), CB, &code, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    // The refused attempt did not spend the code: with the key, it still works.
    let (status, body) = redeem(
        &p,
        (&id, Some(&secret)),
        CB,
        &code,
        Some(key.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = code_for(&p, &id, CB, &bound).await;
    let other = TestKey::new();
    let (status, body) = redeem(
        &p,
        (&id, Some(&secret)),
        CB,
        &code,
        Some(other.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    // With the key: tokens bound to it.
    let code = code_for(&p, &id, CB, &bound).await;
    let (status, body) = redeem(
        &p,
        (&id, Some(&secret)),
        CB,
        &code,
        Some(key.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(payload(body["access_token"].as_str().unwrap())["cnf"]["jkt"], key.jkt());

    // A proof sent with a pushed request binds its code the same way.
    let par_url = format!("{}/par", p.url);
    let pushed: Value = support::rp_http()
        .post(&par_url)
        .basic_auth(&id, Some(&secret))
        .header("DPoP", key.proof("POST", &par_url, None))
        .form(&[
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/authorize?client_id={id}&request_uri={}",
        p.url,
        form_urlencoded::byte_serialize(pushed["request_uri"].as_str().unwrap().as_bytes()).collect::<String>()
    );
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    let code = param(&back, "code").unwrap();
    let (status, body) = redeem(
        &p,
        (&id, Some(&secret)),
        CB,
        &code,
        Some(other.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn a_public_clients_refresh_token_is_bound_to_its_key() {
    let p = provider().await;
    let spa = "shop.spa".to_string();
    let token_url = format!("{}/token", p.url);
    let key = TestKey::new();
    let code = code_for(&p, &spa, SPA_CB, "").await;
    let (status, tokens) = redeem(
        &p,
        (&spa, None),
        SPA_CB,
        &code,
        Some(key.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let refresh_with = async |token: &str, proof: Option<String>| {
        let mut r = support::rp_http().post(&token_url).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", spa.as_str()),
        ]);
        if let Some(proof) = proof {
            r = r.header("DPoP", proof);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    // The client, with its key: the next tokens, bound to it.
    let (status, body) = refresh_with(&refresh, Some(key.proof("POST", &token_url, None))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(payload(body["access_token"].as_str().unwrap())["cnf"]["jkt"], key.jkt());
    let next = body["refresh_token"].as_str().unwrap().to_string();
    // The same request replayed, proof and all, is refused before it touches the family.
    let captured = key.proof("POST", &token_url, None);
    let (status, body) = refresh_with(&next, Some(captured.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = body["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = refresh_with(&next, Some(captured)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
        "a spent proof is refused first: {body}"
    );
    let (status, body) = refresh_with(&after, Some(key.proof("POST", &token_url, None))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the family was not revoked by the replay: {body}"
    );
    let next = body["refresh_token"].as_str().unwrap().to_string();
    // A thief with the refresh token and no key, or another key, gets no token, and the
    // attempt does not spend it: the client refreshes on with its key.
    let (status, body) = refresh_with(&next, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = refresh_with(&next, Some(TestKey::new().proof("POST", &token_url, None))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = refresh_with(&next, Some(key.proof("POST", &token_url, None))).await;
    assert_eq!(status, StatusCode::OK, "the thief's attempts spent nothing: {body}");
    let code = code_for(&p, &spa, SPA_CB, "").await;
    let (_, tokens) = redeem(
        &p,
        (&spa, None),
        SPA_CB,
        &code,
        Some(key.proof("POST", &token_url, None)),
    )
    .await;
    let other = TestKey::new();
    let (status, body) = refresh_with(
        tokens["refresh_token"].as_str().unwrap(),
        Some(other.proof("POST", &token_url, None)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn a_refused_request_spends_no_proof_and_a_proof_echoes_none_of_its_words() {
    let p = provider().await;
    let key = TestKey::new();
    let token_url = format!("{}/token", p.url);
    // A stranger's bad refresh token with a proof: refused, and nothing is stored for it.
    let proof = key.proof("POST", &token_url, None);
    let r = support::rp_http()
        .post(&token_url)
        .header("DPoP", &proof)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "shop.spa"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (status, body) = client_token(&p, "backend", Some(&proof)).await;
    assert_eq!(status, StatusCode::OK, "the proof was not spent by the refusal: {body}");
    // htm is the caller's text: the refusal does not repeat it.
    let (_, body) = client_token(
        &p,
        "backend",
        Some(&key.proof("GET password=hunter2", &token_url, None)),
    )
    .await;
    assert!(!body.to_string().contains("hunter2"), "{body}");
    // An iat far in the past does not overflow anything.
    let far = key.proof_at("POST", &token_url, i64::MAX / 2, None);
    let (status, body) = client_token(&p, "backend", Some(&far)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof"))
    );
}

/// With `--dpop-nonce`, every endpoint that reads proofs asks for the server's nonce (RFC 9449
/// §8): a proof without one, or with one kauth never made, is answered `use_dpop_nonce` with
/// the nonce to use in `DPoP-Nonce` (400 at /token and /par, a 401 DPoP challenge at
/// /userinfo), and the retry with it succeeds.
#[tokio::test]
async fn with_server_nonces_a_proof_must_carry_a_nonce_kauth_handed_out() {
    let people = people();
    let opts = kauth::provider::serve::ServeOptions {
        dpop_nonce: true,
        ..Default::default()
    };
    let p = TestProvider::start_with_options(
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", CLIENTS),
            ("people.yaml", &people),
        ],
        opts,
    )
    .await;
    let key = TestKey::new();
    let (id, secret) = p.credentials("shop", "backend");
    let token_url = format!("{}/token", p.url);
    let token = async |proof: String| {
        let r = support::rp_http()
            .post(&token_url)
            .basic_auth(&id, Some(&secret))
            .header("DPoP", proof)
            .form(&[("grant_type", "client_credentials"), ("scope", "orders.read")])
            .send()
            .await
            .unwrap();
        let nonce = r.headers().get("dpop-nonce").map(|v| v.to_str().unwrap().to_owned());
        (r.status(), nonce, r.json::<Value>().await.unwrap())
    };
    let (status, nonce, body) = token(key.proof("POST", &token_url, None)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("use_dpop_nonce")),
        "{body}"
    );
    let nonce = nonce.expect("the refusal hands out the nonce");
    let made_up = URL_SAFE_NO_PAD.encode([7u8; 24]);
    let (status, _, body) = token(key.proof_with_nonce("POST", &token_url, None, &made_up)).await;
    assert_eq!(
        body["error"], "use_dpop_nonce",
        "a nonce kauth never made: {status} {body}"
    );
    let (status, again, body) = token(key.proof_with_nonce("POST", &token_url, None, &nonce)).await;
    assert_eq!(
        (status, body["token_type"].as_str()),
        (StatusCode::OK, Some("DPoP")),
        "{body}"
    );
    assert!(again.is_some(), "a success hands out the nonce too");
    // Other rules still hold with a good nonce: a replay is refused for its jti.
    let proof = key.proof_with_nonce("POST", &token_url, None, &nonce);
    assert_eq!(token(proof.clone()).await.0, StatusCode::OK);
    assert_eq!(token(proof).await.2["error"], "invalid_dpop_proof");

    // /par asks for it too.
    let (web, web_secret) = p.credentials("shop", "web");
    let par = support::rp_http()
        .post(format!("{}/par", p.url))
        .basic_auth(&web, Some(&web_secret))
        .header("DPoP", key.proof("POST", &format!("{}/par", p.url), None))
        .form(&[
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert!(par.headers().contains_key("dpop-nonce"));
    assert_eq!(par.json::<Value>().await.unwrap()["error"], "use_dpop_nonce");

    // A person's bound token at /userinfo: a 401 DPoP challenge naming use_dpop_nonce first.
    let code = code_for(&p, &web, CB, "").await;
    let proof = key.proof_with_nonce("POST", &token_url, None, &nonce);
    let (status, tokens) = redeem(&p, (&web, Some(&web_secret)), CB, &code, Some(proof)).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let at = tokens["access_token"].as_str().unwrap();
    let userinfo = format!("{}/userinfo", p.url);
    let call = async |proof: String| {
        support::rp_http()
            .get(&userinfo)
            .header("Authorization", format!("DPoP {at}"))
            .header("DPoP", proof)
            .send()
            .await
            .unwrap()
    };
    let refused = call(key.proof("GET", &userinfo, Some(at))).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let nonce = refused.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(
        call(key.proof_with_nonce("GET", &userinfo, Some(at), &nonce))
            .await
            .status(),
        StatusCode::OK
    );
}
