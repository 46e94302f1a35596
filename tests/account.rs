//! The account page over HTTP: a person signs in to it directly (no app), sees their sessions
//! and the apps they allowed, takes one app back (its refresh token then fails, and the app
//! must ask for consent again) and signs out everywhere. Its forms refuse a missing or foreign
//! CSRF token, and no person can touch another's grants.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::browser::{Browser, param};
use support::{SCOPES, TestProvider, hidden_field, people};

const CB: &str = "https://shop.example.com/callback";

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
metadata: {name: other, namespace: shop}
spec:
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["https://shop.example.com/callback"]
  scopes: [orders.read]
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

/// Signs `user` in to `client` in `b` and returns its refresh token.
async fn refresh_token_for(p: &TestProvider, b: &Browser, client: &str, user: (&str, &str)) -> String {
    let (id, secret) = p.credentials("shop", client);
    let url = format!(
        "{}/authorize?client_id={id}&response_type=code&scope=openid+offline_access+orders.read&redirect_uri={}&state=s",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let back = b.sign_in(&p.url, &url, user).await;
    let code = param(&back, "code").unwrap_or_else(|| panic!("{back}"));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CB),
    ];
    let (_, tokens) = support::token_call(&p.url, Some((&id, &secret)), &form).await;
    tokens["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"))
        .to_string()
}

async fn refresh(p: &TestProvider, client: &str, token: &str) -> (StatusCode, Value) {
    let (id, secret) = p.credentials("shop", client);
    let form = [("grant_type", "refresh_token"), ("refresh_token", token)];
    support::token_call(&p.url, Some((&id, &secret)), &form).await
}

/// The value of the hidden `client` field of the revoke form whose app is named `label`.
fn revoke_form_of(page: &str, label: &str) -> String {
    let at = page
        .find(label)
        .unwrap_or_else(|| panic!("{label} not on the page: {page}"));
    hidden_field(&page[at..], "client")
}

