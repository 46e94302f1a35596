//! People sign in: the authorization code flow through the real /authorize, login and
//! consent pages (a cookie-keeping HTTP client stands in for the browser), with a relying
//! party built on the `openidconnect` crate validating what it gets. The same flows in a
//! real headless browser are in tests/browser.rs.

mod support;

use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AccessTokenHash, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RefreshToken, Scope,
    TokenResponse,
};
use reqwest::StatusCode;
use support::browser::{Browser, param};
use support::{SCOPES, TestProvider, people};

const WEB_CB: &str = "https://shop.example.com/callback";
const SPA_CB: &str = "http://127.0.0.1:8401/callback";

pub const SIGN_IN_CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["https://shop.example.com/callback"]
  postLogoutRedirectUris: ["https://shop.example.com/bye"]
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
metadata: {name: other, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://other.example.com/cb"]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: machine, namespace: shop}
spec:
  scopes: [orders.read]
"#;

async fn provider() -> TestProvider {
    TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", SIGN_IN_CLIENTS),
        ("people.yaml", &people()),
    ])
    .await
}

fn rp_http() -> reqwest::Client {
    support::rp_http()
}

async fn relying_party(p: &TestProvider, client_id: &str, secret: Option<String>, redirect: &str) -> support::RpClient {
    support::relying_party(&p.url, client_id, secret, redirect).await
}

#[tokio::test]
async fn a_confidential_client_signs_a_person_in_and_the_relying_party_validates_the_id_token() {
    let p = provider().await;
    let (id, secret) = p.credentials("shop", "web");
    let rp = relying_party(&p, &id, Some(secret.clone()), WEB_CB).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("orders.read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let browser = Browser::new();
    let back = browser
        .sign_in(&p.url, auth_url.as_str(), ("alice", "wonderland"))
        .await;
    assert!(back.as_str().starts_with(WEB_CB), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some(csrf.secret().as_str()));
    assert_eq!(param(&back, "iss").as_deref(), Some(p.url.as_str()), "RFC 9207");
    let code = param(&back, "code").unwrap();

    let tokens = rp
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp_http())
        .await
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token for openid");
    let verifier = rp.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("signature, iss, aud, exp and nonce");
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(claims.email().map(|e| e.as_str()), Some("alice@example.com"));
    let expected = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected), "at_hash");
    assert!(claims.auth_time().is_some());
    assert_eq!(claims.authorized_party().map(|a| a.as_str()), Some(id.as_str()), "azp");
    let header = jwt_header(id_token.to_string().as_str());
    assert_eq!(header["alg"], "RS256", "RS256 by default, for every relying party");

    // The access token is for the orders API and the person.
    let at = jwt_payload(tokens.access_token().secret());
    assert_eq!(at["sub"], "alice");
    assert_eq!(at["aud"], "https://orders.example.com");
    assert_eq!(at["client_id"], id.as_str());

    // userinfo releases what the scopes allow.
    let info: openidconnect::core::CoreUserInfoClaims = rp
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&rp_http())
        .await
        .unwrap();
    assert_eq!(info.subject().as_str(), "alice");
    assert_eq!(
        info.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        Some("Alice Liddell")
    );

    // The second sign-in of the same person to the same client: session and consent are
    // remembered, so the browser goes straight back with a code.
    let (auth_url, _, _) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .url();
    let step = browser.get(auth_url.as_str()).await;
    assert!(step.location.unwrap().starts_with(WEB_CB), "no page in between");

    // Refresh: rotation on every use; the old token then revokes the family.
    let first_refresh = tokens
        .refresh_token()
        .expect("the client has the refresh_token grant")
        .clone();
    let renewed = rp
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request_async(&rp_http())
        .await
        .unwrap();
    let second_refresh = renewed.refresh_token().unwrap().clone();
    assert_ne!(second_refresh.secret(), first_refresh.secret());
    let renewed_id = renewed.id_token().expect("openid stays granted");
    renewed_id
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("a refreshed ID token verifies (without a nonce)");
    let reuse = refresh_error(&p, &id, &secret, first_refresh.secret()).await;
    assert_eq!(reuse, "invalid_grant", "the rotated-out token is refused");
    let after = refresh_error(&p, &id, &secret, second_refresh.secret()).await;
    assert_eq!(after, "invalid_grant", "its reuse revoked the whole family");
    let status = rp_http()
        .get(format!("{}/userinfo", p.url))
        .bearer_auth(renewed.access_token().secret())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "and the family's access tokens");
}

/// POSTs a refresh and returns the error code.
async fn refresh_error(p: &TestProvider, id: &str, secret: &str, token: &str) -> String {
    let r = rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    body["error"].as_str().unwrap_or("none").to_string()
}

