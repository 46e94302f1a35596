//! HTTP tier: the real router on 127.0.0.1, driven by the `oauth2` crate and plain HTTP.

mod support;

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, IntrospectionUrl, RevocationUrl, Scope, TokenIntrospectionResponse,
    TokenResponse, TokenUrl,
};
use serde_json::Value;
use support::{CLIENTS, SCOPES, TestProvider};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn provider() -> TestProvider {
    TestProvider::start(&[("scopes.yaml", SCOPES), ("clients.yaml", CLIENTS)]).await
}

fn oauth_client(
    p: &TestProvider,
    id: &str,
    secret: &str,
) -> oauth2::basic::BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
> {
    BasicClient::new(ClientId::new(id.into()))
        .set_client_secret(ClientSecret::new(secret.into()))
        .set_token_uri(TokenUrl::new(format!("{}/token", p.url)).unwrap())
        .set_introspection_url(IntrospectionUrl::new(format!("{}/introspect", p.url)).unwrap())
        .set_revocation_url(RevocationUrl::new(format!("{}/revoke", p.url)).unwrap())
}

/// The provider's published keys.
async fn jwks(p: &TestProvider) -> JwkSet {
    http()
        .get(format!("{}/jwks", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn jwt_claims(p: &TestProvider, token: &str) -> Value {
    let jwks = jwks(p).await;
    let header = decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068 typ");
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid is published in the JWKS");
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[&p.url]);
    v.set_audience(&["https://orders.example.com"]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn client_credentials_token_verifies_against_jwks() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "backend");
    assert_eq!(id, "shop.backend");
    let token = oauth_client(&p, &id, &secret)
        .exchange_client_credentials()
        .add_scope(Scope::new("orders.read".into()))
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(token.scopes().unwrap()[0].as_str(), "orders.read");
    let expires = token.expires_in().unwrap();
    assert_eq!(expires, Duration::from_secs(3600));
    let claims = jwt_claims(&p, token.access_token().secret()).await;
    assert_eq!(claims["sub"], "client:shop.backend", "never a person's subject");
    assert_eq!(claims["client_id"], "shop.backend");
    assert_eq!(claims["scope"], "orders.read");
    assert_eq!(claims["aud"], "https://orders.example.com");
    assert!(claims["jti"].as_str().unwrap().len() >= 22);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
}

#[tokio::test]
async fn client_secret_post_is_accepted_for_clients_registered_for_it() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "poster");
    let client = oauth_client(&p, &id, &secret).set_auth_type(AuthType::RequestBody);
    let token = client
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(
        token.scopes().unwrap()[0].as_str(),
        "orders.read",
        "no scope parameter: all granted scopes"
    );
    // The same client with Basic is refused: a client uses the method it registered.
    let basic = oauth_client(&p, &id, &secret);
    assert!(
        basic
            .exchange_client_credentials()
            .request_async(&http())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn resource_parameter_selects_the_audience() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "backend");
    let body = post_form(
        &p,
        "/token",
        Some((&id, &secret)),
        "grant_type=client_credentials&resource=https%3A%2F%2Freports.example.com",
    )
    .await;
    assert_eq!(body.0, 200, "{:?}", body.1);
    let token = body.1["access_token"].as_str().unwrap().to_string();
    let header = decode_header(&token).unwrap();
    let jwks = jwks(&p).await;
    let mut v = Validation::new(header.alg);
    v.set_audience(&["https://reports.example.com"]);
    let claims = decode::<Value>(
        &token,
        &DecodingKey::from_jwk(jwks.find(&header.kid.unwrap()).unwrap()).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(
        claims["scope"], "reports.read",
        "the granted scopes of the reports API, and only those"
    );
}

async fn post_form(
    p: &TestProvider,
    path: &str,
    basic: Option<(&str, &str)>,
    body: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = http()
        .post(format!("{}{path}", p.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn errors_follow_rfc_6749() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "backend");
    let cc = "grant_type=client_credentials";
    // (what, basic credentials, body, status, error code)
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("wrong secret", Some((&id, "wrong")), cc.into(), 401, "invalid_client"),
        (
            "unknown client",
            Some(("nobody.here", &secret)),
            cc.into(),
            401,
            "invalid_client",
        ),
        ("no credentials", None, cc.into(), 401, "invalid_client"),
        (
            "ungranted scope",
            Some((&id, &secret)),
            format!("{cc}&scope=orders.write"),
            400,
            "invalid_scope",
        ),
        (
            "unknown scope",
            Some((&id, &secret)),
            format!("{cc}&scope=admin"),
            400,
            "invalid_scope",
        ),
        (
            "unknown resource",
            Some((&id, &secret)),
            format!("{cc}&resource=https%3A%2F%2Fevil.example.com"),
            400,
            "invalid_target",
        ),
        (
            "relative resource",
            Some((&id, &secret)),
            format!("{cc}&resource=orders"),
            400,
            "invalid_target",
        ),
        (
            "unsupported grant",
            Some((&id, &secret)),
            "grant_type=password&username=a&password=b".into(),
            400,
            "unsupported_grant_type",
        ),
        (
            "missing grant",
            Some((&id, &secret)),
            "scope=orders.read".into(),
            400,
            "invalid_request",
        ),
        (
            "repeated parameter",
            Some((&id, &secret)),
            format!("{cc}&scope=a&scope=b"),
            400,
            "invalid_request",
        ),
        (
            "two auth methods",
            Some((&id, &secret)),
            format!("{cc}&client_id={id}&client_secret={secret}"),
            400,
            "invalid_request",
        ),
        (
            "oversized body",
            Some((&id, &secret)),
            format!("{cc}&pad={}", "x".repeat(20_000)),
            413,
            "invalid_request",
        ),
    ];
    for (what, basic, body, status, code) in cases {
        let (got_status, json, headers) = post_form(&p, "/token", basic, &body).await;
        assert_eq!(got_status, status, "{what}: {json}");
        assert_eq!(json["error"], code, "{what}: {json}");
        assert!(
            json["error_description"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
        assert_eq!(headers["cache-control"], "no-store", "{what}");
        if status == 401 {
            assert!(
                headers["www-authenticate"].to_str().unwrap().starts_with("Basic"),
                "{what}"
            );
        }
    }

    // Not a form body.
    let res = http()
        .post(format!("{}/token", p.url))
        .basic_auth(&id, Some(&secret))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
    // Not POST.
    let res = http().get(format!("{}/token", p.url)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn introspection_respects_namespaces_and_revocation_survives_restart() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "backend");
    let backend = oauth_client(&p, &id, &secret);
    let token = backend
        .exchange_client_credentials()
        .add_scope(Scope::new("orders.read".into()))
        .request_async(&http())
        .await
        .unwrap();
    let at = token.access_token();

    let own = backend.introspect(at).request_async(&http()).await.unwrap();
    assert!(own.active());
    assert_eq!(own.client_id().unwrap().as_str(), "shop.backend");

    // The orders API's own client (the resource server) may introspect tokens for its audience.
    let (api_id, api_secret) = p.credentials("orders", "api");
    let api = oauth_client(&p, &api_id, &api_secret);
    assert!(api.introspect(at).request_async(&http()).await.unwrap().active());

    // A client in an unrelated namespace learns nothing.
    let (other_id, other_secret) = p.credentials("elsewhere", "other");
    let other = oauth_client(&p, &other_id, &other_secret);
    assert!(!other.introspect(at).request_async(&http()).await.unwrap().active());
    // ...and may not revoke it.
    let (status, json, _) = post_form(
        &p,
        "/revoke",
        Some((&other_id, &other_secret)),
        &format!("token={}", at.secret()),
    )
    .await;
    assert_eq!((status, json["error"].as_str()), (400, Some("unauthorized_client")));

    // oauth2 refuses to revoke over plain http, so this one is a plain RFC 7009 request.
    let (status, _, _) = post_form(
        &p,
        "/revoke",
        Some((&id, &secret)),
        &format!("token={}&token_type_hint=access_token", at.secret()),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!backend.introspect(at).request_async(&http()).await.unwrap().active());

    // A restarted provider reads the same deny list.
    let store = kauth::store::GrantStore::open_file(&p.dir.path().join("state"))
        .await
        .unwrap();
    let reopened = kauth::revocation::RevocationList::load(store, 0).await.unwrap();
    let jti = jwt_claims(&p, at.secret()).await["jti"].as_str().unwrap().to_string();
    assert!(reopened.is_revoked(&jti));

    // Garbage tokens are not an error at /revoke, and are inactive at /introspect.
    let (status, _, _) = post_form(&p, "/revoke", Some((&id, &secret)), "token=garbage").await;
    assert_eq!(status, 200);
    let (_, json, _) = post_form(&p, "/introspect", Some((&id, &secret)), "token=garbage").await;
    assert_eq!(json, serde_json::json!({"active": false}));
    let (status, json, _) = post_form(&p, "/introspect", None, "token=garbage").await;
    assert_eq!((status, json["error"].as_str()), (401, Some("invalid_client")));
}

#[tokio::test]
async fn rotated_out_secret_works_inside_the_overlap_and_fails_after() {
    let p = provider().await;
    let (id, old) = p.credentials("shop", "backend");
    p.write("clients.yaml", &CLIENTS.replace("trigger: one", "trigger: two"));
    p.reload();
    let (_, new) = p.credentials("shop", "backend");
    assert_ne!(old, new);
    let ok = |s: String| {
        let client = oauth_client(&p, &id, &s);
        async move {
            client
                .exchange_client_credentials()
                .request_async(&http())
                .await
                .is_ok()
        }
    };
    assert!(ok(new.clone()).await, "new secret works");
    assert!(ok(old.clone()).await, "old secret works inside the 2s overlap");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!ok(old).await, "old secret fails after the overlap");
    assert!(ok(new).await);
}

#[tokio::test]
async fn secret_is_not_regenerated_on_reload() {
    let p = provider().await;
    let before = p.credentials("shop", "backend");
    p.reload();
    p.reload();
    assert_eq!(p.credentials("shop", "backend"), before);
}

#[tokio::test]
async fn grant_changes_and_deletions_take_effect_on_the_next_snapshot() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "backend");
    let client = oauth_client(&p, &id, &secret);
    let http = http();
    let granted = client
        .exchange_client_credentials()
        .add_scope(Scope::new("orders.read".into()))
        .request_async(&http)
        .await;
    assert!(granted.is_ok());
    p.write(
        "scopes.yaml",
        &SCOPES.replace("grantedTo: {namespaces: [shop]}", "grantedTo: {namespaces: []}"),
    );
    p.reload();
    let (status, json, _) = post_form(
        &p,
        "/token",
        Some((&id, &secret)),
        "grant_type=client_credentials&scope=orders.read",
    )
    .await;
    assert_eq!((status, json["error"].as_str()), (400, Some("invalid_scope")));
    std::fs::remove_file(p.dir.path().join("manifests/clients.yaml")).unwrap();
    p.reload();
    let (status, json, _) = post_form(&p, "/token", Some((&id, &secret)), "grant_type=client_credentials").await;
    assert_eq!((status, json["error"].as_str()), (401, Some("invalid_client")));
}