#[tokio::test]
async fn a_person_revokes_an_app_and_its_refresh_token_fails_then_signs_out_everywhere() {
    let p = provider().await;
    let alice = ("alice", "wonderland");
    let b = Browser::new();
    let web_token = refresh_token_for(&p, &b, "web", alice).await;
    let other_token = refresh_token_for(&p, &b, "other", alice).await;
    // bob's grant to web, in another browser: alice's page never shows or touches it.
    let bob_browser = Browser::new();
    let bob_token = refresh_token_for(&p, &bob_browser, "web", ("bob", "builder")).await;

    // Signed in already: the page at once, with both apps and this session.
    let page = b.get(&format!("{}/account", p.url)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("shop/web (shop.web)") && page.body.contains("shop/other (shop.other)"));
    assert!(page.body.contains("orders.read"), "the scopes allowed");
    assert!(page.body.contains("this browser"));
    assert!(!page.body.contains("bob"), "only alice's own");
    let csrf = hidden_field(&page.body, "csrf");
    let web_uid = revoke_form_of(&page.body, "shop/web (shop.web)");

    // Forms without the page's token, or with another session's, are refused.
    let revoke = format!("{}/account/revoke-app", p.url);
    assert_eq!(
        b.post(&revoke, &[("client", &web_uid)]).await.status,
        StatusCode::FORBIDDEN
    );
    let bob_page = bob_browser.get(&format!("{}/account", p.url)).await.body;
    let bob_csrf = hidden_field(&bob_page, "csrf");
    assert_eq!(
        b.post(&revoke, &[("client", &web_uid), ("csrf", &bob_csrf)])
            .await
            .status,
        StatusCode::FORBIDDEN,
        "bob's token is not alice's"
    );

    // alice takes web back: its refresh token fails at once, other's and bob's still work.
    let done = b.post(&revoke, &[("client", &web_uid), ("csrf", &csrf)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(refresh(&p, "web", &web_token).await.1["error"], "invalid_grant");
    let (status, rotated) = refresh(&p, "other", &other_token).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (status, body) = refresh(&p, "web", &bob_token).await;
    assert_eq!(status, StatusCode::OK, "bob's grant to the same app stays: {body}");
    // web is gone from the page, and must ask alice again.
    let page = b.get(&format!("{}/account", p.url)).await.body;
    assert!(!page.contains("shop/web (shop.web)"), "{page}");
    let (id, _) = p.credentials("shop", "web");
    let again = b
        .get(&format!(
            "{}/authorize?client_id={id}&response_type=code&scope=openid&redirect_uri={}&state=s",
            p.url,
            form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
        ))
        .await;
    assert!(again.location.unwrap().contains("/consent"), "consent was forgotten");

    // Bob posting alice's app's uid on his own page touches only his own grants.
    let bob_done = bob_browser
        .post(&revoke, &[("client", &web_uid), ("csrf", &bob_csrf)])
        .await;
    assert_eq!(bob_done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        refresh(&p, "web", body["refresh_token"].as_str().unwrap()).await.1["error"],
        "invalid_grant"
    );
    let (status, _) = refresh(&p, "other", rotated["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "alice's other app is untouched by bob");

    // Sign out everywhere: a second browser of alice's is signed out too.
    let b2 = Browser::new();
    refresh_token_for(&p, &b2, "other", alice).await;
    let page = b.get(&format!("{}/account", p.url)).await.body;
    let csrf = hidden_field(&page, "csrf");
    // One other session, ended from here: bob cannot end it, alice can; hers here stays.
    let sid = hidden_field(&page, "sid");
    let end = format!("{}/account/end-session", p.url);
    bob_browser.post(&end, &[("sid", &sid), ("csrf", &bob_csrf)]).await;
    assert_eq!(
        b2.get(&format!("{}/account", p.url)).await.status,
        StatusCode::OK,
        "bob ended nothing of alice's"
    );
    let ended = b.post(&end, &[("sid", &sid), ("csrf", &csrf)]).await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER, "{}", ended.body);
    assert_eq!(
        b2.get(&format!("{}/account", p.url)).await.status,
        StatusCode::SEE_OTHER,
        "b2 signed out"
    );
    assert_eq!(
        b.get(&format!("{}/account", p.url)).await.status,
        StatusCode::OK,
        "this one stays"
    );
    let b2 = Browser::new();
    refresh_token_for(&p, &b2, "other", alice).await;
    let out = b
        .post(&format!("{}/account/sign-out-everywhere", p.url), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    for browser in [&b, &b2] {
        let page = browser.get(&format!("{}/account", p.url)).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "signed out");
        assert!(page.location.unwrap().contains("/login"));
    }
}

#[tokio::test]
async fn the_account_page_signs_a_person_in_first_and_comes_back() {
    let p = provider().await;
    let b = Browser::new();
    let start = b.get(&format!("{}/account", p.url)).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    let login = start.location.unwrap();
    assert!(login.contains("/login"), "{login}");
    let page = b.get(&login).await.body;
    assert!(page.contains("your account"), "{page}");
    let back = b
        .log_in(
            &p.url,
            &hidden_field(&page, "request"),
            &hidden_field(&page, "csrf"),
            ("alice", "wonderland"),
        )
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert_eq!(
        back.location.as_deref(),
        Some(format!("{}/account", p.url).as_str()),
        "no consent page"
    );
    let page = b.get(&format!("{}/account", p.url)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("alice") && page.body.contains("No apps yet"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_factor_is_removed_only_from_a_session_that_proved_it_and_never_when_required() {
    use support::browser::{enrolled_secret, now, walk};
    let p = provider().await;
    let alice = ("alice", "wonderland");
    // A password-only session from before the factor existed...
    let old = Browser::new();
    refresh_token_for(&p, &old, "other", alice).await;
    // ...then alice enrolls in another browser (her request asks for a second factor).
    let b = Browser::new();
    let (id, _) = p.credentials("shop", "web");
    let url = format!(
        "{}/authorize?client_id={id}&response_type=code&scope=openid&redirect_uri={}&state=s&acr_values=urn%3Akauth%3Aacr%3Amfa",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let w = walk(&b, &p, &url, alice, |page| {
        kauth::second_factors::code_at(&enrolled_secret(page), now())
    })
    .await;
    assert!(w.end.is_ok(), "{:?}", w.pages);
    let remove = format!("{}/account/remove-second-factor", p.url);
    // The old session must step up before its account page shows or does anything.
    let stepped = old.get(&format!("{}/account", p.url)).await;
    assert_eq!(stepped.status, StatusCode::SEE_OTHER);
    assert!(stepped.location.unwrap().contains("/login/second-factor"));
    let page = b.get(&format!("{}/account", p.url)).await.body;
    assert!(page.contains("recovery code(s) left"), "{page}");
    let ignored = old.post(&remove, &[("csrf", &hidden_field(&page, "csrf"))]).await;
    assert_eq!(ignored.status, StatusCode::SEE_OTHER, "{}", ignored.body);
    // The session that proved it may.
    let page = b.get(&format!("{}/account", p.url)).await.body;
    assert!(page.contains("recovery code(s) left"), "still there: {page}");
    let done = b.post(&remove, &[("csrf", &hidden_field(&page, "csrf"))]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        b.get(&format!("{}/account", p.url))
            .await
            .body
            .contains("No authenticator app set up")
    );

    // Where the platform requires a second factor, it cannot be removed at all.
    let people = people();
    let required = TestProvider::start_with_options(
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", CLIENTS),
            ("people.yaml", &people),
        ],
        kauth::provider::serve::ServeOptions {
            require_second_factor: true,
            ..Default::default()
        },
    )
    .await;
    let b = Browser::new();
    let start = format!("{}/account", required.url);
    let w = walk(&b, &required, &start, alice, |page| {
        kauth::second_factors::code_at(&enrolled_secret(page), now())
    })
    .await;
    assert!(
        w.pages.iter().any(|p| p.ends_with("/login/second-factor")),
        "{:?}",
        w.pages
    );
    let page = b.get(&start).await.body;
    let refused = b
        .post(
            &format!("{}/account/remove-second-factor", required.url),
            &[("csrf", &hidden_field(&page, "csrf"))],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
}