fn jwt_part(token: &str, i: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

fn jwt_payload(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

#[tokio::test]
async fn a_public_client_needs_pkce_s256_and_gets_tokens_without_a_secret() {
    let p = provider().await;
    let id = "shop.spa";
    let browser = Browser::new();
    let base = format!(
        "{}/authorize?client_id={id}&response_type=code&scope=openid&redirect_uri={}&state=s1",
        p.url,
        urlencode(SPA_CB)
    );
    // No PKCE: refused, back at the (registered) redirect URI with the reason.
    let back = url::Url::parse(&browser.get(&base).await.location.unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert!(param(&back, "error_description").unwrap().contains("PKCE"));
    assert_eq!(param(&back, "state").as_deref(), Some("s1"));
    // plain is refused too.
    let plain = format!("{base}&code_challenge={}&code_challenge_method=plain", "a".repeat(43));
    let back = url::Url::parse(&browser.get(&plain).await.location.unwrap()).unwrap();
    assert!(param(&back, "error_description").unwrap().contains("plain"));

    let rp = relying_party(&p, id, None, SPA_CB).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let back = browser.sign_in(&p.url, auth_url.as_str(), ("bob", "builder")).await;
    let code = param(&back, "code").unwrap();
    let tokens = rp
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp_http())
        .await
        .unwrap();
    let claims = tokens
        .id_token()
        .unwrap()
        .claims(&rp.id_token_verifier(), &nonce)
        .unwrap();
    assert_eq!(claims.subject().as_str(), "bob");
    // A public client cannot introspect.
    let r = rp_http()
        .post(format!("{}/introspect", p.url))
        .form(&[("client_id", id), ("token", tokens.access_token().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Its refresh token rotates with client_id alone.
    let renewed = rp
        .exchange_refresh_token(&RefreshToken::new(tokens.refresh_token().unwrap().secret().clone()))
        .unwrap()
        .request_async(&rp_http())
        .await
        .unwrap();
    assert!(renewed.refresh_token().is_some());
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn redirect_uri_variants_are_refused_on_a_page_and_never_redirected() {
    let p = provider().await;
    let browser = Browser::new();
    for variant in [
        "https://shop.example.com/callback/",
        "https://SHOP.example.com/callback",
        "https://shop.example.com/Callback",
        "https://shop.example.com/callback/extra",
        "https://shop.example.com/callback?x=1",
        "https://shop.example.com/callback#frag",
        "https://shop.example.com@evil.example.com/callback",
        "https://evil.example.com@shop.example.com/callback",
        "https://shop.example.com:443/callback",
        "http://shop.example.com/callback",
    ] {
        let url = format!(
            "{}/authorize?client_id=shop.web&response_type=code&scope=openid&state=x&redirect_uri={}",
            p.url,
            urlencode(variant)
        );
        let step = browser.get(&url).await;
        assert_eq!(step.status, StatusCode::BAD_REQUEST, "{variant}");
        assert_eq!(step.location, None, "{variant} must not be redirected to");
        assert!(step.body.contains("has not registered"), "{variant}: {}", step.body);
    }
    // An unknown client also gets a page, not a redirect.
    let step = browser
        .get(&format!(
            "{}/authorize?client_id=nobody&response_type=code&redirect_uri={}",
            p.url,
            urlencode(WEB_CB)
        ))
        .await;
    assert_eq!((step.status, step.location), (StatusCode::BAD_REQUEST, None));
}

#[tokio::test]
async fn implicit_flow_and_password_grant_are_refused() {
    let p = provider().await;
    let browser = Browser::new();
    for response_type in ["token", "id_token", "code%20id_token", "id_token%20token"] {
        let url = format!(
            "{}/authorize?client_id=shop.web&response_type={response_type}&scope=openid&state=z&redirect_uri={}",
            p.url,
            urlencode(WEB_CB)
        );
        let back = url::Url::parse(&browser.get(&url).await.location.unwrap()).unwrap();
        assert_eq!(
            param(&back, "error").as_deref(),
            Some("unsupported_response_type"),
            "{response_type}"
        );
        assert!(back.fragment().is_none(), "nothing in a fragment");
        assert_eq!(param(&back, "iss").as_deref(), Some(p.url.as_str()));
    }
    let (id, secret) = p.credentials("shop", "web");
    let r = rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    // A client without the grant cannot start the flow.
    let url = format!(
        "{}/authorize?client_id=shop.machine&response_type=code&redirect_uri={}",
        p.url,
        urlencode(WEB_CB)
    );
    assert_eq!(browser.get(&url).await.status, StatusCode::BAD_REQUEST);
}

/// Signs alice in for shop.web and returns the code (and the PKCE verifier).
async fn code_for_web(p: &TestProvider, browser: &Browser) -> (String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let url = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid%20orders.read&state=q&nonce=n&redirect_uri={}&code_challenge={}&code_challenge_method=S256",
        p.url,
        urlencode(WEB_CB),
        challenge.as_str()
    );
    let back = browser.sign_in(&p.url, &url, ("alice", "wonderland")).await;
    (param(&back, "code").unwrap(), verifier.secret().clone())
}

async fn redeem(p: &TestProvider, client: (&str, &str), code: &str, verifier: &str) -> (u16, serde_json::Value) {
    let r = rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(client.0, Some(client.1))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", WEB_CB),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_replayed_code_fails_and_revokes_what_its_first_use_issued() {
    let p = provider().await;
    let browser = Browser::new();
    let (id, secret) = p.credentials("shop", "web");
    let (code, verifier) = code_for_web(&p, &browser).await;
    let (status, first) = redeem(&p, (&id, &secret), &code, &verifier).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = redeem(&p, (&id, &secret), &code, &verifier).await;
    assert_eq!((status, second["error"].as_str()), (400, Some("invalid_grant")));
    // The first use's access token is now inactive, and its refresh token dead.
    let introspected: serde_json::Value = rp_http()
        .post(format!("{}/introspect", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", first["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], false);
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(refresh_error(&p, &id, &secret, refresh).await, "invalid_grant");
}

#[tokio::test]
async fn a_code_is_bound_to_its_client_verifier_and_lifetime() {
    let p = provider().await;
    let browser = Browser::new();
    let (id, secret) = p.credentials("shop", "web");
    let (other_id, other_secret) = p.credentials("shop", "other");
    // Another client cannot redeem it (and spends it).
    let (code, verifier) = code_for_web(&p, &browser).await;
    let (status, body) = redeem(&p, (&other_id, &other_secret), &code, &verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("another client"));
    // A wrong verifier fails.
    let (code, _) = code_for_web(&p, &browser).await;
    let wrong = "x".repeat(43);
    let (status, body) = redeem(&p, (&id, &secret), &code, &wrong).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    // An expired code fails: one stored with a lifetime already over.
    let now = jiff::Timestamp::now().as_second();
    let grant = kauth::store::Grant {
        client_id: id.clone(),
        client_uid: "standalone:shop/web".into(),
        subject: "alice".into(),
        scopes: vec!["openid".into()],
        audiences: vec![],
        redirect_uri: WEB_CB.into(),
        nonce: None,
        code_challenge: None,
        dpop_jkt: None,
        sid: None,
        auth_time: now - 100,
        amr: vec!["pwd".into()],
    };
    p.state
        .store
        .insert_code(&kauth::store::handle_digest("expired-code"), &grant, now - 1)
        .await
        .unwrap();
    let r = rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "expired-code"),
            ("redirect_uri", WEB_CB),
        ])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn sign_in_pages_refuse_wrong_passwords_forged_forms_and_too_many_attempts() {
    let p = provider().await;
    let browser = Browser::new();
    let url = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid&redirect_uri={}",
        p.url,
        urlencode(WEB_CB)
    );
    let to_login = browser.get(&url).await.location.unwrap();
    let page = browser.get(&to_login).await;
    let (request, csrf) = (
        support::hidden_field(&page.body, "request"),
        support::hidden_field(&page.body, "csrf"),
    );
    let attempt = |password: &'static str, csrf: String, request: String| {
        let browser = &browser;
        let p = &p;
        async move { browser.log_in(&p.url, &request, &csrf, ("bob", password)).await }
    };
    let wrong = attempt("nope", csrf.clone(), request.clone()).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong username or password"));
    // A form without the right CSRF token, or from another browser, is refused.
    let forged = attempt("builder", "forged".into(), request.clone()).await;
    assert_eq!(forged.status, 403);
    let elsewhere = Browser::new().log_in(&p.url, &request, &csrf, ("bob", "builder")).await;
    assert_eq!(
        elsewhere.status, 400,
        "the pending request belongs to the first browser"
    );
    for _ in 1..ACCOUNT_LIMIT {
        attempt("nope", csrf.clone(), request.clone()).await;
    }
    let blocked = attempt("builder", csrf.clone(), request.clone()).await;
    assert_eq!(
        blocked.status, 429,
        "even the right password waits once the account is throttled"
    );
    // prompt=none with no session comes back with login_required.
    let none = format!("{url}&prompt=none&state=p");
    let back = url::Url::parse(&Browser::new().get(&none).await.location.unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("login_required"));
}

/// Failed attempts an account is allowed per window (as documented in the README).
const ACCOUNT_LIMIT: usize = 5;

#[tokio::test]
async fn logout_goes_only_to_registered_post_logout_uris() {
    let p = provider().await;
    let browser = Browser::new();
    let (id, secret) = p.credentials("shop", "web");
    let (code, verifier) = code_for_web(&p, &browser).await;
    let (_, tokens) = redeem(&p, (&id, &secret), &code, &verifier).await;
    let hint = tokens["id_token"].as_str().unwrap();
    let unregistered = browser
        .get(&format!(
            "{}/end_session?id_token_hint={hint}&post_logout_redirect_uri={}",
            p.url,
            urlencode("https://evil.example.com/")
        ))
        .await;
    assert_eq!(
        (unregistered.status, unregistered.location),
        (StatusCode::BAD_REQUEST, None)
    );
    let out = browser
        .get(&format!(
            "{}/end_session?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
            p.url,
            urlencode("https://shop.example.com/bye")
        ))
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location.as_deref(), Some("https://shop.example.com/bye?state=bye"));
    // Signed out: the next authorization asks for the password again.
    let url = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid&redirect_uri={}",
        p.url,
        urlencode(WEB_CB)
    );
    assert!(browser.get(&url).await.location.unwrap().contains("/login"));
}

