//! Passkeys over HTTP, answered by a software authenticator (passkey-rs) as a browser would: a
//! person adds one on the account page and then signs in with it alone (`amr` a key and
//! `mfa`); with a passkey, a password alone is no longer enough and no app can be set up
//! around it; a ceremony and its answer count once; another person's passkey proves nothing;
//! a disabled or re-passworded person's passkey no longer signs in; the number one person
//! keeps is bounded; the last factor stays while the platform requires one.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::browser::{Browser, Step, enrolled_secret, now, param, walk};
use support::keys::payload;
use support::passkey::{SoftPasskey, form_options};
use support::{SCOPES, TestProvider, hidden_field, people};

const CB: &str = "https://shop.example.com/callback";

const CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  grantTypes: [authorization_code]
  redirectUris: ["https://shop.example.com/callback"]
"#;

const ALICE: (&str, &str) = ("alice", "wonderland");
const BOB: (&str, &str) = ("bob", "builder");

async fn provider() -> TestProvider {
    provider_with(kauth::provider::serve::ServeOptions::default()).await
}

async fn provider_with(opts: kauth::provider::serve::ServeOptions) -> TestProvider {
    let people = people();
    let p = TestProvider::start_as_localhost_with(
        &[
            ("scopes.yaml", SCOPES),
            ("clients.yaml", CLIENTS),
            ("people.yaml", &people),
        ],
        opts,
    )
    .await;
    assert!(p.url.starts_with("http://localhost:"), "{}", p.url);
    p
}

fn authorize(p: &TestProvider) -> String {
    format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid&redirect_uri={}&state=s",
        p.url,
        form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    )
}

fn no_code(page: &str) -> String {
    panic!("no second factor expected here: {page}")
}

/// `user` signs in to their account page in `b` with their password.
async fn open_account(p: &TestProvider, b: &Browser, user: (&str, &str)) {
    let w = walk(b, p, &format!("{}/account", p.url), user, no_code).await;
    w.end.unwrap_or_else(|e| panic!("{e:?}"));
}

/// Adds a passkey on `device` from the account page of `b` (signed in).
async fn add_passkey(p: &TestProvider, b: &Browser, device: &mut SoftPasskey, name: &str) -> Step {
    let page = b.get(&format!("{}/account", p.url)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let credential = device.create(&p.url, &form_options(&page.body)).await;
    b.post(
        &format!("{}/account/passkeys/add", p.url),
        &[
            ("csrf", &hidden_field(&page.body, "csrf")),
            ("ceremony", &hidden_field(&page.body, "ceremony")),
            ("credential", &credential),
            ("name", name),
        ],
    )
    .await
}

/// A page with a passkey form: what its form posts, with `device`'s answer.
async fn answer(p: &TestProvider, page: &str, device: &mut SoftPasskey) -> Vec<(String, String)> {
    let credential = device
        .get(&p.url, &form_options(page))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    passkey_form(page, credential)
}

fn passkey_form(page: &str, credential: String) -> Vec<(String, String)> {
    vec![
        ("request".into(), hidden_field(page, "request")),
        ("csrf".into(), hidden_field(page, "csrf")),
        ("ceremony".into(), hidden_field(page, "ceremony")),
        ("credential".into(), credential),
    ]
}

async fn post(b: &Browser, url: &str, form: &[(String, String)]) -> Step {
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post(url, &form).await
}

/// Starts a sign-in to shop.web in `b`: the sign-in page.
async fn login_page(p: &TestProvider, b: &Browser) -> String {
    let start = b.get(&authorize(p)).await;
    let to = start.location.unwrap_or_else(|| panic!("{}", start.body));
    assert!(to.contains("/login?"), "{to}");
    let page = b.get(&to).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body
}

/// Follows a step through consent to the client's redirect URI.
async fn finish(p: &TestProvider, b: &Browser, mut step: Step) -> url::Url {
    loop {
        assert_eq!(step.status, StatusCode::SEE_OTHER, "{}", step.body);
        let to = step.location.clone().unwrap();
        if !to.starts_with(&format!("{}/", p.url)) {
            return url::Url::parse(&to).unwrap();
        }
        let page = b.get(&to).await;
        if page.status == StatusCode::SEE_OTHER {
            step = page;
            continue;
        }
        assert!(to.contains("/consent"), "{to}: {}", page.body);
        step = b
            .post(
                &format!("{}/consent", p.url),
                &[
                    ("request", &hidden_field(&page.body, "request")),
                    ("csrf", &hidden_field(&page.body, "csrf")),
                    ("decision", "allow"),
                ],
            )
            .await;
    }
}

async fn id_token(p: &TestProvider, back: &url::Url) -> Value {
    let (id, secret) = p.credentials("shop", "web");
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CB),
    ];
    let (_, body) = support::token_call(&p.url, Some((&id, &secret)), &form).await;
    payload(body["id_token"].as_str().unwrap_or_else(|| panic!("{body}")))
}

