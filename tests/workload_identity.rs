//! HTTP tier for secretless clients: the real router on 127.0.0.1 with a ServiceAccount issuer
//! whose keys the test holds, so every edge of token validation can be exercised.

use std::path::Path;
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kauth::crd::KeyAlgorithm;
use kauth::issuer::Issuer;
use kauth::keys::{KeyRing, KeySet, StoredKey, generate_key};
use kauth::manifests::Manifests;
use kauth::metrics::Metrics;
use kauth::provider::{ProviderState, router};
use kauth::registry::{Registry, Snapshot};
use kauth::store::GrantStore;
use kauth::workload_identity::{
    JWT_BEARER_ASSERTION, JWT_TOKEN_TYPE, ServiceAccountTokens, StaticKeys, TOKEN_EXCHANGE_GRANT,
};
use serde_json::{Value, json};

const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const MANIFESTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: orders-read, namespace: orders}
spec: {value: orders.read, audience: "https://orders.example.com", grantedTo: {namespaces: [shop]}}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: backend, namespace: shop}
spec:
  serviceAccount: backend
  grantTypes: [client_credentials, "urn:ietf:params:oauth:grant-type:token-exchange"]
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: batch, namespace: shop}
spec:
  serviceAccount: batch
  scopes: [orders.read]
"#;

struct Setup {
    url: String,
    sa_key: StoredKey,
    _dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let mut m = Manifests::default();
    m.add_text(Path::new("t.yaml"), MANIFESTS);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let catalog = m.catalog(&Default::default(), Default::default());
    let signing = generate_key(KeyAlgorithm::ES256, Timestamp::from_second(0).unwrap()).unwrap();
    let (ring, _) = KeyRing::from_sets([&KeySet {
        keys: vec![signing],
        ..Default::default()
    }]);
    let registry = Registry::new();
    registry.publish(Snapshot::build(&catalog, &Snapshot::default(), |_, _, _| None, ring));

    let sa_key = generate_key(KeyAlgorithm::RS256, Timestamp::from_second(0).unwrap()).unwrap();
    let jwks = JwkSet {
        keys: vec![sa_key.public_jwk().unwrap()],
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tokens = ServiceAccountTokens::new(
        SA_ISSUER.into(),
        vec![url.clone(), format!("{url}/token")],
        Arc::new(StaticKeys(RwLock::new(jwks))),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = GrantStore::open_file(dir.path()).await.unwrap();
    let state = ProviderState::new(registry, Issuer::parse(&url).unwrap(), store, Arc::new(Metrics::new()))
        .await
        .unwrap()
        .with_service_accounts(Arc::new(tokens));
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Setup { url, sa_key, _dir: dir }
}

fn now() -> i64 {
    Timestamp::now().as_second()
}

/// A ServiceAccount token as the cluster would mint it, with overrides.
fn sa_token(key: &StoredKey, kid: Option<&str>, claims: Value) -> String {
    let mut base = json!({
        "iss": SA_ISSUER,
        "sub": "system:serviceaccount:shop:backend",
        "iat": now() - 10,
        "nbf": now() - 10,
        "exp": now() + 600,
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "backend"}},
    });
    for (k, v) in claims.as_object().unwrap() {
        base[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.unwrap_or(&key.kid).to_string());
    jsonwebtoken::encode(&header, &base, &key.encoding_key().unwrap()).unwrap()
}

async fn post(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{url}/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

async fn assertion(s: &Setup, token: &str) -> (u16, Value) {
    post(
        &s.url,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER_ASSERTION),
            ("client_assertion", token),
        ],
    )
    .await
}

fn claims_of(token: &str) -> Value {
    // The signature was made by the provider under test; only its claims matter here.
    jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims
}

#[tokio::test]
async fn the_bound_service_account_gets_a_token_without_any_secret() {
    let s = start().await;
    let token = sa_token(&s.sa_key, None, json!({"aud": [s.url]}));
    let (status, body) = assertion(&s, &token).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "client:shop.backend");
    assert_eq!(claims["aud"], "https://orders.example.com");
    // The token endpoint URL is an accepted audience too.
    let token = sa_token(&s.sa_key, None, json!({"aud": format!("{}/token", s.url)}));
    assert_eq!(assertion(&s, &token).await.0, 200);
}

