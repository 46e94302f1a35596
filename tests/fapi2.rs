//! `spec.profile: FAPI2` (the FAPI 2.0 Security Profile) for one client: a spec that breaks a
//! rule is refused naming it, and so is every request that does; a client that keeps the
//! rules signs a person in with a pushed request, PKCE, `private_key_jwt` and DPoP-bound
//! tokens, and gets `iss` in the authorization response and an ES256 ID token.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::browser::{Browser, param};
use support::keys::{TestKey, payload};
use support::{SCOPES, TestProvider, people};

const CB: &str = "https://bank.example.com/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9rSgNRX2I2uiLbnhmJCdOtRuE";
const CHALLENGE: &str = "y1TGVqhhAAjGpE17KeQY7W3RetSoXnY1i4uUXGB6iqg";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ID: &str = "shop.bank";

fn spec(more: Value) -> kauth::crd::OAuthClientSpec {
    let mut spec = json!({
        "profile": "FAPI2",
        "grantTypes": ["authorization_code", "refresh_token"],
        "redirectUris": [CB],
        "jwks": {"keys": [TestKey::new().manifest_jwk()]},
    });
    for (k, v) in more.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec.as_object_mut().unwrap().retain(|_, v| !v.is_null());
    serde_json::from_value(spec).unwrap()
}

#[test]
fn a_spec_that_breaks_a_rule_is_refused_naming_it() {
    let ok = kauth::validation::validate_client("bank", &spec(json!({}))).unwrap();
    assert!(ok.fapi2 && ok.require_par && ok.require_dpop);
    assert_eq!(
        ok.id_token_alg,
        kauth::crd::KeyAlgorithm::ES256,
        "ES256 by default, not RS256"
    );
    let broken = [
        ("public", json!({"clientType": "public", "jwks": null})),
        ("a secret", json!({"jwks": null})),
        ("RS256 ID tokens", json!({"idTokenSigningAlg": "RS256"})),
        ("bearer tokens", json!({"dpop": "Optional"})),
        (
            "the device grant",
            json!({"grantTypes": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"]}),
        ),
    ];
    for (what, more) in broken {
        let errors = kauth::validation::validate_client("bank", &spec(more)).unwrap_err();
        let text = kauth::validation::describe(&errors);
        assert!(
            text.contains("spec.profile FAPI2") && text.contains("FAPI 2.0 §"),
            "{what}: {text}"
        );
    }
}

async fn provider(key: &TestKey) -> TestProvider {
    let clients = format!(
        r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: bank, namespace: shop}}
spec:
  profile: FAPI2
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["{CB}"]
  scopes: [orders.read]
  jwks: {{keys: [{jwk}]}}
"#,
        jwk = key.manifest_jwk()
    );
    let people = people();
    TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", &clients),
        ("people.yaml", &people),
    ])
    .await
}

#[tokio::test]
async fn every_request_that_breaks_a_rule_is_refused_and_one_that_keeps_them_signs_in() {
    let client_key = TestKey::new();
    let dpop_key = TestKey::new();
    let p = provider(&client_key).await;
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let (par_url, token_url) = (format!("{}/par", p.url), format!("{}/token", p.url));
    let assertion = || client_key.assertion(ID, json!(p.url), json!({}));

    // A plain request: refused, naming the rule.
    let plain = format!(
        "{}/authorize?client_id={ID}&response_type=code&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let step = Browser::new().get(&plain).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert!(param(&back, "error_description").unwrap().contains("FAPI2"), "{back}");

    // Pushed without PKCE: refused, naming the rule.
    let push = async |form: &[(&str, &str)], proof: Option<String>| {
        let mut r = support::rp_http().post(&par_url).form(form);
        if let Some(proof) = proof {
            r = r.header("DPoP", proof);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let a = assertion();
    let (status, body) = push(
        &[
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("scope", "openid orders.read"),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("FAPI2"), "{body}");

    // Kept: pushed with PKCE and a DPoP proof binding the code.
    let a = assertion();
    let (status, body) = push(
        &[
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("scope", "openid orders.read"),
            ("state", "s1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
        Some(dpop_key.proof("POST", &par_url, None)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = format!(
        "{}/authorize?client_id={ID}&request_uri={}",
        p.url,
        form_urlencoded::byte_serialize(body["request_uri"].as_str().unwrap().as_bytes()).collect::<String>()
    );
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    assert_eq!(
        param(&back, "iss").as_deref(),
        Some(p.url.as_str()),
        "iss in the response"
    );
    let code = param(&back, "code").unwrap();

    let redeem = async |proof: Option<String>| {
        let a = assertion();
        let mut r = support::rp_http().post(&token_url).form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
            ("code_verifier", VERIFIER),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ]);
        if let Some(proof) = proof {
            r = r.header("DPoP", proof);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    // Without a proof: refused before the code is touched, naming the rule.
    let (status, body) = redeem(None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("FAPI2"), "{body}");
    let (status, tokens) = redeem(Some(dpop_key.proof("POST", &token_url, None))).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "DPoP");
    assert_eq!(
        payload(tokens["access_token"].as_str().unwrap())["cnf"]["jkt"],
        dpop_key.jkt()
    );
    let id_token = tokens["id_token"].as_str().unwrap();
    let header: Value = {
        use base64::Engine;
        let part = id_token.split('.').next().unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(header["alg"], "ES256");

    // Its assertions name the issuer alone, as a string; its proofs are not RS256.
    for aud in [
        json!(format!("{}/token", p.url)),
        json!([p.url, "https://other.example.com"]),
    ] {
        let r = support::rp_http()
            .post(&token_url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_assertion_type", ASSERTION_TYPE),
                (
                    "client_assertion",
                    client_key.assertion(ID, aud.clone(), json!({})).as_str(),
                ),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "aud {aud}");
    }
    let rsa = TestKey::of(kauth::crd::KeyAlgorithm::RS256);
    let a = assertion();
    let r = support::rp_http()
        .post(&token_url)
        .header("DPoP", rsa.proof("POST", &token_url, None))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(body["error_description"].as_str().unwrap().contains("RS256"), "{body}");

    // A client secret is no way in for this client.
    let r = support::rp_http()
        .post(&token_url)
        .basic_auth(ID, Some("anything"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
