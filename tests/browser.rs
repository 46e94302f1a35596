//! Browser tier: headless Chromium (Debian `chromium` + `chromium-driver`) driven over
//! WebDriver signs a local person in through kauth's real login and consent pages, for a
//! confidential relying party and a public one with PKCE. Each relying party is a small web
//! app built on the `openidconnect` crate that validates the ID token (signature, iss, aud,
//! nonce, at_hash) before it greets the person.
//!
//! `make test-browser` runs these (`.ci/run` installs Chromium first).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use fantoccini::{Client, Locator};
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AccessTokenHash, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    Scope, TokenResponse,
};
use support::chromium::{chromedriver, headless, settled_text, text_of, type_alices_password};
use support::{RpClient, SCOPES, TestProvider, relying_party, rp_http};

/// A relying-party web app: `/` starts sign-in, `/callback` finishes it.
#[derive(Clone)]
struct RelyingParty {
    client: Arc<RpClient>,
    pending: Arc<Mutex<HashMap<String, (Nonce, PkceCodeVerifier)>>>,
}

async fn start_sign_in(State(rp): State<RelyingParty>) -> Response {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = rp
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    rp.pending
        .lock()
        .unwrap()
        .insert(csrf.secret().clone(), (nonce, verifier));
    Redirect::to(url.as_str()).into_response()
}

async fn callback(State(rp): State<RelyingParty>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some((nonce, verifier)) = q.get("state").and_then(|s| rp.pending.lock().unwrap().remove(s)) else {
        return Html("<p id=result>unknown state</p>").into_response();
    };
    let Some(code) = q.get("code") else {
        return Html(format!(
            "<p id=result>error {}</p>",
            q.get("error").cloned().unwrap_or_default()
        ))
        .into_response();
    };
    let tokens = match rp
        .client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp_http())
        .await
    {
        Ok(t) => t,
        Err(e) => return Html(format!("<p id=result>token error {e:?}</p>")).into_response(),
    };
    let id_token = tokens.id_token().expect("an ID token");
    let id_verifier = rp.client.id_token_verifier();
    let claims = match id_token.claims(&id_verifier, &nonce) {
        Ok(c) => c,
        Err(e) => return Html(format!("<p id=result>ID token refused: {e}</p>")).into_response(),
    };
    let expected = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&id_verifier).unwrap(),
    )
    .unwrap();
    if claims.access_token_hash() != Some(&expected) {
        return Html("<p id=result>at_hash mismatch</p>").into_response();
    }
    let email = claims.email().map(|e| e.as_str().to_string()).unwrap_or_default();
    // What the sign-in proved, and the refresh token (a test takes it to check revocation).
    let acr = claims
        .auth_context_ref()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let refresh = tokens.refresh_token().map(|r| r.secret().clone()).unwrap_or_default();
    Html(format!(
        "<p id=result>signed in as {} ({email})</p><p id=acr>{acr}</p><p id=refresh>{refresh}</p>",
        claims.subject().as_str()
    ))
    .into_response()
}

/// Starts the relying-party app on `listener` for `client_id`.
async fn serve_rp(listener: tokio::net::TcpListener, issuer: &str, client_id: &str, secret: Option<String>) {
    let redirect = format!("http://{}/callback", listener.local_addr().unwrap());
    let rp = RelyingParty {
        client: Arc::new(relying_party(issuer, client_id, secret, &redirect).await),
        pending: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/", get(start_sign_in))
        .route("/callback", get(callback))
        .with_state(rp);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

fn clients(web_port: u16, spa_port: u16) -> String {
    format!(
        r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: web, namespace: shop}}
spec:
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["http://127.0.0.1:{web_port}/callback"]
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: spa, namespace: shop}}
spec:
  clientType: public
  grantTypes: [authorization_code]
  redirectUris: ["http://127.0.0.1:{spa_port}/callback"]
"#
    )
}