/// The audit trail's records of `event`, once there is one (the trail is written behind).
async fn audited(p: &TestProvider, event: &str) -> Vec<Value> {
    let read = || {
        std::fs::read_to_string(p.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["event"] == event)
            .collect::<Vec<_>>()
    };
    support::binary::wait_up_to(std::time::Duration::from_secs(5), event, async || !read().is_empty()).await;
    read()
}

#[tokio::test]
async fn a_passkey_added_on_the_account_page_signs_in_alone_and_counts_as_two_factors() {
    let p = provider().await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    open_account(&p, &b, ALICE).await;
    let added = add_passkey(&p, &b, &mut device, "work laptop").await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = b.get(&format!("{}/account", p.url)).await.body;
    assert!(
        page.contains("<strong>work laptop</strong>") && page.contains("not used yet"),
        "{page}"
    );
    let enrolled = audited(&p, "second_factor_enrolled").await;
    assert_eq!(enrolled.len(), 1, "{enrolled:?}");
    assert_eq!(
        (enrolled[0]["subject"].as_str(), enrolled[0]["reason"].as_str()),
        (Some("alice"), Some("passkey"))
    );

    // Another browser, no password: the sign-in page's passkey button.
    let b2 = Browser::new();
    let page = login_page(&p, &b2).await;
    let signed_in = post(
        &b2,
        &format!("{}/login/passkey", p.url),
        &answer(&p, &page, &mut device).await,
    )
    .await;
    let claims = id_token(&p, &finish(&p, &b2, signed_in).await).await;
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["acr"], "urn:kauth:acr:mfa", "{claims}");
    let amr: Vec<String> = serde_json::from_value(claims["amr"].clone()).unwrap();
    assert!(amr == ["hwk", "mfa"] || amr == ["swk", "mfa"], "{amr:?}");
    let account = b2.get(&format!("{}/account", p.url)).await.body;
    assert!(account.contains("last used"), "{account}");
    // Nothing about the person is in what the authenticator keeps of them but a handle.
    assert!(!form_options(&b.get(&format!("{}/account", p.url)).await.body).contains("\"id\":\"alice\""));
}