/// The href of the link whose text contains `label`.
fn link(html: &str, label: &str) -> String {
    let at = html.find(label).unwrap_or_else(|| panic!("no '{label}' in {html}"));
    let start = html[..at].rfind("href=\"").unwrap() + 6;
    html[start..start + html[start..].find('"').unwrap()].replace("&#38;", "&")
}

#[tokio::test]
async fn a_person_signs_in_through_an_upstream_kauth_and_gets_mapped_claims() {
    let downstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let downstream_url = format!("http://{}", downstream_listener.local_addr().unwrap());
    // The upstream IdP is another kauth, with alice and a client for the downstream kauth.
    let upstream_client = format!(
        r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: downstream, namespace: idp}}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["{downstream_url}/connector/corp/callback"]
"#
    );
    let upstream = TestProvider::start(&[("clients.yaml", &upstream_client), ("people.yaml", &people())]).await;
    let (up_id, up_secret) = upstream.credentials("idp", "downstream");
    let connectors = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: kauth-connectors, namespace: kauth}}
data:
  connectors.yaml: |
    connectors:
      - id: corp
        name: Corp SSO
        issuer: {}
        clientId: {up_id}
        clientSecretRef: {{name: corp-oidc, key: client-secret}}
        scopes: [profile, email, groups]
