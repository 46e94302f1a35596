//! The hostile tenant, at the HTTP tier. A namespace `evil` controls only its own OAuthClient
//! and Scope objects and tries every escape of README, Tenancy, (T1-T6) against a real provider
//! fed from manifests, which are changed, broken, deleted and re-created while it runs (each
//! pass reads the claims record from the state folder, as a restart would). Next to each
//! attempt, the legitimate flow still works.

mod support;

use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::Value;
use support::browser::{Browser, param};
use support::{TestProvider, people};

/// The orders API team: read granted to shop, write only to its own namespace.
const ORDERS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: orders-read, namespace: orders}
spec:
  value: orders.read
  audience: https://orders.example.com
  grantedTo: {namespaces: [shop]}
---
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: orders-write, namespace: orders}
spec:
  value: orders.write
  audience: https://orders.example.com
"#;

/// The same, with a typo in the write Scope that the schema of an old apiserver lets through.
const ORDERS_BROKEN: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: orders-read, namespace: orders}
spec:
  value: orders.read
  audience: https://orders.example.com
  grantedTo: {namespaces: [shop]}
---
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: orders-write, namespace: orders}
spec:
  value: orders.write
  audience: https://orders.example.com
  grantedTo: {namespaces: [Billing]}
"#;

/// Legitimate clients: the shop's backend and the orders API itself (its resource server).
const LEGIT: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: backend, namespace: shop}
spec:
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: api, namespace: orders}
spec:
  scopes: [orders.write]
"#;

fn http() -> reqwest::Client {
    support::rp_http()
}

/// POST to an endpoint with HTTP Basic; status and JSON body.
async fn post(p: &TestProvider, path: &str, (id, secret): (&str, &str), form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(format!("{}{path}", p.url))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn client_credentials(p: &TestProvider, who: (&str, &str), extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    post(p, "/token", who, &form).await
}

fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims
}

fn later(hours: i64) -> Timestamp {
    Timestamp::now() + SignedDuration::from_hours(hours)
}

fn problem_about<'a>(problems: &'a [String], object: &str) -> &'a str {
    problems
        .iter()
        .find(|p| p.contains(object))
        .unwrap_or_else(|| panic!("no problem about {object} in {problems:#?}"))
}

/// T1 and T2. evil names the orders API's audience in its client, declares a Scope for it and
/// asks for it as an RFC 8707 resource, for itself and for a person; it also introspects the
/// shop's orders token.
#[tokio::test]
async fn an_audience_is_reached_only_through_its_owners_scopes() {
    let evil = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: squat, namespace: evil}
spec:
  value: evil.read
  audience: https://orders.example.com
  grantedTo: {namespaces: ["*"]}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: app, namespace: evil}
spec:
  scopes: [evil.read]
  audiences: [https://orders.example.com]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: spa, namespace: evil}
spec:
  clientType: public
  grantTypes: [authorization_code]
  redirectUris: ["http://127.0.0.1:9/cb"]
  audiences: [https://orders.example.com]
"#;
    let p = TestProvider::start(&[("orders.yaml", ORDERS), ("legit.yaml", LEGIT)]).await;
    // The attacker arrives (standalone takes files in path order: "evil" sorts first).
    p.write("evil.yaml", evil);
    p.reload();
    let problems = p.problems();
    assert!(
        problem_about(&problems, "Scope evil/squat")
            .contains("spec.audience 'https://orders.example.com' is claimed by namespace orders"),
        "{problems:#?}"
    );
    assert!(problem_about(&problems, "OAuthClient evil/app: spec.audiences").contains("belongs to namespace orders"));

    let (id, secret) = p.credentials("evil", "app");
    let evil_app = (id.as_str(), secret.as_str());
    let (status, body) = client_credentials(&p, evil_app, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    let (status, body) = client_credentials(&p, evil_app, &[("resource", "https://orders.example.com")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    let (status, body) = client_credentials(&p, evil_app, &[("scope", "evil.read")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");

    // A person's token for the orders API, asked for by evil's browser app: refused.
    let authorize = format!(
        "{}/authorize?client_id=evil.spa&response_type=code&scope=openid&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
         &state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\
         &resource=https%3A%2F%2Forders.example.com",
        p.url
    );
    let step = Browser::new().get(&authorize).await;
    let back = url::Url::parse(step.location.as_deref().expect("a redirect with the error")).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_target"), "{back}");

    // The shop's token works for the orders API; its resource server sees it, evil does not.
    let (id, secret) = p.credentials("shop", "backend");
    let (status, body) = client_credentials(&p, (&id, &secret), &[("scope", "orders.read")]).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["aud"], "https://orders.example.com");
    let (_, seen) = post(&p, "/introspect", evil_app, &[("token", token)]).await;
    assert_eq!(seen, serde_json::json!({"active": false}), "evil learns nothing");
    let (id, secret) = p.credentials("orders", "api");
    let (_, seen) = post(&p, "/introspect", (&id, &secret), &[("token", token)]).await;
    assert_eq!(seen["active"], true, "the audience's owner is its resource server");
}

/// T1 for the cluster: a Scope may name a client id as its audience only for a client of its
/// own namespace, so the audience kube-apiserver accepts (the platform's `kauth.kubectl`) is
/// the platform's to grant. evil names it, and the id of the namespace it was granted to, while
/// the platform's Scope is there, broken and gone: never a token for the cluster.
#[tokio::test]
async fn the_clusters_audience_is_granted_by_the_platform_alone() {
    const PLATFORM: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: kubernetes, namespace: kauth}
spec:
  value: kubernetes
  audience: kauth.kubectl
  grantedTo: {namespaces: [ci]}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: deployer, namespace: ci}
spec:
  scopes: [kubernetes]
"#;
    const EVIL: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: cluster, namespace: evil}
spec:
  value: evil.cluster
  audience: kauth.kubectl
  grantedTo: {namespaces: [evil]}
---
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: deployer, namespace: evil}
spec:
  value: evil.deployer
  audience: ci.deployer
  grantedTo: {namespaces: [evil]}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: app, namespace: evil}
spec:
  scopes: [evil.cluster, evil.deployer, kubernetes]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: direct, namespace: evil}
