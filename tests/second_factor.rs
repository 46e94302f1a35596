//! Second factors over HTTP: a client that requires `urn:kauth:acr:mfa` (or a request asking
//! for it with `acr_values`) steps a password-only session up; a person without a factor
//! enrolls a TOTP app on the way (recovery codes shown once); from then on every password
//! sign-in asks for a code; a code counts once, a recovery code once, wrong codes are
//! throttled even when guessed in parallel; ID tokens say what was proved (`acr`, `amr`).

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::browser::{Browser, enrolled_secret, now, param, walk};
use support::keys::payload;
use support::{SCOPES, TestProvider, hidden_field, people};

const CB: &str = "https://shop.example.com/callback";

const CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://shop.example.com/callback"]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: bank, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://shop.example.com/callback"]
  requiredAcr: urn:kauth:acr:mfa
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

fn authorize(p: &TestProvider, client_id: &str, extra: &str) -> String {
    format!(
        "{}/authorize?client_id={client_id}&response_type=code&scope=openid&redirect_uri={}&state=s{extra}",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    )
}

/// The ID token's claims for the code in `back`.
async fn id_token(p: &TestProvider, client: &str, back: &url::Url) -> Value {
    let (id, secret) = p.credentials("shop", client);
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CB),
    ];
    let (_, body) = support::token_call(&p.url, Some((&id, &secret)), &form).await;
    let claims = payload(body["id_token"].as_str().unwrap_or_else(|| panic!("{body}")));
    // The access token says the same, for the APIs it reaches (RFC 9068 §2.2.1).
    let access = payload(body["access_token"].as_str().unwrap());
    assert_eq!(access["acr"], claims["acr"], "{access}");
    claims
}