---
apiVersion: v1
kind: Secret
metadata: {{name: corp-oidc, namespace: kauth}}
stringData:
  client-secret: "{up_secret}"
"#,
        upstream.url
    );
    let downstream = TestProvider::start_on(
        downstream_listener,
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", SIGN_IN_CLIENTS),
            ("connectors.yaml", &connectors),
        ],
    )
    .await;
    let (id, secret) = downstream.credentials("shop", "web");
    let rp = relying_party(&downstream, &id, Some(secret), WEB_CB).await;
    let (auth_url, _, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("groups".into()))
        .url();

    let browser = Browser::new();
    let mut next = auth_url.to_string();
    let mut pages_seen = Vec::new();
    let back = loop {
        let step = browser.get(&next).await;
        if step.status == StatusCode::SEE_OTHER {
            next = step.location.unwrap();
            if next.starts_with(WEB_CB) {
                break url::Url::parse(&next).unwrap();
            }
            continue;
        }
        assert_eq!(step.status, StatusCode::OK, "{next}: {}", step.body);
        let base = if next.starts_with(&downstream.url) {
            &downstream.url
        } else {
            &upstream.url
        };
        let which = if base == &downstream.url {
            "downstream"
        } else {
            "upstream"
        };
        let path = if next.contains("/login") { "login" } else { "consent" };
        pages_seen.push(format!("{which} {path}"));
        let (request, csrf) = (
            support::hidden_field(&step.body, "request"),
            support::hidden_field(&step.body, "csrf"),
        );
        let posted = match (which, path) {
            ("downstream", "login") => {
                next = link(&step.body, "Sign in with Corp SSO");
                continue;
            }
            (_, "login") => {
                let form = [
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", "alice"),
                    ("password", "wonderland"),
                ];
                browser.post(&format!("{base}/login"), &form).await
            }
            _ => {
                let form = [
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("decision", "allow"),
                ];
                browser.post(&format!("{base}/consent"), &form).await
            }
        };
        assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.body);
        next = posted.location.unwrap();
        if next.starts_with(WEB_CB) {
            break url::Url::parse(&next).unwrap();
        }
    };
    assert_eq!(
        pages_seen,
        [
            "downstream login",
            "upstream login",
            "upstream consent",
            "downstream consent"
        ]
    );
    let tokens = rp
        .exchange_code(AuthorizationCode::new(param(&back, "code").unwrap()))
        .unwrap()
        .request_async(&rp_http())
        .await
        .unwrap();
    let claims = tokens
        .id_token()
        .unwrap()
        .claims(&rp.id_token_verifier(), &nonce)
        .unwrap();
    assert_eq!(
        claims.subject().as_str(),
        "corp:alice",
        "federated subjects carry the connector id"
    );
    assert_eq!(claims.email().map(|e| e.as_str()), Some("alice@example.com"));
    let id_token = jwt_payload(&tokens.id_token().unwrap().to_string());
    assert_eq!(
        id_token["groups"],
        serde_json::json!(["shop-admins"]),
        "groups mapped from upstream"
    );

    // kauth does not vouch for how the upstream signed alice in: no acr, and a request that
    // needs a second factor is refused rather than served with one factor.
    assert!(id_token.get("acr").is_none(), "{id_token}");
    let (step_up, _, _) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_extra_param("acr_values", "urn:kauth:acr:mfa")
        .url();
    let refused = browser.get(step_up.as_str()).await;
    let refused = url::Url::parse(&refused.location.unwrap()).unwrap();
    assert_eq!(
        param(&refused, "error").as_deref(),
        Some("unmet_authentication_requirements"),
        "{refused}"
    );

    // A callback that does not belong to this browser's sign-in is refused.
    let forged = Browser::new()
        .get(&format!("{}/connector/corp/callback?code=x&state=y", downstream.url))
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
}