spec:
  audiences: [kauth.kubectl]
"#;
    let p = TestProvider::start(&[("platform.yaml", PLATFORM), ("evil.yaml", EVIL)]).await;
    let problems = p.problems();
    for (object, aud) in [
        ("Scope evil/cluster", "kauth.kubectl"),
        ("Scope evil/deployer", "ci.deployer"),
    ] {
        assert!(
            problem_about(&problems, object).contains(&format!("'{aud}' is neither an absolute URI")),
            "{problems:#?}"
        );
    }
    assert!(
        problem_about(&problems, "OAuthClient evil/direct").contains("spec.audiences"),
        "{problems:#?}"
    );
    let (ci_id, ci_secret) = p.credentials("ci", "deployer");
    let evil = p.credentials("evil", "app");
    for platform in [
        Some(PLATFORM),
        Some(&PLATFORM.replace("namespaces: [ci]", "namespaces: [Ci]")),
        None,
    ] {
        match platform {
            Some(text) => p.write("platform.yaml", text),
            None => p.remove("platform.yaml"),
        }
        p.reload();
        for scope in ["kubernetes", "evil.cluster", "evil.deployer"] {
            let (status, body) = client_credentials(&p, (&evil.0, &evil.1), &[("scope", scope)]).await;
            assert_eq!(status, 400, "{scope}: {body}");
        }
        let (status, body) = client_credentials(&p, (&evil.0, &evil.1), &[("resource", "kauth.kubectl")]).await;
        assert_eq!(status, 400, "{body}");
    }
    // The platform's grant, back: ci's deployer gets a token for the cluster, as itself.
    p.write("platform.yaml", PLATFORM);
    p.reload();
    let (status, body) = client_credentials(&p, (&ci_id, &ci_secret), &[("scope", "kubernetes")]).await;
    assert_eq!(status, 200, "{body}");
    let token = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (token["aud"].as_str(), token["sub"].as_str()),
        (Some("kauth.kubectl"), Some("client:ci.deployer"))
    );
    // The cluster's audience stands alone: a token another API receives is never one the
    // apiserver accepts (it only checks that `aud` contains its client id).
    p.write(
        "orders.yaml",
        &ORDERS.replace("namespaces: [shop]", "namespaces: [shop, ci]"),
    );
    p.write(
        "platform.yaml",
        &PLATFORM.replace("scopes: [kubernetes]", "scopes: [kubernetes, orders.read]"),
    );
    p.reload();
    let (status, body) = client_credentials(&p, (&ci_id, &ci_secret), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://orders.example.com",
        "asked alone only"
    );
    let (status, body) = client_credentials(&p, (&ci_id, &ci_secret), &[("scope", "kubernetes orders.read")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
    let (status, body) = client_credentials(&p, (&ci_id, &ci_secret), &[("scope", "kubernetes")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], "kauth.kubectl");
}

/// A person's token for the cluster's audience would be their kubectl sign-in, made by another
/// app: an app granted that Scope still cannot ask for it for a person.
#[tokio::test]
async fn no_app_gets_a_persons_token_for_the_cluster() {
    let manifests = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: kubernetes, namespace: kauth}
spec: {value: kubernetes, audience: kauth.kubectl, grantedTo: {namespaces: [ci]}}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: portal, namespace: ci}
spec:
  clientType: public
  grantTypes: [authorization_code]
  redirectUris: ["http://127.0.0.1:9/cb"]
  scopes: [kubernetes]