#[tokio::test]
async fn every_wrong_token_is_invalid_client() {
    let s = start().await;
    let stranger = generate_key(KeyAlgorithm::RS256, Timestamp::from_second(0).unwrap()).unwrap();
    let aud = json!([s.url]);
    let cases = [
        (
            "another ServiceAccount",
            sa_token(
                &s.sa_key,
                None,
                json!({"aud": aud, "sub": "system:serviceaccount:shop:frontend"}),
            ),
        ),
        (
            "another namespace",
            sa_token(
                &s.sa_key,
                None,
                json!({"aud": aud, "sub": "system:serviceaccount:evil:backend"}),
            ),
        ),
        (
            "wrong audience",
            sa_token(&s.sa_key, None, json!({"aud": ["https://kubernetes.default.svc"]})),
        ),
        (
            "expired",
            sa_token(&s.sa_key, None, json!({"aud": aud, "exp": now() - 120})),
        ),
        (
            "not yet valid",
            sa_token(&s.sa_key, None, json!({"aud": aud, "nbf": now() + 120})),
        ),
        (
            "wrong issuer",
            sa_token(&s.sa_key, None, json!({"aud": aud, "iss": "https://other-cluster"})),
        ),
        ("unknown key", sa_token(&stranger, None, json!({"aud": aud}))),
        (
            "known kid, foreign key",
            sa_token(&stranger, Some(&s.sa_key.kid), json!({"aud": aud})),
        ),
        ("no kid", {
            let t = sa_token(&s.sa_key, None, json!({"aud": aud}));
            let parts: Vec<&str> = t.split('.').collect();
            use base64::Engine;
            let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
            format!("{h}.{}.{}", parts[1], parts[2])
        }),
        ("alg none", {
            let t = sa_token(&s.sa_key, None, json!({"aud": aud}));
            let parts: Vec<&str> = t.split('.').collect();
            use base64::Engine;
            let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, s.sa_key.kid));
            format!("{h}.{}.", parts[1])
        }),
        ("HS256 with the public key", {
            let public = serde_json::to_vec(&s.sa_key.public_jwk().unwrap()).unwrap();
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(s.sa_key.kid.clone());
            let claims = json!({"iss": SA_ISSUER, "sub": "system:serviceaccount:shop:backend", "aud": [s.url], "exp": now() + 600});
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&public)).unwrap()
        }),
    ];
    for (what, token) in cases {
        let (status, body) = assertion(&s, &token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {body}"
        );
    }
    // A wrong assertion type, and a secret for a secretless client.
    let good = sa_token(&s.sa_key, None, json!({"aud": aud}));
    let (status, body) = post(
        &s.url,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:other"),
            ("client_assertion", &good),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let res = reqwest::Client::new()
        .post(format!("{}/token", s.url))
        .basic_auth("shop.backend", Some("guess"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn exchange(s: &Setup, subject: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", subject),
        ("subject_token_type", JWT_TOKEN_TYPE),
    ];
    form.extend_from_slice(extra);
    post(&s.url, &form).await
}

#[tokio::test]
async fn token_exchange_issues_only_granted_audiences() {
    let s = start().await;
    let subject = sa_token(&s.sa_key, None, json!({"aud": [s.url]}));
    let (status, body) = exchange(&s, &subject, &[("audience", "https://orders.example.com")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "https://orders.example.com");
    assert_eq!(claims["scope"], "orders.read");

    let (status, body) = exchange(&s, &subject, &[("audience", "https://payments.example.com")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );

    // batch's ServiceAccount maps to a client that did not register the exchange grant.
    let batch = sa_token(
        &s.sa_key,
        None,
        json!({"aud": [s.url], "sub": "system:serviceaccount:shop:batch"}),
    );
    let (status, body) = exchange(&s, &batch, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );

    let (status, body) = post(
        &s.url,
        &[
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", &subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let expired = sa_token(&s.sa_key, None, json!({"aud": [s.url], "exp": now() - 120}));
    let (status, body) = exchange(&s, &expired, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}

#[tokio::test]
async fn discovery_advertises_secretless_support() {
    let s = start().await;
    let meta: Value = reqwest::get(format!("{}/.well-known/oauth-authorization-server", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(TOKEN_EXCHANGE_GRANT))
    );
}

/// `kauth login` in CI with a ServiceAccount token (issue 25): the token in a file (as a
/// projected volume holds it) is exchanged (RFC 8693) for the bound client's access token,
/// which is what kubectl presents; the file is read anew when a new token is needed, and a
/// token of another ServiceAccount gets nothing.
#[tokio::test]
async fn kauth_login_exchanges_a_service_account_token_for_the_clients_token() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, sa_token(&s.sa_key, None, json!({"aud": [s.url]}))).unwrap();
    let (issuer, cache) = (s.url.clone(), dir.path().join("cache"));
    let login = move |client: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kauth"))
            .arg("login")
            .arg(format!("--issuer={issuer}"))
            .arg(format!("--client-id={client}"))
            .arg(format!("--service-account-token-file={}", file.display()))
            .arg("--scope=orders.read")
            .arg(format!("--cache-dir={}", cache.display()))
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let login = login.clone();
        move || login("shop.backend")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let credential: Value = serde_json::from_slice(&out.stdout).unwrap();
    let claims = claims_of(credential["status"]["token"].as_str().unwrap());
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("client:shop.backend"), Some("https://orders.example.com"))
    );
    // The batch client's login with backend's token: refused, one line.
    let out = tokio::task::spawn_blocking(move || login("shop.batch")).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refused a token for shop.batch"), "{err}");
}
