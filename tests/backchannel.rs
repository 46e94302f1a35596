//! OIDC Back-Channel Logout 1.0 over HTTP: an ID token carries the session's `sid`; signing
//! out of kauth POSTs a logout token to every client the session signed in to that registered
//! a `backchannelLogoutUri` (and only those), once; a team's logout address on an internal
//! network is not called unless the platform allows it; each delivery is audited and counted.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kauth::provider::serve::ServeOptions;
use reqwest::StatusCode;
use serde_json::Value;
use support::browser::{Browser, param};
use support::keys::payload;
use support::{SCOPES, TestProvider, people};

const CB: &str = "https://shop.example.com/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9rSgNRX2I2uiLbnhmJCdOtRuE";
const CHALLENGE: &str = "y1TGVqhhAAjGpE17KeQY7W3RetSoXnY1i4uUXGB6iqg";

/// A relying party's logout endpoint on 127.0.0.1 that keeps the logout tokens it gets.
async fn logout_endpoint(received: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/bcl",
        axum::routing::post(move |body: String| {
            let received = received.clone();
            async move {
                let token = form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                received.lock().unwrap().push(token);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/bcl", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn clients(logout: &str) -> String {
    format!(
        r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: web, namespace: shop}}
spec:
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["{CB}"]
  backchannelLogoutUri: {logout}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {{name: quiet, namespace: shop}}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["{CB}"]
"#
    )
}

/// A provider allowed to call loopback addresses (the platform's allow-list), whose client
/// `web` has its back-channel logout URI on a receiver here; what the receiver got.
async fn start_reaching_loopback() -> (TestProvider, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let logout = logout_endpoint(received.clone()).await;
    let opts = ServeOptions {
        outbound_allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..ServeOptions::default()
    };
    (start(&logout, opts).await, received)
}

async fn start(logout: &str, opts: ServeOptions) -> TestProvider {
    let clients = clients(logout);
    let people = people();
    TestProvider::start_with_options(
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", &clients),
            ("people.yaml", &people),
        ],
        opts,
    )
    .await
}

