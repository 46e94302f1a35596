//! Signed request objects (RFC 9101) pushed to /par: the parameters as claims signed by one of
//! the client's keys stand for the whole request; unsigned, foreign-signed, mis-addressed or
//! another client's objects are refused; a client that must sign cannot push plain parameters.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::browser::{Browser, param};
use support::keys::TestKey;
use support::{SCOPES, TestProvider, people};

const CB: &str = "https://signed.example.com/callback";
const CHALLENGE: &str = "y1TGVqhhAAjGpE17KeQY7W3RetSoXnY1i4uUXGB6iqg";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ID: &str = "shop.signed";

/// A request object for `ID` with `params` (and `more` over the JWT claims), signed by `key`.
fn object(key: &TestKey, aud: &str, params: Value) -> String {
    let now = jiff::Timestamp::now().as_second();
    let mut claims = json!({"iss": ID, "aud": aud, "exp": now + 60, "iat": now, "client_id": ID});
    for (k, v) in params.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid());
    jsonwebtoken::encode(&header, &claims, &key.key).unwrap()
}

fn code_params() -> Value {
    json!({
        "response_type": "code", "redirect_uri": CB, "scope": "openid",
        "state": "signed-state", "code_challenge": CHALLENGE, "code_challenge_method": "S256",
    })
}

#[tokio::test]
async fn only_a_request_object_signed_by_the_client_is_pushed() {
    let key = TestKey::new();
    let clients = format!(
        r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: signed, namespace: shop}}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["{CB}"]
  requireSignedRequestObject: true
  jwks: {{keys: [{jwk}]}}
"#,
        jwk = key.manifest_jwk()
    );
    let people = people();
    let p = TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", &clients),
        ("people.yaml", &people),
    ])
    .await;
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let par_url = format!("{}/par", p.url);
    let push = async |extra: &[(&str, &str)]| {
        let assertion = key.assertion(ID, json!(p.url), json!({}));
        let mut form = vec![
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        form.extend_from_slice(extra);
        let r = support::rp_http().post(&par_url).form(&form).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };

    // Plain parameters from a client that must sign: refused.
    let (status, body) = push(&[
        ("response_type", "code"),
        ("redirect_uri", CB),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ])
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request_object")),
        "{body}"
    );

    let unsigned = {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = code_params();
        claims["iss"] = json!(ID);
        claims["aud"] = json!(p.url);
        claims["exp"] = json!(now + 60);
        claims["client_id"] = json!(ID);
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        )
    };
    let refused = [
        ("unsigned", unsigned),
        ("another key", object(&TestKey::new(), &p.url, code_params())),
        (
            "another audience",
            object(&key, "https://elsewhere.example.com", code_params()),
        ),
        (
            "another client_id",
            object(
                &key,
                &p.url,
                json!({"client_id": "shop.other", "response_type": "code"}),
            ),
        ),
        (
            "an hour and more",
            object(&key, &p.url, json!({"exp": jiff::Timestamp::now().as_second() + 7200})),
        ),
        (
            "years ahead, as a float",
            object(
                &key,
                &p.url,
                json!({"exp": (jiff::Timestamp::now().as_second() + 315_360_000) as f64 + 0.5}),
            ),
        ),
    ];
    for (what, jwt) in refused {
        let (status, body) = push(&[("request", &jwt)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request_object")),
            "{what}: {body}"
        );
    }

    // Signed: the object's parameters are the request; the form's beside it are not.
    let jwt = object(&key, &p.url, code_params());
    let (status, body) = push(&[
        ("request", &jwt),
        ("state", "from-the-form"),
        ("redirect_uri", "https://evil.example.com/"),
    ])
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = format!(
        "{}/authorize?client_id={ID}&request_uri={}",
        p.url,
        form_urlencoded::byte_serialize(body["request_uri"].as_str().unwrap().as_bytes()).collect::<String>()
    );
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    assert!(back.as_str().starts_with(CB), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("signed-state"));
    assert!(param(&back, "code").is_some());

    let doc: Value = support::get_json(&format!("{}/.well-known/openid-configuration", p.url)).await;
    assert!(
        doc["request_object_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
}