#[tokio::test]
async fn a_client_requiring_mfa_steps_the_session_up_and_enrollment_happens_on_the_way() {
    let p = provider().await;
    let alice = ("alice", "wonderland");
    let b = Browser::new();
    let no_code = |page: &str| panic!("no second factor expected: {page}");

    // A password is enough for web: one factor.
    let w = walk(&b, &p, &authorize(&p, "shop.web", ""), alice, no_code).await;
    let claims = id_token(&p, "web", &w.end.unwrap()).await;
    assert_eq!(claims["acr"], "urn:kauth:acr:1fa", "{claims}");
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));

    // bank requires mfa: the same session steps up; alice has no factor, so she enrolls.
    let secret = std::sync::Mutex::new(Vec::new());
    let w = walk(&b, &p, &authorize(&p, "shop.bank", ""), alice, |page| {
        let s = enrolled_secret(page);
        *secret.lock().unwrap() = s.clone();
        kauth::second_factors::code_at(&s, now())
    })
    .await;
    assert_eq!(
        w.pages.iter().filter(|p| p.ends_with("/login")).count(),
        0,
        "a step-up asks for no password: {:?}",
        w.pages
    );
    assert_eq!(w.recovery_codes.len(), 10, "shown once, at enrollment: {:?}", w.pages);
    let recovery = w.recovery_codes[0].clone();
    let claims = id_token(&p, "bank", &w.end.unwrap()).await;
    assert_eq!(claims["acr"], "urn:kauth:acr:mfa", "{claims}");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    let secret = secret.into_inner().unwrap();
    // The step-up upgraded the session in place (web stays signed in through it): one session.
    let account = b.get(&format!("{}/account", p.url)).await.body;
    assert_eq!(account.matches("<li>since").count(), 1, "{account}");
    assert!(account.contains("pwd otp mfa (this browser)"), "{account}");

    // From now on a password alone signs alice in nowhere, web included.
    let b2 = Browser::new();
    let used = kauth::second_factors::code_at(&secret, now());
    let w = walk(&b2, &p, &authorize(&p, "shop.web", ""), alice, |page| {
        assert!(!page.contains(r#"name="enroll""#), "enrolled already");
        used.clone()
    })
    .await;
    let refused = w.end.expect_err("the code of the enrollment's step was used");
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("used already"), "{}", refused.body);
    // The code of the next step (one step of skew) is new: accepted.
    let b3 = Browser::new();
    let next = kauth::second_factors::code_at(&secret, now() + 30);
    let w = walk(&b3, &p, &authorize(&p, "shop.web", ""), alice, |_| next.clone()).await;
    let claims = id_token(&p, "web", &w.end.unwrap()).await;
    assert_eq!(claims["acr"], "urn:kauth:acr:mfa");

    // A recovery code works once.
    let b4 = Browser::new();
    let w = walk(&b4, &p, &authorize(&p, "shop.web", ""), alice, |_| recovery.clone()).await;
    assert!(w.end.is_ok(), "the recovery code's first use");
    let b5 = Browser::new();
    let w = walk(&b5, &p, &authorize(&p, "shop.web", ""), alice, |_| recovery.clone()).await;
    assert_eq!(
        w.end.expect_err("a recovery code is used once").status,
        StatusCode::UNAUTHORIZED
    );

    // prompt=none cannot step up: interaction_required, not a code.
    let b6 = Browser::new();
    walk(&b6, &p, &authorize(&p, "shop.web", ""), ("bob", "builder"), no_code).await;
    let back = b6.get(&authorize(&p, "shop.bank", "&prompt=none")).await;
    let back = url::Url::parse(back.location.as_deref().unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("interaction_required"), "{back}");

    // Between password and code, alice's password is changed: her code no longer signs her in.
    let b7 = Browser::new();
    let login = b7.get(&authorize(&p, "shop.web", "")).await.location.unwrap();
    let page = b7.get(&login).await.body;
    let to = b7
        .log_in(
            &p.url,
            &hidden_field(&page, "request"),
            &hidden_field(&page, "csrf"),
            alice,
        )
        .await
        .location
        .unwrap();
    let page = b7.get(&to).await.body;
    let changed = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: kauth-users, namespace: kauth}}\nstringData:\n  users.yaml: |\n    users:\n      - username: alice\n        passwordHash: \"{}\"\n",
        kauth::people::hash_password("a new one")
    );
    p.write("people.yaml", &changed);
    p.reload();
    let code = kauth::second_factors::code_at(&secret, now() + 30);
    let form = [
        ("request", hidden_field(&page, "request")),
        ("csrf", hidden_field(&page, "csrf")),
        ("code", code),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b7.post(&format!("{}/login/second-factor", p.url), &form).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    // The new password (the platform's reset) voids the old factor: a password alone signs
    // alice in to web again, and bank has her enroll afresh.
    let b8 = Browser::new();
    let w = walk(&b8, &p, &authorize(&p, "shop.web", ""), ("alice", "a new one"), no_code).await;
    assert!(w.end.is_ok(), "{:?}", w.pages);
    let renewed = std::sync::Mutex::new(Vec::new());
    let w = walk(
        &b8,
        &p,
        &authorize(&p, "shop.bank", ""),
        ("alice", "a new one"),
        |page| {
            *renewed.lock().unwrap() = enrolled_secret(page);
            kauth::second_factors::code_at(&enrolled_secret(page), now())
        },
    )
    .await;
    assert!(w.end.is_ok() && w.recovery_codes.len() == 10, "{:?}", w.pages);
    let renewed = renewed.into_inner().unwrap();
    // The sign-in begun with the old password, reopened now, is refused and voids nothing:
    // the factor enrolled after the reset still counts.
    assert_eq!(b7.get(&to).await.status, StatusCode::FORBIDDEN);
    let next = kauth::second_factors::code_at(&renewed, now() + 30);
    let w = walk(
        &Browser::new(),
        &p,
        &authorize(&p, "shop.bank", ""),
        ("alice", "a new one"),
        |page| {
            assert!(!page.contains(r#"name="enroll""#), "the renewed factor stands");
            next.clone()
        },
    )
    .await;
    assert!(w.end.is_ok(), "{:?}", w.pages);
}

#[tokio::test]
async fn acr_values_ask_for_mfa_and_wrong_codes_are_throttled_in_parallel() {
    let p = provider().await;
    let bob = ("bob", "builder");
    // bob enrolls because his request asks for mfa (web itself does not require it).
    let b = Browser::new();
    let secret = std::sync::Mutex::new(Vec::new());
    let enrolled = walk(
        &b,
        &p,
        &authorize(&p, "shop.web", "&acr_values=urn%3Akauth%3Aacr%3Amfa"),
        bob,
        |page| {
            *secret.lock().unwrap() = enrolled_secret(page);
            kauth::second_factors::code_at(&enrolled_secret(page), now())
        },
    )
    .await;
    assert!(enrolled.end.is_ok(), "{:?}", enrolled.pages);
    let bob_secret = secret.into_inner().unwrap();
    // Five wrong passwords for a look-alike username do not touch bob's code throttle.
    for _ in 0..5 {
        let b = Browser::new();
        let login = b.get(&authorize(&p, "shop.web", "")).await.location.unwrap();
        let page = b.get(&login).await.body;
        let (request, csrf) = (hidden_field(&page, "request"), hidden_field(&page, "csrf"));
        b.log_in(&p.url, &request, &csrf, ("Second-Factor:Bob", "wrong")).await;
        b.log_in(&p.url, &request, &csrf, ("f:bob", "wrong")).await;
    }
    let next = kauth::second_factors::code_at(&bob_secret, now() + 30);
    let w = walk(&Browser::new(), &p, &authorize(&p, "shop.web", ""), bob, |_| {
        next.clone()
    })
    .await;
    assert!(w.end.is_ok(), "bob's own code still works: {:?}", w.end.err());
    let claims = id_token(&p, "web", &w.end.unwrap()).await;
    assert_eq!(claims["acr"], "urn:kauth:acr:mfa");

    // Twenty sign-ins reach the code page one after another (each right password clears
    // the password count), then send twenty wrong codes at once: at most five are checked.
    let mut waiting = Vec::new();
    for _ in 0..20 {
        let b = Browser::new();
        let login = b.get(&authorize(&p, "shop.web", "")).await.location.unwrap();
        let page = b.get(&login).await.body;
        let (request, csrf) = (hidden_field(&page, "request"), hidden_field(&page, "csrf"));
        let to = b.log_in(&p.url, &request, &csrf, bob).await.location.unwrap();
        assert!(to.contains("/login/second-factor"), "{to}");
        let page = b.get(&to).await.body;
        let (request, csrf) = (hidden_field(&page, "request"), hidden_field(&page, "csrf"));
        waiting.push((b, request, csrf));
    }
    let guesses = waiting.iter().map(|(b, request, csrf)| async {
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("code", "000000"),
        ];
        b.post(&format!("{}/login/second-factor", p.url), &form).await.status
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(checked <= 5 && checked + throttled == 20, "{statuses:?}");
    // The throttle holds for the right code too, until the failures age out.
    let (b, request, csrf) = &waiting[0];
    let right = kauth::second_factors::code_at(&bob_secret, now() + 60);
    let form = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("code", right.as_str()),
    ];
    assert_eq!(
        b.post(&format!("{}/login/second-factor", p.url), &form).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Discovery says what kauth can vouch for.
    let doc: Value = support::get_json(&format!("{}/.well-known/openid-configuration", p.url)).await;
    assert_eq!(
        doc["acr_values_supported"],
        serde_json::json!(["urn:kauth:acr:1fa", "urn:kauth:acr:mfa"])
    );
}

#[tokio::test]
async fn nothing_is_recorded_or_shown_before_a_step_up() {
    let p = provider().await;
    let alice = ("alice", "wonderland");
    let b = Browser::new();
    walk(&b, &p, &authorize(&p, "shop.web", ""), alice, |page| panic!("{page}")).await;
    // bank needs a step-up; consent posted for its parked request records nothing.
    let to = b.get(&authorize(&p, "shop.bank", "")).await.location.unwrap();
    assert!(to.contains("/login/second-factor"), "{to}");
    let page = b.get(&to).await.body;
    let form = [
        ("request", hidden_field(&page, "request")),
        ("csrf", hidden_field(&page, "csrf")),
        ("decision", "allow".to_string()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let posted = b.post(&format!("{}/consent", p.url), &form).await;
    assert!(
        posted
            .location
            .as_deref()
            .is_some_and(|l| l.contains("/login/second-factor")),
        "back to the code: {:?}",
        posted.location
    );
    let account = b.get(&format!("{}/account", p.url)).await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(
        !account.body.contains("shop/bank"),
        "no consent before the step-up: {}",
        account.body
    );
    let csrf = hidden_field(&account.body, "csrf");

    // alice enrolls in another browser; this browser's password-only session must step up
    // before its account page shows or does anything.
    let b2 = Browser::new();
    let w = walk(&b2, &p, &authorize(&p, "shop.bank", ""), alice, |page| {
        kauth::second_factors::code_at(&enrolled_secret(page), now())
    })
    .await;
    assert!(w.end.is_ok(), "{:?}", w.pages);
    let account = b.get(&format!("{}/account", p.url)).await;
    assert_eq!(account.status, StatusCode::SEE_OTHER);
    assert!(account.location.unwrap().contains("/login/second-factor"));
    let out = b
        .post(&format!("{}/account/sign-out-everywhere", p.url), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "nothing done: {}", out.body);
    assert_eq!(
        b2.get(&format!("{}/account", p.url)).await.status,
        StatusCode::OK,
        "b2 still signed in"
    );
}

/// The platform requires a second factor of listed groups only: alice (shop-admins) sets one up
/// at her first sign-in, bob (no group) signs in with his password alone.
#[tokio::test]
async fn the_platform_requires_a_second_factor_of_listed_groups() {
    let people = people();
    let p = TestProvider::start_with_options(
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", CLIENTS),
            ("people.yaml", &people),
        ],
        kauth::provider::serve::ServeOptions {
            require_second_factor_groups: vec!["shop-admins".into()],
            ..Default::default()
        },
    )
    .await;
    let w = walk(
        &Browser::new(),
        &p,
        &authorize(&p, "shop.web", ""),
        ("bob", "builder"),
        |page| panic!("bob is in no listed group: {page}"),
    )
    .await;
    let claims = id_token(&p, "web", &w.end.unwrap()).await;
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    let w = walk(
        &Browser::new(),
        &p,
        &authorize(&p, "shop.web", ""),
        ("alice", "wonderland"),
        |page| kauth::second_factors::code_at(&enrolled_secret(page), now()),
    )
    .await;
    assert_eq!(w.recovery_codes.len(), 10, "alice enrolled: {:?}", w.pages);
    let claims = id_token(&p, "web", &w.end.unwrap()).await;
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
}