/// Issue 25: a connector the platform trusts for its word on factors (`authContext.trust`)
/// passes the upstream's `amr` on: alice proves a second factor at the upstream kauth (its
/// client requires one), so a downstream client that requires `urn:kauth:acr:mfa` serves her
/// without asking again, and her ID token says `mfa`.
#[tokio::test]
async fn a_trusted_upstreams_second_factor_counts_downstream() {
    use support::browser::{enrolled_secret, now, walk};
    let downstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let downstream_url = format!("http://{}", downstream_listener.local_addr().unwrap());
    let upstream_client = format!(
        "apiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {{name: downstream, namespace: idp}}\nspec:\n  grantTypes: [authorization_code]\n  redirectUris: [\"{downstream_url}/connector/corp/callback\"]\n  requiredAcr: urn:kauth:acr:mfa\n"
    );
    let upstream = TestProvider::start(&[("clients.yaml", &upstream_client), ("people.yaml", &people())]).await;
    let (up_id, up_secret) = upstream.credentials("idp", "downstream");
    let connectors = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kauth-connectors, namespace: kauth}}\ndata:\n  connectors.yaml: |\n    connectors:\n      - id: corp\n        name: Corp SSO\n        issuer: {}\n        clientId: {up_id}\n        clientSecretRef: {{name: corp-oidc, key: client-secret}}\n        authContext: {{trust: true}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: corp-oidc, namespace: kauth}}\nstringData:\n  client-secret: \"{up_secret}\"\n",
        upstream.url
    );
    let strict_web = SIGN_IN_CLIENTS.replacen(
        "metadata: {name: web, namespace: shop}\nspec:\n",
        "metadata: {name: web, namespace: shop}\nspec:\n  requiredAcr: urn:kauth:acr:mfa\n",
        1,
    );
    assert_ne!(strict_web, SIGN_IN_CLIENTS, "the web client requires mfa");
    let downstream = TestProvider::start_on(
        downstream_listener,
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", &strict_web),
            ("connectors.yaml", &connectors),
        ],
    )
    .await;
    let (id, secret) = downstream.credentials("shop", "web");
    let browser = Browser::new();
    let authorize = format!(
        "{}/authorize?client_id={id}&response_type=code&scope=openid&redirect_uri={}&state=s",
        downstream.url,
        form_urlencoded::byte_serialize(WEB_CB.as_bytes()).collect::<String>()
    );
    // Downstream: its sign-in page, then the upstream's button.
    let login = browser.get(&authorize).await.location.unwrap();
    let page = browser.get(&login).await.body;
    let upstream_start = link(&page, "Sign in with Corp SSO");
    // Upstream: password, then enrolling and using an authenticator app, then consent.
    let w = walk(&browser, &upstream, &upstream_start, ("alice", "wonderland"), |page| {
        kauth::second_factors::code_at(&enrolled_secret(page), now())
    })
    .await;
    let back = w.end.unwrap_or_else(|step| panic!("{step:?}"));
    assert!(
        back.as_str()
            .starts_with(&format!("{downstream_url}/connector/corp/callback")),
        "{back}"
    );
    // Downstream again: no second factor asked; consent, then the code.
    let mut step = browser.get(back.as_str()).await;
    let code = loop {
        let to = step.location.clone().unwrap_or_else(|| panic!("{}", step.body));
        if to.starts_with(WEB_CB) {
            break param(&url::Url::parse(&to).unwrap(), "code").unwrap();
        }
        assert!(to.contains("/consent"), "only consent is left: {to}");
        let page = browser.get(&to).await.body;
        let form = [
            ("request", support::hidden_field(&page, "request")),
            ("csrf", support::hidden_field(&page, "csrf")),
            ("decision", "allow".to_string()),
        ];
        step = browser
            .post(
                &format!("{}/consent", downstream.url),
                &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
            )
            .await;
    };
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_CB),
    ];
    let (_, tokens) = support::token_call(&downstream.url, Some((&id, &secret)), &form).await;
    let claims = jwt_payload(tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}")));
    assert_eq!(claims["sub"], "corp:alice");
    assert_eq!(claims["acr"], "urn:kauth:acr:mfa", "{claims}");
    assert_eq!(claims["amr"], serde_json::json!(["mfa", "otp", "pwd"]));
}