fn people() -> String {
    let hash = kauth::people::hash_password("wonderland");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: kauth-users, namespace: kauth}}\nstringData:\n  users.yaml: |\n    users:\n      - username: alice\n        email: alice@example.com\n        emailVerified: true\n        passwordHash: \"{hash}\"\n"
    )
}

/// The element `css` names, once the page has it (10 s at most).
async fn element(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Clicks Allow on the consent page, once it is there.
async fn click_allow(browser: &Client) {
    element(browser, "button[value=allow]").await.click().await.unwrap();
}

/// Signs alice in through the pages as a person would: type, press Enter, click Allow.
async fn sign_in_through_pages(browser: &Client, start: &str, expect_consent: bool) {
    browser.goto(start).await.unwrap();
    type_alices_password(browser).await;
    if expect_consent {
        let allow = element(browser, "button[value=allow]").await;
        let listed = browser
            .find(Locator::Css("ul.scopes"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(listed.contains("See your email address"), "{listed}");
        allow.click().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs Chromium and chromedriver: make test-browser"]
async fn a_person_signs_in_with_chromium_to_a_confidential_and_a_public_client() {
    let web_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spa_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (web_port, spa_port) = (
        web_listener.local_addr().unwrap().port(),
        spa_listener.local_addr().unwrap().port(),
    );
    let p = TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", &clients(web_port, spa_port)),
        ("people.yaml", &people()),
    ])
    .await;
    let (id, secret) = p.credentials("shop", "web");
    serve_rp(web_listener, &p.url, &id, Some(secret)).await;
    serve_rp(spa_listener, &p.url, "shop.spa", None).await;

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = headless(&driver, profile.path()).await;
    let result = async {
        sign_in_through_pages(&browser, &format!("http://127.0.0.1:{web_port}/"), true).await;
        assert_eq!(
            text_of(&browser, "#result").await,
            "signed in as alice (alice@example.com)"
        );
        // Same browser, the public client: the session holds, only its consent is asked.
        browser.goto(&format!("http://127.0.0.1:{spa_port}/")).await.unwrap();
        click_allow(&browser).await;
        assert_eq!(
            text_of(&browser, "#result").await,
            "signed in as alice (alice@example.com)"
        );
        // And again: consent remembered, no page in between.
        browser.goto(&format!("http://127.0.0.1:{spa_port}/")).await.unwrap();
        assert_eq!(
            text_of(&browser, "#result").await,
            "signed in as alice (alice@example.com)"
        );
        // The cookies kauth set are HttpOnly: no script on the page could read them.
        browser.goto(&format!("{}/jwks", p.url)).await.unwrap();
        let visible = browser.execute("return document.cookie", vec![]).await.unwrap();
        assert_eq!(visible, serde_json::json!(""), "session cookies are HttpOnly");
    }
    .await;
    browser.close().await.unwrap();
    result
}

/// Runs `kauth login` against `issuer` and returns it with the first line of its standard
/// error that contains `marker` (the rest is drained).
fn kauth_login(issuer: &str, cache: &std::path::Path, extra: &[&str], marker: &str) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args(["login", "--client-id=kauth.kubectl", "--no-browser"])
        .arg(format!("--issuer={issuer}"))
        .arg(format!("--cache-dir={}", cache.display()))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| {
            said.push(l.clone());
            l.contains(marker)
        })
        .unwrap_or_else(|| panic!("kauth login said nothing with {marker:?}: {said:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    (child, line)
}

/// The subject of the ID token in the ExecCredential `kauth login` printed.
fn subject_of(child: Child) -> String {
    use base64::Engine;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let credential: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = credential["status"]["token"].as_str().unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    claims["sub"].as_str().unwrap().to_string()
}

/// `kauth login` with a real browser (issue 11): the device page (type the code, sign in,
/// confirm), and the loopback flow, where Chromium is sent back to the port kauth login
/// listens on (one the client never registered, as RFC 8252 allows).
// Several threads: the provider runs in this process, and kauth login's output is read with
// blocking calls meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
#[ignore = "needs Chromium and chromedriver: make test-browser"]
async fn kauth_login_with_chromium_on_the_device_page_and_through_a_loopback_port() {
    let p = TestProvider::start(&[("clients.yaml", support::KUBECTL_CLIENT), ("people.yaml", &people())]).await;
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = headless(&driver, profile.path()).await;
    let cache = tempfile::tempdir().unwrap();
    let result = async {
        let (device, line) = kauth_login(&p.url, &cache.path().join("a"), &["--device"], "enter the code");
        let code = line.rsplit(' ').next().unwrap().to_string();
        browser.goto(&format!("{}/device", p.url)).await.unwrap();
        let field = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("user_code"))
            .await
            .unwrap();
        browser
            .find(Locator::Css("label[for=user_code]"))
            .await
            .expect("a label");
        field
            .send_keys(&format!("{}\u{E007}", code.to_lowercase()))
            .await
            .unwrap();
        type_alices_password(&browser).await;
        click_allow(&browser).await;
        // The consent page's h1 may still be there while the next page loads: wait for this one.
        settled_text(&browser, "h1", |t| t == "Device signed in").await;
        assert_eq!(subject_of(device), "alice");

        // The loopback flow: signed in already, and consent given with the device, so the
        // browser goes straight back to kauth login's port.
        let (login, line) = kauth_login(&p.url, &cache.path().join("b"), &[], "To sign in, open ");
        let url = line.trim_start_matches("To sign in, open ").to_string();
        browser.goto(&url).await.unwrap();
        assert_eq!(subject_of(login), "alice");
        settled_text(&browser, "body", |t| t.starts_with("Signed in.")).await;
        let landed = browser.current_url().await.unwrap();
        assert_eq!(landed.host_str(), Some("127.0.0.1"));
        assert_eq!(landed.path(), "/callback");
        assert_ne!(landed.port(), url::Url::parse(&p.url).unwrap().port());
    }
    .await;
    browser.close().await.unwrap();
    result
}

/// Issue 25 in Chromium: a client that requires a second factor steps alice's password session
/// up; she enrolls an authenticator app on the way (the test computes the app's code from the
/// key the page shows), sees her recovery codes once, and the client's ID token says `mfa`.
/// Then her account page revokes the first app, whose refresh token fails from then on.
#[tokio::test]
#[ignore = "needs Chromium and chromedriver: make test-browser"]
async fn a_person_steps_up_with_a_totp_app_and_revokes_an_app_on_the_account_page() {
    let web_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bank_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (web_port, bank_port) = (
        web_listener.local_addr().unwrap().port(),
        bank_listener.local_addr().unwrap().port(),
    );
    let bank = format!(
        "---\napiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {{name: bank, namespace: shop}}\nspec:\n  grantTypes: [authorization_code]\n  redirectUris: [\"http://127.0.0.1:{bank_port}/callback\"]\n  requiredAcr: urn:kauth:acr:mfa\n"
    );
    let p = TestProvider::start(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", &(clients(web_port, 1) + &bank)),
        ("people.yaml", &people()),
    ])
    .await;
    let (web_id, web_secret) = p.credentials("shop", "web");
    let (bank_id, bank_secret) = p.credentials("shop", "bank");
    serve_rp(web_listener, &p.url, &web_id, Some(web_secret.clone())).await;
    serve_rp(bank_listener, &p.url, &bank_id, Some(bank_secret)).await;

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = headless(&driver, profile.path()).await;
    let result = async {
        sign_in_through_pages(&browser, &format!("http://127.0.0.1:{web_port}/"), true).await;
        assert_eq!(text_of(&browser, "#acr").await, "urn:kauth:acr:1fa");
        let web_refresh = text_of(&browser, "#refresh").await;

        // bank: no password again, an enrollment page instead.
        browser.goto(&format!("http://127.0.0.1:{bank_port}/")).await.unwrap();
        let key = text_of(&browser, "#secret").await;
        let secret = kauth::second_factors::secret_from_base32(&key).unwrap();
        let now = jiff::Timestamp::now().as_second() as u64;
        let code = browser.find(Locator::Css("#code")).await.unwrap();
        code.send_keys(&format!("{}\u{E007}", kauth::second_factors::code_at(&secret, now)))
            .await
            .unwrap();
        let codes = text_of(&browser, "#recovery-codes").await;
        assert_eq!(codes.lines().count(), 10, "{codes}");
        browser
            .find(Locator::Css("#continue"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        click_allow(&browser).await;
        assert_eq!(
            text_of(&browser, "#result").await,
            "signed in as alice (alice@example.com)"
        );
        assert_eq!(text_of(&browser, "#acr").await, "urn:kauth:acr:mfa");

        // The account page: revoke web.
        browser.goto(&format!("{}/account", p.url)).await.unwrap();
        let revoke = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath("//li[contains(., 'shop/web')]//button"))
            .await
            .unwrap();
        revoke.click().await.unwrap();
        settled_text(&browser, "main", |t| t.contains("shop/bank") && !t.contains("shop/web")).await;
        let form = [("grant_type", "refresh_token"), ("refresh_token", web_refresh.as_str())];
        let (_, refused) = support::token_call(&p.url, Some((&web_id, &web_secret)), &form).await;
        assert_eq!(refused["error"], "invalid_grant", "{refused}");
    }
    .await;
    browser.close().await.unwrap();
    result
}

#[tokio::test]
#[ignore = "needs Chromium and chromedriver: make test-browser"]
async fn a_person_adds_a_passkey_in_chromium_and_signs_in_with_it_alone() {
    let web_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_port = web_listener.local_addr().unwrap().port();
    // A WebAuthn relying party needs a domain name: the issuer is localhost.
    let p = TestProvider::start_as_localhost(&[
        ("scopes.yaml", SCOPES),
        ("clients.yaml", &clients(web_port, 1)),
        ("people.yaml", &people()),
    ])
    .await;
    let (web_id, web_secret) = p.credentials("shop", "web");
    serve_rp(web_listener, &p.url, &web_id, Some(web_secret)).await;

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = headless(&driver, profile.path()).await;
    let result = async {
        // Chromium's virtual authenticator (WebDriver, Web Authentication §11): a platform
        // authenticator that keeps discoverable credentials and verifies its user.
        let session = browser.session_id().await.unwrap().unwrap();
        let added: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/webauthn/authenticator", driver.url))
            .json(&serde_json::json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(added["value"].is_string(), "{added}");

        // alice signs in to her account page with her password and adds a passkey.
        browser.goto(&format!("{}/account", p.url)).await.unwrap();
        type_alices_password(&browser).await;
        let name = element(&browser, "#passkey-name").await;
        name.send_keys("this laptop").await.unwrap();
        element(&browser, "#add-passkey").await.click().await.unwrap();
        settled_text(&browser, "main", |t| {
            t.contains("this laptop") && t.contains("not used yet")
        })
        .await;

        // Signed out (a fresh browser state, the authenticator kept): the app's sign-in page,
        // the passkey button, no password.
        browser.delete_all_cookies().await.unwrap();
        browser.goto(&format!("http://127.0.0.1:{web_port}/")).await.unwrap();
        element(&browser, "#passkey").await.click().await.unwrap();
        click_allow(&browser).await;
        assert_eq!(
            text_of(&browser, "#result").await,
            "signed in as alice (alice@example.com)"
        );
        assert_eq!(text_of(&browser, "#acr").await, "urn:kauth:acr:mfa");
        browser.goto(&format!("{}/account", p.url)).await.unwrap();
        settled_text(&browser, "main", |t| t.contains("last used") && t.contains("hwk mfa")).await;
    }
    .await;
    browser.close().await.unwrap();
    result
}