"#;
    let p = TestProvider::start(&[("m.yaml", manifests), ("people.yaml", &people())]).await;
    let authorize = format!(
        "{}/authorize?client_id=ci.portal&response_type=code&scope=openid+kubernetes&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
         &state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        p.url
    );
    let step = Browser::new().get(&authorize).await;
    let back = url::Url::parse(step.location.as_deref().expect("a redirect with the error")).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_scope"), "{back}");
}

/// T3 for Scope values: the owner's Scope turns invalid, is deleted, and is re-created
/// (GitOps replace), with restarts in between; a squatter Scope in evil waits for its chance.
#[tokio::test]
async fn a_scope_value_stays_with_its_owner_while_broken_deleted_and_recreated() {
    let evil = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: write, namespace: evil}
spec:
  value: orders.write
  audience: https://evil.example.com
  grantedTo: {namespaces: ["*"]}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: app, namespace: evil}
spec:
  scopes: [orders.write]
"#;
    let p = TestProvider::start(&[("orders.yaml", ORDERS), ("legit.yaml", LEGIT)]).await;
    p.write("evil.yaml", evil);
    p.reload();
    let (id, secret) = p.credentials("evil", "app");
    let evil_app = (id.as_str(), secret.as_str());
    let (id, secret) = p.credentials("orders", "api");
    let api = (id.as_str(), secret.as_str());
    let refused = async || {
        let (status, body) = client_credentials(&p, evil_app, &[("scope", "orders.write")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
    };
    refused().await;
    assert_eq!(client_credentials(&p, api, &[("scope", "orders.write")]).await.0, 200);

    // A typo in the owner's Scope: nobody serves orders.write, least of all evil.
    p.write("orders.yaml", ORDERS_BROKEN);
    p.reload();
    refused().await;
    let problems = p.problems();
    assert!(problem_about(&problems, "Scope orders/orders-write").contains("spec.grantedTo.namespaces[0]"));
    assert!(problem_about(&problems, "Scope evil/write").contains("claimed by namespace orders"));
    p.reload_at(later(48));
    refused().await;
    p.reload();

    // Deleted (the first half of a replace), then a restart reads the record from the state.
    p.write(
        "orders.yaml",
        &ORDERS_BROKEN
            .replace("orders-write", "gone")
            .replace("orders.write", "gone.write"),
    );
    p.reload();
    refused().await;
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(p.dir.path().join("state/claims.json")).unwrap()).unwrap();
    let claim = &record["scopeValues"][kauth::claims::claim_key("orders.write")];
    assert_eq!(claim["namespace"], "orders");
    assert!(claim["vacantSince"].is_i64(), "{record}");
    let restarted = p.cfg.clone().pass(Timestamp::now()).unwrap();
    assert!(problem_about(&restarted.problems, "Scope evil/write").contains("claimed by namespace orders"));
    refused().await;

    // Re-created by its owner: the owner has it back, evil still not.
    p.write("orders.yaml", ORDERS);
    p.reload();
    assert_eq!(client_credentials(&p, api, &[("scope", "orders.write")]).await.0, 200);
    refused().await;

    // Only an abandoned value changes hands, and only after the grace period, when every
    // token issued under the old claim has expired.
    p.write(
        "orders.yaml",
        &ORDERS
            .replace("orders-write", "gone")
            .replace("orders.write", "gone.write"),
    );
    p.reload();
    p.reload_at(later(23));
    refused().await;
    p.reload_at(later(25));
    let (status, body) = client_credentials(&p, evil_app, &[("scope", "orders.write")]).await;
    assert_eq!(status, 200, "lapsed after the grace period: {body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://evil.example.com"
    );
}

/// T3 and T4 for client ids: two namespaces declare `clientId: legacy`. alice signed in to the
/// first app and allowed it; the second may never act as that app, and when the id finally
/// changes hands it inherits neither her consent nor the first app's refresh tokens.
#[tokio::test]
async fn a_client_id_and_its_consent_never_change_hands() {
    let one = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: app, namespace: one}
spec:
  clientId: legacy
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["https://one.example.com/cb"]
"#;
    let evil = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: app, namespace: evil}