#[tokio::test]
async fn browser_apps_may_call_the_token_and_userinfo_endpoints_from_their_own_origin_only() {
    let p = provider().await;
    let http = rp_http();
    let spa_origin = "http://127.0.0.1:8401";
    let preflight = |origin: &'static str, path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", p.url);
        async move {
            http.request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
                .send()
                .await
                .unwrap()
        }
    };
    let ok = preflight(spa_origin, "/userinfo").await;
    assert_eq!(ok.status(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], spa_origin);
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let elsewhere = preflight("https://evil.example.com", "/userinfo").await;
    assert!(elsewhere.headers().get("access-control-allow-origin").is_none());
    // A token request from the app's page gets its response readable; from elsewhere, not.
    for (origin, readable) in [(spa_origin, true), ("https://evil.example.com", false)] {
        let r = http
            .post(format!("{}/token", p.url))
            .header("origin", origin)
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "shop.spa"),
                ("refresh_token", "x"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("access-control-allow-origin").is_some(),
            readable,
            "{origin}"
        );
    }
    // Public documents are readable from anywhere; the sign-in pages never cross-origin.
    let jwks = http
        .get(format!("{}/jwks", p.url))
        .header("origin", "https://any.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.headers()["access-control-allow-origin"], "*");
    let page = preflight(spa_origin, "/login").await;
    assert!(page.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn prompt_and_max_age_decide_when_the_person_is_asked_again() {
    let p = provider().await;
    let browser = Browser::new();
    // Sign in and consent once.
    let (code, _) = code_for_web(&p, &browser).await;
    assert!(!code.is_empty());
    let base = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid%20orders.read&redirect_uri={}&state=p",
        p.url,
        urlencode(WEB_CB)
    );
    let next = |extra: &'static str| {
        let browser = &browser;
        let url = format!("{base}{extra}");
        async move { browser.get(&url).await.location.unwrap() }
    };
    // Signed in and consented: prompt=none answers at once with a code.
    let silent = url::Url::parse(&next("&prompt=none").await).unwrap();
    assert!(param(&silent, "code").is_some(), "{silent}");
    // prompt=login and an elapsed max_age ask for the password; prompt=consent asks again.
    assert!(next("&prompt=login").await.contains("/login?"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(next("&max_age=0").await.contains("/login?"));
    // prompt=login cannot be skipped by going to the consent page with the old session.
    let to_login = next("&prompt=login&nonce=again").await;
    let request = to_login.split("request=").nth(1).unwrap().to_string();
    let page = browser.get(&format!("{}/consent?request={request}", p.url)).await;
    let csrf = support::hidden_field(&page.body, "csrf");
    let skipped = browser
        .post(
            &format!("{}/consent", p.url),
            &[
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("decision", "allow"),
            ],
        )
        .await;
    assert!(
        skipped.location.unwrap().contains("/login?"),
        "the password is still asked"
    );
    assert!(next("&max_age=3600").await.starts_with(WEB_CB));
    assert!(next("&prompt=consent").await.contains("/consent?"));
    // A scope not yet allowed needs consent: prompt=none then says so.
    let more = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid%20email&redirect_uri={}&prompt=none",
        p.url,
        urlencode(WEB_CB)
    );
    let more = url::Url::parse(&browser.get(&more).await.location.unwrap()).unwrap();
    assert_eq!(param(&more, "error").as_deref(), Some("consent_required"));
    // A repeated parameter is malformed: refused on a page, since nothing in it can be trusted.
    let repeated = browser.get(&format!("{base}&scope=email")).await;
    assert_eq!((repeated.status, repeated.location), (StatusCode::BAD_REQUEST, None));
}

#[tokio::test]
async fn a_client_may_take_id_tokens_signed_with_the_signing_keys_algorithm() {
    let es256_client = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: modern, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://modern.example.com/cb"]
  idTokenSigningAlg: ES256
"#;
    let p = TestProvider::start(&[("clients.yaml", es256_client), ("people.yaml", &people())]).await;
    let (id, secret) = p.credentials("shop", "modern");
    let rp = relying_party(&p, &id, Some(secret), "https://modern.example.com/cb").await;
    let (auth_url, _, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .url();
    let back = Browser::new()
        .sign_in(&p.url, auth_url.as_str(), ("alice", "wonderland"))
        .await;
    let tokens = rp
        .exchange_code(AuthorizationCode::new(param(&back, "code").unwrap()))
        .unwrap()
        .request_async(&rp_http())
        .await
        .unwrap();
    let id_token = tokens.id_token().unwrap();
    let verifier = rp
        .id_token_verifier()
        .set_allowed_algs(vec![openidconnect::core::CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token.claims(&verifier, &nonce).expect("an ES256 ID token verifies");
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(jwt_header(&id_token.to_string())["alg"], "ES256");
}

const DEVICE_CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: cli, namespace: shop}
spec:
  clientType: public
  grantTypes: ["urn:ietf:params:oauth:grant-type:device_code", refresh_token]
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: tv, namespace: shop}
spec:
  grantTypes: ["urn:ietf:params:oauth:grant-type:device_code"]
"#;

/// A token request by hand: the status and the JSON body.
async fn poll_by_hand(url: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let res = rp_http().post(format!("{url}/token")).form(form).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// The device grant (RFC 8628) end to end, with the `oauth2` crate as the device: it asks,
/// a person types the code at /device, signs in and confirms, and the device's poll gets an
/// access, ID and refresh token. Until then polls say `authorization_pending`, too-quick ones
/// `slow_down`; another client cannot use the device code; a second redemption revokes what
/// the first got; a denial is `access_denied`; remembered consent never skips the
/// confirmation; wrong codes are throttled.
#[tokio::test]
async fn the_device_grant_signs_a_person_in_on_a_device_without_a_browser() {
    use oauth2::StandardDeviceAuthorizationResponse;
    use oauth2::basic::BasicClient;
    use oauth2::{AuthType, ClientId, DeviceAuthorizationUrl, TokenResponse as _, TokenUrl};
    let p = TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", DEVICE_CLIENTS),
        ("people.yaml", &people()),
    ])
    .await;
    let discovery: serde_json::Value = rp_http()
        .get(format!("{}/.well-known/openid-configuration", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["device_authorization_endpoint"],
        format!("{}/device_authorization", p.url)
    );
    assert!(
        discovery["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"urn:ietf:params:oauth:grant-type:device_code".into())
    );
    let device = BasicClient::new(ClientId::new("shop.cli".into()))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(DeviceAuthorizationUrl::new(format!("{}/device_authorization", p.url)).unwrap())
        .set_token_uri(TokenUrl::new(format!("{}/token", p.url)).unwrap());
    let http = rp_http();
    let ask = async || -> StandardDeviceAuthorizationResponse {
        device
            .exchange_device_code()
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("orders.read".into()))
            .request_async(&http)
            .await
            .unwrap()
    };
    let details = ask().await;
    let user_code = details.user_code().secret().clone();
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert_eq!(details.verification_uri().as_str(), format!("{}/device", p.url));
    assert_eq!(details.interval(), std::time::Duration::from_secs(5));
    let device_code = details.device_code().secret().clone();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code.as_str()),
        ("client_id", "shop.cli"),
    ];
    let (status, body) = poll_by_hand(&p.url, &poll).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("authorization_pending")));
    let (status, body) = poll_by_hand(&p.url, &poll).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("slow_down")));
    let (tv_id, tv_secret) = p.credentials("shop", "tv");
    let stolen = rp_http()
        .post(format!("{}/token", p.url))
        .basic_auth(&tv_id, Some(&tv_secret))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status().as_u16(), 400);
    let body: serde_json::Value = stolen.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "another client's device code: {body}");

    let browser = Browser::new();
    let (pages, done) = browser
        .answer_device(&p.url, &user_code.to_lowercase(), ("alice", "wonderland"), "allow")
        .await;
    assert_eq!(pages, ["/login", "/consent"]);
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("Device signed in"), "{}", done.body);
    let token = device
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, None)
        .await
        .unwrap();
    let access = token.access_token().secret().clone();
    let claims: serde_json::Value = {
        use base64::Engine;
        let payload = access.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "shop.cli");
    assert!(token.refresh_token().is_some(), "the client has refresh_token");
    let refreshed = device
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http)
        .await
        .unwrap();
    assert!(!refreshed.access_token().secret().is_empty());
    // The device code is spent: a second redemption fails and revokes what the first issued.
    let (status, body) = poll_by_hand(&p.url, &poll).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let introspected: serde_json::Value = rp_http()
        .post(format!("{}/introspect", p.url))
        .basic_auth(&tv_id, Some(&tv_secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], false, "revoked after the replay");

    // Alice has allowed the client before; the device must still be confirmed. She denies.
    let second = ask().await;
    let (pages, done) = browser
        .answer_device(&p.url, second.user_code().secret(), ("alice", "wonderland"), "deny")
        .await;
    assert_eq!(pages, ["/consent"], "signed in already, but asked to confirm");
    assert!(done.body.contains("Request denied"), "{}", done.body);
    let denied = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", second.device_code().secret().as_str()),
        ("client_id", "shop.cli"),
    ];
    let (status, body) = poll_by_hand(&p.url, &denied).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")));

    // Expiry: a request whose ten minutes are up (here one second, stored as the endpoint
    // stores them) is expired_token to the device and unknown at the code page.
    let expiring = "expiring-device-code";
    let request = kauth::store::DeviceRequest {
        id: kauth::store::handle_digest(expiring),
        client_id: "shop.cli".into(),
        client_uid: p.registry.load().clients["shop.cli"].uid.clone(),
        request: r#"{"scopes":["openid"],"audiences":[]}"#.into(),
    };
    let soon = jiff::Timestamp::now().as_second() + 1;
    assert!(
        p.state
            .store
            .start_device_request(&request, "XZXZXZXZ", 5, soon)
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let expired = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", expiring),
        ("client_id", "shop.cli"),
    ];
    let (status, body) = poll_by_hand(&p.url, &expired).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("expired_token")), "{body}");
    let late = browser
        .post(&format!("{}/device", p.url), &[("user_code", "XZXZ-XZXZ")])
        .await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    assert!(late.body.contains("not valid or has expired"), "{}", late.body);

    // Guessing codes: 20 wrong ones per address, then even a right one waits (the expired
    // code above was one).
    let third = ask().await;
    for _ in 0..19 {
        let wrong = browser
            .post(&format!("{}/device", p.url), &[("user_code", "BCDF-BCDF")])
            .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    }
    let right = browser
        .post(
            &format!("{}/device", p.url),
            &[("user_code", third.user_code().secret())],
        )
        .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS, "{}", right.body);
}