#[tokio::test]
async fn a_ceremony_and_its_answer_count_once() {
    let p = provider().await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    open_account(&p, &b, ALICE).await;
    // A registration's post, replayed: its ceremony was spent (the credential is not even
    // looked at again).
    let page = b.get(&format!("{}/account", p.url)).await.body;
    let credential = device.create(&p.url, &form_options(&page)).await;
    let form = [
        ("csrf", hidden_field(&page, "csrf")),
        ("ceremony", hidden_field(&page, "ceremony")),
        ("credential", credential),
        ("name", "key".into()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let added = post(&b, &format!("{}/account/passkeys/add", p.url), &form).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let replayed = post(&b, &format!("{}/account/passkeys/add", p.url), &form).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "{}", replayed.body);
    assert!(replayed.body.contains("used already"), "{}", replayed.body);

    let attacker = Browser::new();
    let page = login_page(&p, &attacker).await;
    let form = answer(&p, &page, &mut device).await;
    let first = post(&attacker, &format!("{}/login/passkey", p.url), &form).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    // The same post again (a replayed request): the ceremony was spent.
    let again = post(&attacker, &format!("{}/login/passkey", p.url), &form).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);

    // A captured answer under a fresh ceremony: it signed another challenge.
    let attacker = Browser::new();
    let page = login_page(&p, &attacker).await;
    let moved = passkey_form(&page, form[3].1.clone());
    let refused = post(&attacker, &format!("{}/login/passkey", p.url), &moved).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.body.contains("did not sign in"), "{}", refused.body);
    // A ceremony of one pending request does not serve another.
    let other = login_page(&p, &attacker).await;
    let mut crossed = answer(&p, &page, &mut device).await;
    crossed[0].1 = hidden_field(&other, "request");
    crossed[1].1 = hidden_field(&other, "csrf");
    let refused = post(&attacker, &format!("{}/login/passkey", p.url), &crossed).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    // And a sealed ceremony cannot be forged or altered.
    let page = login_page(&p, &attacker).await;
    let mut forged = answer(&p, &page, &mut device).await;
    forged[2].1.replace_range(10..12, "AA");
    let refused = post(&attacker, &format!("{}/login/passkey", p.url), &forged).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
}