/// Signs alice in to `client` in `browser` and returns the ID token.
async fn sign_in(p: &TestProvider, browser: &Browser, client: &str) -> String {
    tokens_for(p, browser, client).await["id_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Signs alice in to `client` in `browser` and returns the token response.
async fn tokens_for(p: &TestProvider, browser: &Browser, client: &str) -> Value {
    let (id, secret) = p.credentials("shop", client);
    let url = format!(
        "{}/authorize?client_id={id}&response_type=code&scope=openid&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let back = browser.sign_in(&p.url, &url, ("alice", "wonderland")).await;
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
    tokens
}

async fn wait_for_tokens(received: &Arc<Mutex<Vec<String>>>, n: usize) {
    support::binary::wait_up_to(Duration::from_secs(5), "logout tokens", async || {
        received.lock().unwrap().len() >= n
    })
    .await;
}

#[tokio::test]
async fn signing_out_tells_each_client_the_session_signed_in_to_once() {
    let (p, received) = start_reaching_loopback().await;
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    let browser = Browser::new();
    let id_token = sign_in(&p, &browser, "web").await;
    let _ = sign_in(&p, &browser, "quiet").await;
    let sid = payload(&id_token)["sid"]
        .as_str()
        .expect("sid in the ID token")
        .to_string();

    let out = browser
        .get(&format!("{}/end_session?id_token_hint={id_token}", p.url))
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    wait_for_tokens(&received, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tokens = received.lock().unwrap().clone();
    assert_eq!(tokens.len(), 1, "one token, to the one client with a logout URI");
    let token = &tokens[0];
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["typ"], "logout+jwt");
    let claims = payload(token);
    let (web_id, _) = p.credentials("shop", "web");
    assert_eq!(claims["iss"], p.url.as_str());
    assert_eq!(claims["aud"], web_id.as_str());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], sid.as_str());
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(claims["jti"].is_string() && claims.get("nonce").is_none());
    // Signed with kauth's key, as its ID tokens are: verifiable against /jwks.
    let jwks: jsonwebtoken::jwk::JwkSet = support::get_json(&format!("{}/jwks", p.url)).await;
    let kid = header["kid"].as_str().unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::decode_header(token).unwrap().alg);
    validation.set_audience(&[&web_id]);
    validation.set_issuer(&[&p.url]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("a valid signature");

    // The session is gone: signing out again tells no one again.
    let _ = browser
        .get(&format!("{}/end_session?id_token_hint={id_token}", p.url))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.lock().unwrap().len(), 1);

    // Audited and counted.
    let trail = std::fs::read_to_string(p.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        trail.contains("\"backchannel_logout\"") && trail.contains("delivered"),
        "{trail}"
    );
    let metrics = reqwest::get(format!("{}/metrics", p.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"kauth_outbound_calls_total{purpose="backchannel_logout",outcome="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_logout_address_on_an_internal_network_is_not_called_without_the_platforms_leave() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let logout = logout_endpoint(received.clone()).await;
    let p = start(&logout, ServeOptions::default()).await;
    let browser = Browser::new();
    let id_token = sign_in(&p, &browser, "web").await;
    let out = browser
        .get(&format!("{}/end_session?id_token_hint={id_token}", p.url))
        .await;
    assert_eq!(out.status, StatusCode::OK);
    support::binary::wait_up_to(Duration::from_secs(5), "the refusal in the audit trail", async || {
        std::fs::read_to_string(p.dir.path().join("audit.jsonl"))
            .unwrap()
            .contains("not delivered")
    })
    .await;
    assert!(received.lock().unwrap().is_empty(), "loopback was called");
}

#[tokio::test]
async fn a_person_who_leaves_is_logged_out_of_every_client() {
    let (p, received) = start_reaching_loopback().await;
    let id_token = sign_in(&p, &Browser::new(), "web").await;
    let sid = payload(&id_token)["sid"].as_str().unwrap().to_string();
    // alice is removed; within a minute housekeeping ends what she held, and tells the client.
    let only_bob = people().replace("      - username: alice\n", "      - username: gone\n");
    p.write("people.yaml", &only_bob);
    p.reload();
    p.state.end_access_of_people_who_left().await;
    wait_for_tokens(&received, 1).await;
    let claims = payload(&received.lock().unwrap()[0]);
    assert_eq!(
        (claims["sub"].as_str(), claims["sid"].as_str()),
        (Some("alice"), Some(sid.as_str()))
    );
}

#[tokio::test]
async fn a_client_whose_refresh_family_is_revoked_for_reuse_is_told() {
    let (p, received) = start_reaching_loopback().await;
    let tokens = tokens_for(&p, &Browser::new(), "web").await;
    let sid = payload(tokens["id_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    let (id, secret) = p.credentials("shop", "web");
    let refresh = async |token: &str| {
        support::rp_http()
            .post(format!("{}/token", p.url))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(refresh(&first).await, StatusCode::OK);
    assert!(received.lock().unwrap().is_empty(), "a rotation is no logout");
    // The first token again: a reuse; the family is revoked and the client told.
    assert_eq!(refresh(&first).await, StatusCode::BAD_REQUEST);
    wait_for_tokens(&received, 1).await;
    // Presented again and again, it tells the client nothing more: the family was revoked.
    for _ in 0..5 {
        assert_eq!(refresh(&first).await, StatusCode::BAD_REQUEST);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.lock().unwrap().len(), 1, "one logout token per revocation");
    let claims = payload(&received.lock().unwrap()[0]);
    assert_eq!(
        (claims["sub"].as_str(), claims["sid"].as_str()),
        (Some("alice"), Some(sid.as_str()))
    );
    assert_eq!(claims["aud"], id.as_str());
}

#[tokio::test]
async fn a_new_password_ends_the_old_sessions_and_tells_their_clients() {
    let (p, received) = start_reaching_loopback().await;
    let id_token = sign_in(&p, &Browser::new(), "web").await;
    let sid = payload(&id_token)["sid"].as_str().unwrap().to_string();
    // alice's password changes; housekeeping ends the sessions of the old one.
    let old_hash = people()
        .lines()
        .find(|l| l.contains("passwordHash"))
        .unwrap()
        .trim()
        .to_string();
    let renewed = people().replacen(
        &old_hash,
        &format!("passwordHash: \"{}\"", kauth::people::hash_password("a-new-one")),
        1,
    );
    p.write("people.yaml", &renewed);
    p.reload();
    p.state.end_access_of_people_who_left().await;
    wait_for_tokens(&received, 1).await;
    assert_eq!(payload(&received.lock().unwrap()[0])["sid"], sid.as_str());
}