/// The audit trail (issue 13): one marked JSON line per event — tokens issued and refused,
/// sign-ins and failed ones, consent given and denied, a revocation, a logout, a device
/// answered — naming client, namespace, person and source; and not one secret, password,
/// token or code anywhere in it.
#[tokio::test]
async fn the_audit_trail_records_each_event_and_no_secret() {
    let p = TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", &format!("{SIGN_IN_CLIENTS}---{DEVICE_CLIENTS}")),
        ("people.yaml", &people()),
    ])
    .await;
    let mut secrets: Vec<String> = vec!["wonderland".into(), "not-the-secret".into()];
    let (machine_id, machine_secret) = p.credentials("shop", "machine");
    secrets.push(machine_secret.clone());
    let cc = |secret: String| {
        let (url, id) = (p.url.clone(), machine_id.clone());
        async move {
            let res = rp_http()
                .post(format!("{url}/token"))
                .basic_auth(&id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = cc(machine_secret.clone()).await;
    assert_eq!(status, 200);
    secrets.push(body["access_token"].as_str().unwrap().into());
    assert_eq!(cc("not-the-secret".into()).await.0, 401);

    // A person: a wrong password, then the right one, consent, a code, tokens.
    let (web_id, web_secret) = p.credentials("shop", "web");
    secrets.push(web_secret.clone());
    let rp = relying_party(&p, &web_id, Some(web_secret), WEB_CB).await;
    let (auth_url, _, _) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("orders.read".into()))
        .url();
    let browser = Browser::new();
    let first = browser.get(auth_url.as_str()).await;
    let login = browser.get(first.location.as_deref().unwrap()).await;
    let (request, csrf) = (
        support::hidden_field(&login.body, "request"),
        support::hidden_field(&login.body, "csrf"),
    );
    let wrong = browser
        .log_in(&p.url, &request, &csrf, ("alice", "not-the-secret"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let back = browser
        .sign_in(&p.url, auth_url.as_str(), ("alice", "wonderland"))
        .await;
    let code = param(&back, "code").unwrap();
    secrets.push(code.clone());
    let tokens = rp
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .request_async(&rp_http())
        .await
        .unwrap();
    secrets.push(tokens.access_token().secret().clone());
    let refresh = tokens.refresh_token().unwrap().secret().clone();
    secrets.push(refresh.clone());
    let id_token = tokens.id_token().unwrap().to_string();
    secrets.push(id_token.clone());
    let revoked = rp_http()
        .post(format!("{}/revoke", p.url))
        .basic_auth(&web_id, Some(p.credentials("shop", "web").1))
        .form(&[("token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let out = browser
        .get(&format!("{}/end_session?id_token_hint={id_token}", p.url))
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);

    // Consent denied to another client, and a device approved then one denied.
    let other = relying_party(
        &p,
        "shop.other",
        Some(p.credentials("shop", "other").1),
        "https://other.example.com/cb",
    )
    .await;
    let (other_url, _, _) = other
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .url();
    let step = browser.get(other_url.as_str()).await;
    let login = browser.get(step.location.as_deref().unwrap()).await;
    let form = [
        ("request", support::hidden_field(&login.body, "request")),
        ("csrf", support::hidden_field(&login.body, "csrf")),
        ("username", "alice".to_string()),
        ("password", "wonderland".to_string()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let consent = browser.post(&format!("{}/login", p.url), &form).await;
    let page = browser.get(consent.location.as_deref().unwrap()).await;
    let deny = [
        ("request", support::hidden_field(&page.body, "request")),
        ("csrf", support::hidden_field(&page.body, "csrf")),
        ("decision", "deny".to_string()),
    ];
    let deny: Vec<(&str, &str)> = deny.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let denied = browser.post(&format!("{}/consent", p.url), &deny).await;
    assert!(denied.location.unwrap().contains("error=access_denied"));
    for decision in ["allow", "deny"] {
        let started: serde_json::Value = rp_http()
            .post(format!("{}/device_authorization", p.url))
            .form(&[("client_id", "shop.cli"), ("scope", "openid")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        secrets.push(started["device_code"].as_str().unwrap().into());
        let code = started["user_code"].as_str().unwrap();
        browser
            .answer_device(&p.url, code, ("alice", "wonderland"), decision)
            .await;
    }

    let text = std::fs::read_to_string(p.dir.path().join("audit.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.iter().all(|r| r["audit"] == "kauth/v1"), "every line is marked");
    let find = |event: &str| {
        records
            .iter()
            .find(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no {event} record in {text}"))
    };
    let issued = find("token_issued");
    assert_eq!(issued["client_id"], machine_id.as_str());
    assert_eq!(issued["namespace"], "shop");
    assert_eq!(issued["grant_type"], "client_credentials");
    assert_eq!(issued["source"], "127.0.0.1");
    let refused = find("token_refused");
    assert!(
        refused["reason"].as_str().unwrap().starts_with("invalid_client"),
        "{refused}"
    );
    assert!(
        records.iter().any(|r| r["event"] == "token_issued"
            && r["grant_type"] == "authorization_code"
            && r["subject"] == "alice"),
        "a person's token names the person"
    );
    assert_eq!(find("sign_in_failed")["subject"], "alice");
    assert_eq!(find("sign_in")["client_id"], web_id.as_str());
    assert!(
        find("consent_given")["reason"]
            .as_str()
            .unwrap()
            .contains("orders.read")
    );
    assert_eq!(find("consent_denied")["client_id"], "shop.other");
    assert_eq!(find("revocation")["client_id"], web_id.as_str());
    assert_eq!(find("logout")["subject"], "alice");
    assert_eq!(find("device_approved")["subject"], "alice");
    assert_eq!(find("device_denied")["client_id"], "shop.cli");
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret in the audit trail: {secret}");
    }
}