#[tokio::test]
async fn with_a_passkey_a_password_alone_is_not_enough_and_no_app_can_be_set_up_around_it() {
    let p = provider().await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    open_account(&p, &b, ALICE).await;
    add_passkey(&p, &b, &mut device, "key").await;

    // Someone with alice's password: the second-factor page asks for her passkey, nothing else.
    let thief = Browser::new();
    let page = login_page(&p, &thief).await;
    let step = thief
        .log_in(
            &p.url,
            &hidden_field(&page, "request"),
            &hidden_field(&page, "csrf"),
            ALICE,
        )
        .await;
    let to = step.location.unwrap_or_else(|| panic!("{}", step.body));
    assert!(to.contains("/login/second-factor"), "{to}");
    let page = thief.get(&to).await.body;
    assert!(page.contains(r#"data-passkey="get""#), "{page}");
    assert!(
        !page.contains(r#"name="code""#) && !page.contains(r#"name="enroll""#),
        "{page}"
    );
    // An app set up beside the passkey (a sealed enrollment from before, or none): refused.
    let secret = kauth::second_factors::new_totp_secret();
    let code = kauth::second_factors::code_at(&secret, now());
    let refused = thief
        .post(
            &format!("{}/login/second-factor", p.url),
            &[
                ("request", &hidden_field(&page, "request")),
                ("csrf", &hidden_field(&page, "csrf")),
                ("code", &code),
                ("enroll", "anything"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("Use your passkey"), "{}", refused.body);

    // alice herself: password, then her passkey.
    let signed_in = post(
        &thief,
        &format!("{}/login/passkey", p.url),
        &answer(&p, &page, &mut device).await,
    )
    .await;
    let claims = id_token(&p, &finish(&p, &thief, signed_in).await).await;
    let amr: Vec<String> = serde_json::from_value(claims["amr"].clone()).unwrap();
    assert!(amr == ["pwd", "hwk", "mfa"] || amr == ["pwd", "swk", "mfa"], "{amr:?}");
    assert_eq!(claims["acr"], "urn:kauth:acr:mfa");
}

#[tokio::test]
async fn another_persons_passkey_proves_nothing_for_alice() {
    let p = provider().await;
    let (mut alices, mut bobs) = (SoftPasskey::new(), SoftPasskey::new());
    for (user, device) in [(ALICE, &mut alices), (BOB, &mut bobs)] {
        let b = Browser::new();
        open_account(&p, &b, user).await;
        let added = add_passkey(&p, &b, device, "key").await;
        assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    }
    // bob knows alice's password; at her second-factor page he answers with his own passkey
    // (his browser ignores the list of alice's credentials).
    let bob = Browser::new();
    let page = login_page(&p, &bob).await;
    let step = bob
        .log_in(
            &p.url,
            &hidden_field(&page, "request"),
            &hidden_field(&page, "csrf"),
            ALICE,
        )
        .await;
    let page = bob.get(&step.location.unwrap()).await.body;
    let mut options: Value = serde_json::from_str(&form_options(&page)).unwrap();
    options["publicKey"]["allowCredentials"] = serde_json::json!([]);
    let credential = bobs.get(&p.url, &options.to_string()).await.unwrap();
    let refused = post(
        &bob,
        &format!("{}/login/passkey", p.url),
        &passkey_form(&page, credential),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.body.contains("not registered"), "{}", refused.body);
    // bob's own discoverable sign-in names bob, never alice.
    let b = Browser::new();
    let page = login_page(&p, &b).await;
    let signed_in = post(
        &b,
        &format!("{}/login/passkey", p.url),
        &answer(&p, &page, &mut bobs).await,
    )
    .await;
    assert_eq!(id_token(&p, &finish(&p, &b, signed_in).await).await["sub"], "bob");
}

#[tokio::test]
async fn a_disabled_or_re_passworded_persons_passkey_no_longer_signs_in() {
    let p = provider().await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    open_account(&p, &b, ALICE).await;
    add_passkey(&p, &b, &mut device, "key").await;

    let people = people();
    p.write(
        "people.yaml",
        &people.replace("groups: [shop-admins]", "groups: [shop-admins]\n        disabled: true"),
    );
    p.reload();
    let b2 = Browser::new();
    let page = login_page(&p, &b2).await;
    let refused = post(
        &b2,
        &format!("{}/login/passkey", p.url),
        &answer(&p, &page, &mut device).await,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);

    // Back, with a new password (the platform's reset): the passkey went with the old one.
    let new_hash = kauth::people::hash_password("looking-glass");
    let alice_hash = people
        .split("passwordHash: \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    p.write("people.yaml", &people.replace(alice_hash, &new_hash));
    p.reload();
    let page = login_page(&p, &b2).await;
    let refused = post(
        &b2,
        &format!("{}/login/passkey", p.url),
        &answer(&p, &page, &mut device).await,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    // The new password alone signs alice in again (no factor counts any more).
    let w = walk(&Browser::new(), &p, &authorize(&p), ("alice", "looking-glass"), no_code).await;
    assert!(w.end.is_ok(), "{:?}", w.end);
}

#[tokio::test]
async fn a_person_keeps_a_bounded_number_of_passkeys() {
    let p = provider().await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    open_account(&p, &b, ALICE).await;
    let max = kauth::store::MAX_PASSKEYS_PER_PERSON as usize;
    // One more ceremony than allowed, taken before any is used.
    let mut pages = Vec::new();
    for _ in 0..=max {
        pages.push(b.get(&format!("{}/account", p.url)).await.body);
    }
    for (i, page) in pages.iter().enumerate() {
        let credential = device.create(&p.url, &form_options(page)).await;
        let added = b
            .post(
                &format!("{}/account/passkeys/add", p.url),
                &[
                    ("csrf", &hidden_field(page, "csrf")),
                    ("ceremony", &hidden_field(page, "ceremony")),
                    ("credential", &credential),
                    ("name", &"n".repeat(500)),
                ],
            )
            .await;
        if i < max {
            assert_eq!(added.status, StatusCode::SEE_OTHER, "{i}: {}", added.body);
        } else {
            assert_eq!(added.status, StatusCode::CONFLICT, "{}", added.body);
        }
    }
    let page = b.get(&format!("{}/account", p.url)).await.body;
    assert!(!page.contains(r#"data-passkey="create""#), "no more to add: {page}");
    assert_eq!(
        page.matches(&format!("<strong>{}</strong>", "n".repeat(60))).count(),
        max,
        "names cut to 60"
    );
}

#[tokio::test]
async fn the_last_factor_stays_while_the_platform_requires_one() {
    let p = provider_with(kauth::provider::serve::ServeOptions {
        require_second_factor: true,
        ..Default::default()
    })
    .await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    // Required: the first sign-in sets up an app on the way.
    let w = walk(&b, &p, &format!("{}/account", p.url), ALICE, |page| {
        kauth::second_factors::code_at(&enrolled_secret(page), now())
    })
    .await;
    w.end.unwrap_or_else(|e| panic!("{e:?}"));
    let added = add_passkey(&p, &b, &mut device, "key").await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = b.get(&format!("{}/account", p.url)).await.body;
    let csrf = hidden_field(&page, "csrf");
    let passkey = hidden_field(&page, "passkey");
    // With a passkey left, the app may go; then the passkey is the last and stays.
    let removed = b
        .post(&format!("{}/account/remove-second-factor", p.url), &[("csrf", &csrf)])
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    let refused = b
        .post(
            &format!("{}/account/passkeys/remove", p.url),
            &[("csrf", csrf.as_str()), ("passkey", passkey.as_str())],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        b.get(&format!("{}/account", p.url))
            .await
            .body
            .contains("<strong>key</strong>")
    );
    // Nor can anyone else (bob's own form names alice's passkey: the store matches the owner).
    let bob = Browser::new();
    let w = walk(&bob, &p, &format!("{}/account", p.url), BOB, |page| {
        kauth::second_factors::code_at(&enrolled_secret(page), now())
    })
    .await;
    w.end.unwrap();
    let bob_csrf = hidden_field(&bob.get(&format!("{}/account", p.url)).await.body, "csrf");
    let other = bob
        .post(
            &format!("{}/account/passkeys/remove", p.url),
            &[("csrf", bob_csrf.as_str()), ("passkey", passkey.as_str())],
        )
        .await;
    assert_eq!(other.status, StatusCode::SEE_OTHER, "{}", other.body);
    assert!(
        b.get(&format!("{}/account", p.url))
            .await
            .body
            .contains("<strong>key</strong>")
    );
}

/// Anyone can name a person's passkey (a credential id is no secret) and send a wrong answer:
/// passwordless attempts count against the address alone, so a stranger's six forged answers
/// lock nobody out; alice then signs in with her password and her passkey as usual.
#[tokio::test]
async fn forged_passwordless_answers_lock_nobody_out() {
    let p = provider().await;
    let mut device = SoftPasskey::new();
    let b = Browser::new();
    open_account(&p, &b, ALICE).await;
    add_passkey(&p, &b, &mut device, "key").await;
    for _ in 0..6 {
        let stranger = Browser::new();
        let page = login_page(&p, &stranger).await;
        let mut form = answer(&p, &page, &mut device).await;
        let mut credential: Value = serde_json::from_str(&form[3].1).unwrap();
        credential["response"]["signature"] = "MEUCIQDZ".into();
        form[3].1 = credential.to_string();
        let refused = post(&stranger, &format!("{}/login/passkey", p.url), &form).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    }
    let alice = Browser::new();
    let page = login_page(&p, &alice).await;
    let step = alice
        .log_in(
            &p.url,
            &hidden_field(&page, "request"),
            &hidden_field(&page, "csrf"),
            ALICE,
        )
        .await;
    let page = alice.get(&step.location.unwrap()).await.body;
    let signed_in = post(
        &alice,
        &format!("{}/login/passkey", p.url),
        &answer(&p, &page, &mut device).await,
    )
    .await;
    let claims = id_token(&p, &finish(&p, &alice, signed_in).await).await;
    assert_eq!(claims["sub"], "alice");
}
