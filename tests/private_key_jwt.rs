//! `private_key_jwt` (RFC 7523 §2.2) over HTTP: an OAuthClient registers its public keys
//! inline or at a `jwksUri`, and authenticates with assertions signed by the private ones:
//! `aud` the issuer, `iss` = `sub` = its client id, a `jti` used once, a short `exp`, an
//! accepted algorithm, and only its own keys. A `jwksUri` is fetched as a team-written
//! address: refused on internal addresses unless the platform allows the network.

mod support;

use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kauth::provider::serve::ServeOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::keys::TestKey;
use support::{SCOPES, TestProvider};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn clients(inline: &TestKey, uri: &str) -> String {
    format!(
        r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: signer, namespace: shop}}
spec:
  scopes: [orders.read]
  jwks:
    keys: [{inline}]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: published, namespace: shop}}
spec:
  scopes: [orders.read]
  jwksUri: {uri}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: backend, namespace: shop}}
spec:
  scopes: [orders.read]
"#,
        inline = inline.manifest_jwk()
    )
}

/// A JWKS server on 127.0.0.1 whose keys a test can change (none: it answers 500); counts
/// its fetches.
async fn jwks_server(keys: Arc<Mutex<Vec<Value>>>, fetches: Arc<Mutex<u32>>) -> String {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (keys, fetches) = (keys.clone(), fetches.clone());
            async move {
                *fetches.lock().unwrap() += 1;
                let keys = keys.lock().unwrap().clone();
                // No keys: the server is failing.
                if keys.is_empty() {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                axum::Json(json!({ "keys": keys })).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/jwks", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn token(p: &TestProvider, assertion: &str, client_id: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("scope", "orders.read"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    if let Some(id) = client_id {
        form.push(("client_id", id));
    }
    let r = support::rp_http()
        .post(format!("{}/token", p.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn start(inline: &TestKey, uri: &str, opts: ServeOptions) -> TestProvider {
    let clients = clients(inline, uri);
    TestProvider::start_with_options(&[("scopes.yaml", SCOPES), ("clients.yaml", &clients)], opts).await
}

fn allowing_loopback() -> ServeOptions {
    ServeOptions {
        outbound_allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..ServeOptions::default()
    }
}

#[tokio::test]
async fn an_inline_key_authenticates_its_client_once_per_assertion() {
    let key = TestKey::new();
    let p = start(&key, "https://keys.example.com/jwks", ServeOptions::default()).await;
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let id = "shop.signer";
    let issuer = json!(p.url);

    let assertion = key.assertion(id, issuer.clone(), json!({}));
    let (status, body) = token(&p, &assertion, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    // The same assertion again: refused (jti).
    let (status, body) = token(&p, &assertion, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{body}"
    );
    // aud as an array holding the issuer; the token endpoint's URL (accepted unless strict).
    let (status, body) = token(
        &p,
        &key.assertion(id, json!([p.url, "https://other"]), json!({})),
        Some(id),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = token(
        &p,
        &key.assertion(id, json!(format!("{}/token", p.url)), json!({})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let now = jiff::Timestamp::now().as_second();
    let other = TestKey::new();
    let refused = [
        (
            "another audience",
            key.assertion(id, json!("https://elsewhere.example.com"), json!({})),
        ),
        ("expired", key.assertion(id, issuer.clone(), json!({"exp": now - 5}))),
        (
            "an hour long",
            key.assertion(id, issuer.clone(), json!({"exp": now + 3600})),
        ),
        ("no jti", key.assertion(id, issuer.clone(), json!({"jti": ""}))),
        (
            "sub differs",
            key.assertion(id, issuer.clone(), json!({"sub": "shop.backend"})),
        ),
        ("another key", other.assertion(id, issuer.clone(), json!({}))),
        ("HS256", {
            let claims = json!({"iss": id, "sub": id, "aud": p.url, "jti": "h", "exp": now + 60});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"x")).unwrap()
        }),
    ];
    for (what, assertion) in refused {
        let (status, body) = token(&p, &assertion, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{what}: {body}"
        );
    }
    // client_id naming another client than the assertion.
    let (status, _) = token(&p, &key.assertion(id, issuer.clone(), json!({})), Some("shop.backend")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A secret-holding client cannot be impersonated with an assertion naming it.
    let (status, _) = token(&p, &other.assertion("shop.backend", issuer.clone(), json!({})), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nor can the keys client use a secret (it has none; any secret fails alike).
    let r = support::rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(id, Some("guess"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Discovery lists the method and the algorithms.
    let doc: Value = support::get_json(&format!("{}/.well-known/oauth-authorization-server", p.url)).await;
    assert!(
        doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
    assert!(
        doc["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
}

#[tokio::test]
async fn the_strict_audience_is_the_issuer_only() {
    let key = TestKey::new();
    let opts = ServeOptions {
        strict_assertion_audience: true,
        ..ServeOptions::default()
    };
    let p = start(&key, "https://keys.example.com/jwks", opts).await;
    let id = "shop.signer";
    let (status, _) = token(
        &p,
        &key.assertion(id, json!(format!("{}/token", p.url)), json!({})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = token(&p, &key.assertion(id, json!(p.url), json!({})), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_jwks_uri_is_fetched_cached_refetched_for_a_new_kid_and_kept_off_internal_addresses() {
    let first = TestKey::new();
    let keys = Arc::new(Mutex::new(vec![first.manifest_jwk()]));
    let fetches = Arc::new(Mutex::new(0));
    let uri = jwks_server(keys.clone(), fetches.clone()).await;
    let id = "shop.published";

    // Without the platform's leave, a loopback jwksUri is never called.
    let guarded = start(&TestKey::new(), &uri, ServeOptions::default()).await;
    let (status, body) = token(&guarded, &first.assertion(id, json!(guarded.url), json!({})), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "the refusal names no address: {body}"
    );
    assert_eq!(*fetches.lock().unwrap(), 0);

    let p = start(&TestKey::new(), &uri, allowing_loopback()).await;
    for _ in 0..3 {
        let (status, body) = token(&p, &first.assertion(id, json!(p.url), json!({})), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(*fetches.lock().unwrap(), 1, "cached");
    // The client rotates: a new kid makes kauth fetch again (once the cache is ten seconds
    // old; a test cannot wait, so the new key is published before the first use here).
    let second = TestKey::new();
    keys.lock().unwrap().push(second.manifest_jwk());
    let p2 = start(&TestKey::new(), &uri, allowing_loopback()).await;
    let (status, body) = token(&p2, &first.assertion(id, json!(p2.url), json!({})), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = token(&p2, &second.assertion(id, json!(p2.url), json!({})), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A key the document does not hold is refused, and does not make kauth fetch on every try.
    let before = *fetches.lock().unwrap();
    for _ in 0..5 {
        let (status, _) = token(&p2, &TestKey::new().assertion(id, json!(p2.url), json!({})), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(*fetches.lock().unwrap() - before <= 1, "unknown kids are rate-limited");
}

#[test]
fn keys_with_a_private_part_or_with_a_secret_are_refused_by_validation() {
    let key = TestKey::new();
    let mut private = key.manifest_jwk();
    private["d"] = json!("c2VjcmV0");
    let spec: kauth::crd::OAuthClientSpec = serde_json::from_value(json!({
        "scopes": ["orders.read"],
        "jwks": {"keys": [key.manifest_jwk()]},
        "secret": {"name": "x"}
    }))
    .unwrap();
    let errors = kauth::validation::validate_client("c", &spec).unwrap_err();
    assert!(
        kauth::validation::describe(&errors).contains("has no secret"),
        "{errors:?}"
    );
    // The schema has no `d`: a private member is not even kept (and a fetched document with
    // one is refused whole, see client_keys' tests).
    let spec: Result<kauth::crd::OAuthClientSpec, _> = serde_json::from_value(json!({
        "jwks": {"keys": [private]}, "tokenEndpointAuthMethod": "client_secret_basic"
    }));
    let errors = kauth::validation::validate_client("c", &spec.unwrap()).unwrap_err();
    assert!(
        kauth::validation::describe(&errors).contains("private_key_jwt"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_failing_or_cold_jwks_uri_is_not_fetched_per_request() {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let fetches = Arc::new(Mutex::new(0));
    let uri = jwks_server(keys.clone(), fetches.clone()).await;
    let id = "shop.published";
    let p = start(&TestKey::new(), &uri, allowing_loopback()).await;
    // A failing server: anyone naming the client gets it called once per ten seconds at most.
    for _ in 0..20 {
        let (status, _) = token(&p, &TestKey::new().assertion(id, json!(p.url), json!({})), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        *fetches.lock().unwrap() <= 2,
        "{} fetches (a failed attempt is retried once)",
        fetches.lock().unwrap()
    );
    // A cold cache under a burst: one fetch for all of it.
    let key = TestKey::new();
    keys.lock().unwrap().push(key.manifest_jwk());
    let p2 = start(&TestKey::new(), &uri, allowing_loopback()).await;
    let before = *fetches.lock().unwrap();
    let burst = (0..30).map(|_| {
        let assertion = key.assertion(id, json!(p2.url), json!({}));
        let p2 = &p2;
        async move { token(p2, &assertion, None).await.0 }
    });
    let statuses = futures::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(*fetches.lock().unwrap() - before, 1, "one fetch for the burst");
}
