//! Pushed authorization requests (RFC 9126) over HTTP: a client pushes its parameters to /par
//! and sends the browser with only `client_id` and the `request_uri`; the pushed request is
//! one-time, the pushing client's alone, and required where the client or the platform says.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::browser::{Browser, param};
use support::{SCOPES, TestProvider, people};

const CB: &str = "https://shop.example.com/callback";
// A PKCE pair: CHALLENGE is BASE64URL(SHA-256(VERIFIER)).
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9rSgNRX2I2uiLbnhmJCdOtRuE";
const CHALLENGE: &str = "y1TGVqhhAAjGpE17KeQY7W3RetSoXnY1i4uUXGB6iqg";

const CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://shop.example.com/callback"]
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: strict, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://shop.example.com/callback"]
  requirePushedAuthorizationRequests: true
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: evil}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://shop.example.com/callback"]
"#;

const FILES: &[(&str, &str)] = &[("scopes.yaml", SCOPES), ("clients.yaml", CLIENTS)];

async fn provider() -> TestProvider {
    let people = people();
    TestProvider::start(&[FILES[0], FILES[1], ("people.yaml", &people)]).await
}

/// POSTs `form` to /par as the client `(id, secret)`.
async fn push(p: &TestProvider, (id, secret): (&str, &str), form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = support::rp_http()
        .post(format!("{}/par", p.url))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let no_store = r
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap();
    if status == StatusCode::CREATED {
        assert_eq!(no_store.as_deref(), Some("no-store"));
    }
    (status, body)
}

fn code_request(state: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("redirect_uri", CB.into()),
        ("scope", "openid orders.read".into()),
        ("state", state.into()),
        ("code_challenge", CHALLENGE.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn borrowed<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn authorize_url(p: &TestProvider, client_id: &str, request_uri: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri)
        .finish();
    format!("{}/authorize?{query}", p.url)
}

#[tokio::test]
async fn a_pushed_request_signs_a_person_in_once_and_only_for_its_client() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "web");
    let form = code_request("pushed-state");
    let (status, body) = push(&p, (&id, &secret), &borrowed(&form)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let request_uri = body["request_uri"].as_str().unwrap().to_string();
    assert!(
        request_uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{request_uri}"
    );
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((1..600).contains(&expires_in), "{expires_in}");

    // Another namespace's client naming it gets nothing, and does not spend it.
    let (evil_id, _) = p.credentials("evil", "web");
    let evil = Browser::new().get(&authorize_url(&p, &evil_id, &request_uri)).await;
    assert_eq!(evil.status, StatusCode::BAD_REQUEST, "{}", evil.body);
    assert!(
        evil.location.is_none(),
        "no redirect for a request that is not this client's"
    );

    // The browser carries only client_id and the request_uri; what was pushed rules, even
    // against parameters added to the query.
    let url = format!("{}&state=forged&scope=openid", authorize_url(&p, &id, &request_uri));
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    assert!(back.as_str().starts_with(CB), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("pushed-state"));
    assert_eq!(param(&back, "iss").as_deref(), Some(p.url.as_str()));
    let code = param(&back, "code").unwrap();
    let tokens: Value = support::rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["id_token"].is_string(), "{tokens}");
    assert_eq!(
        tokens["scope"], "openid orders.read",
        "the pushed scopes, not the query's"
    );

    // Used once: the same request_uri again is refused.
    let again = Browser::new().get(&authorize_url(&p, &id, &request_uri)).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.contains("already used"), "{}", again.body);
}