#[tokio::test]
async fn discovery_health_and_metrics() {
    let p = provider().await;
    let meta: Value = http()
        .get(format!("{}/.well-known/oauth-authorization-server", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], p.url.as_str());
    assert_eq!(meta["token_endpoint"], format!("{}/token", p.url));
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!([
            "client_credentials",
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ]),
        "token exchange only with a ServiceAccount verifier"
    );
    assert_eq!(meta["authorization_endpoint"], format!("{}/authorize", p.url));
    assert_eq!(meta["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(meta["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    // Every endpoint discovery names answers (none is a 404).
    for endpoint in [
        "authorization_endpoint",
        "userinfo_endpoint",
        "end_session_endpoint",
        "jwks_uri",
    ] {
        let status = http()
            .get(meta[endpoint].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(status, 404, "{endpoint}");
    }
    let algs = meta["id_token_signing_alg_values_supported"].as_array().unwrap();
    assert!(
        algs.contains(&serde_json::json!("RS256")),
        "RS256 is always there: {algs:?}"
    );
    let oidc: Value = http()
        .get(format!("{}/.well-known/openid-configuration", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["jwks_uri"], format!("{}/jwks", p.url));
    assert_eq!(
        http()
            .get(format!("{}/readyz", p.ops_url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The provider's listener faces people and apps: no metrics (they name every client),
    // no health endpoints there.
    for path in ["/metrics", "/readyz", "/healthz"] {
        let status = http().get(format!("{}{path}", p.url)).send().await.unwrap().status();
        assert_eq!(status, 404, "{path} on the provider's listener");
    }
    let (id, secret) = p.credentials("shop", "backend");
    oauth_client(&p, &id, &secret)
        .exchange_client_credentials()
        .request_async(&http())
        .await
        .unwrap();
    let metrics = http()
        .get(format!("{}/metrics", p.ops_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"kauth_tokens_issued_total{client_id="shop.backend",grant_type="client_credentials"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kauth_http_requests_total{route="/token",status="200"} 1"#),
        "{metrics}"
    );
}

fn signing_key(trigger: &str, retire_immediately: bool) -> String {
    format!(
        "apiVersion: kauth.dev/v1alpha1\nkind: SigningKey\nmetadata: {{name: main, namespace: kauth}}\nspec:\n  algorithm: ES256\n  rotation: {{trigger: {trigger}, retireImmediately: {retire_immediately}}}\n"
    )
}

/// The key-compromise procedure: a new `rotation.trigger` with `retireImmediately` swaps the
/// key at once; tokens the leaked key signed stop verifying (JWKS and introspection), new
/// tokens carry the new key.
#[tokio::test]
async fn an_emergency_rotation_retires_a_leaked_key_at_once() {
    let p = TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", CLIENTS),
        ("key.yaml", &signing_key("first", false)),
    ])
    .await;
    let (id, secret) = p.credentials("shop", "backend");
    let form = "grant_type=client_credentials&scope=orders.read";
    let (_, before, _) = post_form(&p, "/token", Some((&id, &secret)), form).await;
    let leaked = before["access_token"].as_str().unwrap().to_string();
    let leaked_kid = decode_header(&leaked).unwrap().kid.unwrap();
    let kids = async || -> Vec<String> {
        let jwks = jwks(&p).await;
        jwks.keys.iter().filter_map(|k| k.common.key_id.clone()).collect()
    };
    assert!(kids().await.contains(&leaked_kid));

    p.write("key.yaml", &signing_key("leaked-2026-12-01", true));
    p.reload();
    assert!(
        !kids().await.contains(&leaked_kid),
        "the leaked key left the JWKS at once"
    );
    let (_, seen, _) = post_form(&p, "/introspect", Some((&id, &secret)), &format!("token={leaked}")).await;
    assert_eq!(seen["active"], false, "what it signed no longer verifies");
    let (status, after, _) = post_form(&p, "/token", Some((&id, &secret)), form).await;
    assert_eq!(status, 200);
    let fresh = after["access_token"].as_str().unwrap();
    let fresh_kid = decode_header(fresh).unwrap().kid.unwrap();
    assert_ne!(fresh_kid, leaked_kid);
    assert!(kids().await.contains(&fresh_kid), "the new key signs at once");
    // The same trigger again changes nothing.
    p.reload();
    assert!(kids().await.contains(&fresh_kid));
}

/// Standalone's default keys follow the cluster's default policy (one definition for both
/// modes): they rotate every 720h, each successor published a day before it signs.
#[tokio::test]
async fn standalone_default_keys_rotate_as_a_clusters_do() {
    let p = provider().await;
    let first = jwks(&p).await.keys.len();
    assert_eq!(first, 2, "a default ES256 key and a default RS256 key");
    let month_less_a_day = jiff::SignedDuration::from_hours(720 - 23);
    p.reload_at(jiff::Timestamp::now() + month_less_a_day);
    assert_eq!(
        jwks(&p).await.keys.len(),
        4,
        "each default key's successor is published ahead"
    );
}