spec:
  clientId: legacy
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["https://evil.example.com/cb"]
"#;
    let p = TestProvider::start(&[("people.yaml", &people()), ("one.yaml", one)]).await;
    p.write("evil.yaml", evil);
    p.reload();
    let (id, secret) = p.credentials("one", "app");
    assert_eq!(id, "legacy");
    assert!(
        problem_about(&p.problems(), "OAuthClient evil/app").contains("claimed by namespace one"),
        "the newcomer is told who owns the id"
    );
    let authorize = |redirect: &str, prompt: &str| {
        format!(
            "{}/authorize?client_id=legacy&response_type=code&scope=openid&state=s&redirect_uri={}{prompt}",
            p.url,
            url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
        )
    };
    let browser = Browser::new();
    let back = browser
        .sign_in(
            &p.url,
            &authorize("https://one.example.com/cb", ""),
            ("alice", "wonderland"),
        )
        .await;
    let code = param(&back, "code").expect("alice signs in to the first app");
    let (status, tokens) = post(
        &p,
        "/token",
        (&id, &secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://one.example.com/cb"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let evil_url = |prompt| authorize("https://evil.example.com/cb", prompt);
    let not_evils = async |why: &str| {
        let step = browser.get(&evil_url("&prompt=none")).await;
        assert_eq!(step.status, StatusCode::BAD_REQUEST, "{why}: {:?}", step.location);
        assert!(step.location.is_none(), "{why}: never redirected to evil");
    };
    not_evils("while the owner is valid").await;

    // The owner turns invalid: the id stays its own, even long after.
    p.write("one.yaml", &format!("{one}  accessTokenLifetime: forever\n"));
    p.reload();
    not_evils("while the owner is invalid").await;
    p.reload_at(later(48));
    not_evils("an invalid owner keeps its id however long").await;

    // Deleted: its refresh families end, and the id lapses only after the grace period.
    p.remove("one.yaml");
    p.reload();
    p.state.end_grants_of_deleted_clients().await;
    not_evils("inside the grace period").await;
    p.reload_at(later(25));
    let (evil_id, evil_secret) = p.credentials("evil", "app");
    assert_eq!(evil_id, "legacy", "the id changed hands at last");
    // ... but alice never allowed this app: prompt=none does not identify her to it.
    let step = browser.get(&evil_url("&prompt=none")).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert!(back.as_str().starts_with("https://evil.example.com/cb"), "{back}");
    assert_eq!(param(&back, "error").as_deref(), Some("consent_required"), "{back}");
    // ... and the first app's refresh token is worth nothing to it.
    let (status, body) = post(
        &p,
        "/token",
        (&evil_id, &evil_secret),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

/// T5: a client that calls itself `alice` gets tokens whose subject is not the person alice's.
#[tokio::test]
async fn a_clients_own_tokens_never_carry_a_persons_subject() {
    let evil = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: own, namespace: evil}
spec: {value: evil.own, audience: https://evil.example.com}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: alice, namespace: evil}
spec:
  clientId: alice
  scopes: [evil.own]
"#;
    let p = TestProvider::start(&[("evil.yaml", evil)]).await;
    let (id, secret) = p.credentials("evil", "alice");
    let (status, body) = client_credentials(&p, (&id, &secret), &[]).await;
    assert_eq!(status, 200, "{body}");
    let sub = claims(body["access_token"].as_str().unwrap())["sub"].clone();
    assert_eq!(sub, "client:alice");
    // ... and no person can be called that: usernames have no ':'.
    let users = format!(
        "users: [{{username: 'client:alice', passwordHash: '{}'}}]",
        kauth::people::hash_password("x")
    );
    // (An entry that cannot be read is skipped and named, not the file refused: issue 14.)
    let people = kauth::people::Directory::parse(&users).unwrap();
    assert!(people.user("client:alice").is_none() && people.is_empty());
    assert!(people.problems()[0].contains("username"), "{:?}", people.problems());
}

/// T6: a new app learns who is signed in only after the person allowed it, unless the
/// platform (not the app team) declared its namespace first-party.
#[tokio::test]
async fn identity_needs_consent_unless_the_platform_says_first_party() {
    let apps = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: portal, namespace: platform}
spec:
  clientType: public
  grantTypes: [authorization_code]
  redirectUris: ["http://127.0.0.1:9/portal"]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata:
  name: spy
  namespace: evil
  annotations: {kauth.dev/first-party: "true"}
spec:
  clientType: public
  grantTypes: [authorization_code]
  redirectUris: ["http://127.0.0.1:9/spy"]
"#;
    let p = TestProvider::start_first_party(&[("people.yaml", &people()), ("apps.yaml", apps)], &["platform"]).await;
    let authorize = |client: &str, cb: &str, prompt: &str| {
        format!(
            "{}/authorize?client_id={client}&response_type=code&scope=openid&state=s\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2F{cb}{prompt}\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
            p.url
        )
    };
    // Signing in to the first-party portal asks for the password, never for consent.
    let browser = Browser::new();
    let mut step = browser.get(&authorize("platform.portal", "portal", "")).await;
    let login = step.location.clone().unwrap();
    assert!(login.contains("/login"), "{login}");
    let page = browser.get(&login).await;
    let form = [
        ("request", support::hidden_field(&page.body, "request")),
        ("csrf", support::hidden_field(&page.body, "csrf")),
        ("username", "alice".into()),
        ("password", "wonderland".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    step = browser.post(&format!("{}/login", p.url), &form).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert!(param(&back, "code").is_some(), "first-party: no consent page ({back})");

    // evil's app, annotated as it likes, is asked about: silently, it learns nothing.
    let step = browser.get(&authorize("evil.spy", "spy", "&prompt=none")).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("consent_required"), "{back}");
    // Asked, the person sees what identifying means, and decides.
    let step = browser.get(&authorize("evil.spy", "spy", "")).await;
    let consent = step.location.clone().unwrap();
    assert!(consent.contains("/consent"), "{consent}");
    let page = browser.get(&consent).await;
    assert!(page.body.contains("Know who you are"), "{}", page.body);
    let form = [
        ("request", support::hidden_field(&page.body, "request")),
        ("csrf", support::hidden_field(&page.body, "csrf")),
        ("decision", "deny".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let step = browser.post(&format!("{}/consent", p.url), &form).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    let step = browser.get(&authorize("evil.spy", "spy", "&prompt=none")).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("consent_required"),
        "a denial is not consent"
    );
}

/// T4: deleting a client revokes its refresh families and the access tokens they issued, so
/// an object re-created under the same name (in standalone, the same identity) holds nothing.
#[tokio::test]
async fn deleting_a_client_ends_its_refresh_tokens() {
    let web = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: web, namespace: shop}
spec:
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["https://shop.example.com/cb"]
"#;
    let p = TestProvider::start(&[("people.yaml", &people()), ("web.yaml", web)]).await;
    let (id, secret) = p.credentials("shop", "web");
    let url = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid&state=s&redirect_uri=https%3A%2F%2Fshop.example.com%2Fcb",
        p.url
    );
    let back = Browser::new().sign_in(&p.url, &url, ("alice", "wonderland")).await;
    let code = param(&back, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://shop.example.com/cb"),
    ];
    let (status, tokens) = post(&p, "/token", (&id, &secret), &form).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();

    p.remove("web.yaml");
    p.reload();
    p.state.end_grants_of_deleted_clients().await;
    p.write("web.yaml", web);
    p.reload();
    let (status, body) = post(
        &p,
        "/token",
        (&id, &secret),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (_, seen) = post(&p, "/introspect", (&id, &secret), &[("token", access)]).await;
    assert_eq!(seen["active"], false, "its access token is revoked too");
}

/// T4 with a re-created object: a code issued to the old object is worth nothing to the new
/// one under the same id, and neither is the person's consent.
#[tokio::test]
async fn a_recreated_client_inherits_no_code_and_no_consent() {
    let web = |uid: &str| {
        format!(
            "apiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {{name: web, namespace: shop, uid: {uid}}}\nspec:\n  grantTypes: [authorization_code]\n  redirectUris: [\"https://shop.example.com/cb\"]\n"
        )
    };
    let p = TestProvider::start(&[("people.yaml", &people()), ("web.yaml", &web("first-object"))]).await;
    let (id, secret) = p.credentials("shop", "web");
    let url = format!(
        "{}/authorize?client_id=shop.web&response_type=code&scope=openid&state=s&redirect_uri=https%3A%2F%2Fshop.example.com%2Fcb",
        p.url
    );
    let browser = Browser::new();
    let back = browser.sign_in(&p.url, &url, ("alice", "wonderland")).await;
    let code = param(&back, "code").unwrap();

    // Deleted and re-created (a new uid), e.g. by a GitOps replace, before the code is used.
    p.write("web.yaml", &web("second-object"));
    p.reload();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://shop.example.com/cb"),
    ];
    let (status, body) = post(&p, "/token", (&id, &secret), &form).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let step = browser.get(&format!("{url}&prompt=none")).await;
    let back = url::Url::parse(step.location.as_deref().unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("consent_required"), "{back}");
}