#[tokio::test]
async fn par_checks_the_client_and_the_request_as_authorize_would() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "web");
    let form = code_request("s");
    // No client authentication: refused.
    let r = support::rp_http()
        .post(format!("{}/par", p.url))
        .form(&borrowed(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong secret: refused alike.
    let (status, body) = push(&p, (&id, "wrong"), &borrowed(&form)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // Errors are RFC 6749 JSON, never a redirect.
    let cases: &[(&str, &str, &str)] = &[
        ("response_type", "token", "unsupported_response_type"),
        ("redirect_uri", "https://evil.example.com/cb", "invalid_request"),
        ("scope", "orders.write", "invalid_scope"),
        ("code_challenge_method", "plain", "invalid_request"),
        ("request_uri", "urn:ietf:params:oauth:request_uri:x", "invalid_request"),
        ("client_id", "someone.else", "invalid_request"),
    ];
    for (name, value, error) in cases {
        let mut changed: Vec<(&str, &str)> = borrowed(&form).into_iter().filter(|(k, _)| k != name).collect();
        changed.push((name, value));
        let (status, body) = push(&p, (&id, &secret), &changed).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(*error)),
            "{name}={value}: {body}"
        );
    }
    // Only POST.
    let r = support::rp_http().get(format!("{}/par", p.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // An unknown or malformed request_uri is a page, not a redirect.
    for uri in [
        "urn:ietf:params:oauth:request_uri:nope",
        "https://attacker.example.com/req",
    ] {
        let step = Browser::new().get(&authorize_url(&p, &id, uri)).await;
        assert_eq!(step.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(step.location.is_none());
    }
}

#[tokio::test]
async fn a_client_or_a_platform_that_requires_par_refuses_plain_requests() {
    let p = provider().await;
    let (strict, strict_secret) = p.credentials("shop", "strict");
    let plain = format!(
        "{}/authorize?client_id={strict}&response_type=code&redirect_uri={}&state=s",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let step = Browser::new().get(&plain).await;
    let back = url::Url::parse(step.location.as_deref().expect("refused back to the client")).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert!(param(&back, "error_description").unwrap().contains("pushed"), "{back}");
    // Pushed, the same client signs in.
    let (status, body) = push(
        &p,
        (&strict, &strict_secret),
        &[("response_type", "code"), ("redirect_uri", CB), ("state", "s")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = authorize_url(&p, &strict, body["request_uri"].as_str().unwrap());
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    assert!(param(&back, "code").is_some(), "{back}");

    // Discovery advertises the endpoint; only a platform that requires PAR says so.
    let doc: Value = support::get_json(&format!("{}/.well-known/openid-configuration", p.url)).await;
    assert_eq!(doc["pushed_authorization_request_endpoint"], format!("{}/par", p.url));
    assert!(doc.get("require_pushed_authorization_requests").is_none());

    let people = people();
    let platform = TestProvider::start_with_options(
        &[FILES[0], FILES[1], ("people.yaml", &people)],
        kauth::provider::serve::ServeOptions {
            require_pushed_authorization_requests: true,
            ..Default::default()
        },
    )
    .await;
    for path in ["openid-configuration", "oauth-authorization-server"] {
        let doc: Value = support::get_json(&format!("{}/.well-known/{path}", platform.url)).await;
        assert_eq!(doc["require_pushed_authorization_requests"], true, "{path}");
    }
    let (web, _) = platform.credentials("shop", "web");
    let plain = format!(
        "{}/authorize?client_id={web}&response_type=code&redirect_uri={}&scope=orders.read",
        platform.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let step = Browser::new().get(&plain).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert!(
        param(&back, "error_description")
            .unwrap()
            .contains("this server requires pushed"),
        "{back}"
    );
}

#[tokio::test]
async fn two_browsers_racing_with_one_request_uri_get_one_sign_in() {
    // The take is one conditional delete in the store, so this holds across replicas too.
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "web");
    let (status, body) = push(&p, (&id, &secret), &borrowed(&code_request("s"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let url = authorize_url(&p, &id, body["request_uri"].as_str().unwrap());
    let (one, two) = (Browser::new(), Browser::new());
    let (a, b) = tokio::join!(one.get(&url), two.get(&url));
    let went_on = [&a, &b].iter().filter(|s| s.status == StatusCode::SEE_OTHER).count();
    let refused = [&a, &b].iter().filter(|s| s.status == StatusCode::BAD_REQUEST).count();
    assert_eq!((went_on, refused), (1, 1), "{} / {}", a.status, b.status);
}
