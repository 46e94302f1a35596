//! Reconciler tier: the real reconcilers against a mocked apiserver. Every call is recorded
//! with its method, path and body, and the assertions are on those calls.

use std::sync::{Arc, Mutex};

use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Secret;
use kauth::controller::{Cache, Context, reconcile_client, reconcile_scope, reconcile_signing_key};
use kauth::crd::{OAuthClient, Scope, SigningKey};
use kauth::issuer::Issuer;
use kauth::metrics::Metrics;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    body: Value,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// A fake apiserver: `secrets` answers GETs of Secrets by name and refuses creating one of the
/// same name; other writes echo their body.
fn apiserver(secrets: Vec<Secret>) -> (Client, Calls) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Calls = Arc::default();
    let record = calls.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            record.lock().unwrap().push(Call {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
            });
            let (status, reply) = if method == Method::GET && path.contains("/secrets/") {
                let name = path.rsplit('/').next().unwrap();
                match secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)) {
                    Some(s) => (StatusCode::OK, serde_json::to_value(s).unwrap()),
                    None => (
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                }
            } else if path.ends_with("/status") {
                // A patched object: the patch plus enough of an object to deserialise.
                let mut object = body.clone();
                object["metadata"] = json!({"name": path.rsplit('/').nth(1).unwrap()});
                object["spec"] = json!({"value": "x"});
                (StatusCode::OK, object)
            } else if method == Method::POST
                && path.ends_with("/secrets")
                && secrets
                    .iter()
                    .any(|s| s.metadata.name.as_deref() == body["metadata"]["name"].as_str())
            {
                (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "already exists"}),
                )
            } else if method == Method::POST {
                (StatusCode::CREATED, body)
            } else {
                (StatusCode::OK, body)
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(svc, "default"), calls)
}

fn store<K>(items: Vec<K>) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer: Writer<K> = Writer::default();
    let reader = writer.as_reader();
    writer.apply_watcher_event(&watcher::Event::Init);
    for item in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(item));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

fn ctx(client: Client, clients: Vec<OAuthClient>, scopes: Vec<Scope>) -> Arc<Context> {
    ctx_with_secrets(client, clients, scopes, vec![])
}

/// A context whose cache holds those of `secrets` that carry kauth's credentials label, as
/// the real reflector (which watches only those) would.
fn ctx_with_secrets(
    client: Client,
    clients: Vec<OAuthClient>,
    scopes: Vec<Scope>,
    secrets: Vec<Secret>,
) -> Arc<Context> {
    let labelled = secrets
        .into_iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(kauth::controller::secrets::CREDENTIALS_LABEL))
        })
        .collect();
    let mut cache = Cache {
        claims_read: Default::default(),
        clients: store(clients),
        scopes: store(scopes),
        signing_keys: store(vec![]),
        secrets: store(labelled),
        namespaces: store(vec![]),
        claims: store(vec![]),
        verdicts: Default::default(),
        secret_owners: tokio::sync::broadcast::Sender::new(16),
        own_writes: Default::default(),
    };
    // What the registry loop and the leader do before any reconcile runs: judge everything,
    // record the claims, and judge again once the record holds them.
    let policy = kauth::claims::ClaimPolicy::default();
    let first = cache.publish_catalog(&policy);
    let record = first
        .ledger
        .split()
        .iter()
        .enumerate()
        .filter(|(_, shard)| !shard.is_empty())
        .map(|(i, shard)| kauth::controller::claims_record::shard_config_map("kauth", i, shard))
        .collect();
    cache.claims = store(record);
    cache.publish_catalog(&policy);
    Arc::new(Context::new(
        client,
        cache,
        Arc::new(Issuer::parse("https://auth.example.com").unwrap()),
        "kauth".into(),
        Arc::new(Metrics::new()),
    ))
}

fn client(yaml_spec: Value, uid: &str) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "web", "namespace": "shop", "uid": uid, "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": yaml_spec,
    }))
    .unwrap()
}

fn scope(ns: &str, name: &str, value: &str, granted: &[&str], created: &str) -> Scope {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "generation": 1, "creationTimestamp": created},
        "spec": {"value": value, "audience": "https://orders.example.com", "grantedTo": {"namespaces": granted}},
    }))
    .unwrap()
}

fn writes(calls: &Calls, kind: &str) -> Vec<Call> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method != Method::GET && c.path.contains(kind))
        .cloned()
        .collect()
}

fn status_patch(calls: &Calls) -> Value {
    let patches: Vec<Call> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path.ends_with("/status"))
        .cloned()
        .collect();
    assert_eq!(patches.len(), 1, "exactly one status write");
    patches[0].body["status"].clone()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

#[tokio::test]
async fn secret_is_created_once_and_not_regenerated() {
    let obj = client(json!({"scopes": ["orders.read"]}), "uid-web");
    let scopes = vec![scope(
        "orders",
        "read",
        "orders.read",
        &["shop"],
        "2026-01-01T00:00:00Z",
    )];
    let (api, calls) = apiserver(vec![]);
    reconcile_client(Arc::new(obj.clone()), ctx(api, vec![obj.clone()], scopes.clone()))
        .await
        .unwrap();

    let created = writes(&calls, "/secrets");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].method, Method::POST);
    assert_eq!(created[0].path, "/api/v1/namespaces/shop/secrets");
    let secret: Secret = serde_json::from_value(created[0].body.clone()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("web-oauth"));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("OAuthClient", "uid-web", Some(true))
    );
    let data = secret.data.as_ref().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["CLIENT_ID", "CLIENT_SECRET", "ISSUER_URL", "TOKEN_URL"]
    );
    assert_eq!(data["CLIENT_ID"].0, b"shop.web");
    assert_eq!(data["TOKEN_URL"].0, b"https://auth.example.com/token");
    assert_eq!(data["CLIENT_SECRET"].0.len(), 43);

    let status = status_patch(&calls);
    assert_eq!(status["clientId"], "shop.web");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert!(
        writes(&calls, "/events").is_empty(),
        "a new client's first Secret is routine: no Event (the audit trail and status say it)"
    );

    // Second reconcile with the Secret in place: no Secret write at all.
    let (api, calls) = apiserver(vec![secret.clone()]);
    let mut again = obj.clone();
    again.status = serde_json::from_value(status).unwrap();
    reconcile_client(
        Arc::new(again.clone()),
        ctx_with_secrets(api, vec![again], scopes, vec![secret.clone()]),
    )
    .await
    .unwrap();
    assert!(
        writes(&calls, "/secrets").is_empty(),
        "an existing secret is never re-randomised"
    );
    assert!(writes(&calls, "/status").is_empty(), "unchanged status is not written");
}

#[tokio::test]
async fn a_deleted_secret_is_generated_again_with_a_warning() {
    let mut obj = client(json!({"audiences": ["https://a.example.com"]}), "uid-web");
    // The status says kauth wrote Secret web-oauth; it is gone (deleted by someone).
    obj.status = serde_json::from_value(json!({"secretName": "web-oauth", "secretVersion": 1})).unwrap();
    let (api, calls) = apiserver(vec![]);
    reconcile_client(Arc::new(obj.clone()), ctx(api, vec![obj], vec![]))
        .await
        .unwrap();
    assert_eq!(writes(&calls, "/secrets").len(), 1, "generated again");
    let events: Vec<_> = writes(&calls, "/events")
        .into_iter()
        .filter(|e| e.body["reason"] == "SecretRecreated")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].body["type"], "Warning");
}

#[tokio::test]
async fn rotation_trigger_replaces_the_secret_and_keeps_the_old_one_valid() {
    let one = client(
        json!({"secret": {"rotation": {"trigger": "one", "overlap": "1h"}}, "audiences": ["https://a.example.com"]}),
        "uid-web",
    );
    let (api, calls) = apiserver(vec![]);
    reconcile_client(Arc::new(one.clone()), ctx(api, vec![one.clone()], vec![]))
        .await
        .unwrap();
    let first: Secret = serde_json::from_value(writes(&calls, "/secrets")[0].body.clone()).unwrap();

    let two = client(
        json!({"secret": {"rotation": {"trigger": "two", "overlap": "1h"}}, "audiences": ["https://a.example.com"]}),
        "uid-web",
    );
    let mut stored = first.clone();
    stored.metadata.resource_version = Some("7".into());
    let (api, calls) = apiserver(vec![stored.clone()]);
    reconcile_client(
        Arc::new(two.clone()),
        ctx_with_secrets(api, vec![two], vec![], vec![stored]),
    )
    .await
    .unwrap();
    let replaced = writes(&calls, "/secrets");
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].method, Method::PUT);
    let second: Secret = serde_json::from_value(replaced[0].body.clone()).unwrap();
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some("7"),
        "optimistic concurrency"
    );
    let annotations = second.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["kauth.dev/secret-version"], "2");
    assert_eq!(annotations["kauth.dev/rotation-trigger"], "two");
    assert_ne!(
        second.data.as_ref().unwrap()["CLIENT_SECRET"],
        first.data.as_ref().unwrap()["CLIENT_SECRET"]
    );

    let old = String::from_utf8(first.data.unwrap()["CLIENT_SECRET"].0.clone()).unwrap();
    let state = kauth::controller::secrets::credential_state(&second).unwrap();
    let now = jiff::Timestamp::now();
    assert!(
        state.verifier().verify(&old, now),
        "old secret valid inside the overlap"
    );
    assert!(
        !state.verifier().verify(&old, now + jiff::SignedDuration::from_hours(2)),
        "and not after"
    );
    assert!(
        calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.path.contains("/events") && c.body["reason"] == "SecretRotated")
    );
}

#[tokio::test]
async fn foreign_secret_is_left_alone() {
    let obj = client(json!({"audiences": ["https://a.example.com"]}), "uid-web");
    let foreign: Secret = serde_json::from_value(
        json!({"metadata": {"name": "web-oauth", "namespace": "shop"}, "data": {"CLIENT_SECRET": "c2VjcmV0"}}),
    )
    .unwrap();
    let (api, calls) = apiserver(vec![foreign.clone()]);
    reconcile_client(
        Arc::new(obj.clone()),
        ctx_with_secrets(api, vec![obj], vec![], vec![foreign]),
    )
    .await
    .unwrap();
    // kauth tried to create its Secret, the name was taken (409), and it never replaced or
    // patched the one it found.
    let attempts = writes(&calls, "/secrets");
    assert!(
        attempts.iter().all(|c| c.method == Method::POST),
        "{:?}",
        attempts.iter().map(|c| &c.method).collect::<Vec<_>>()
    );
    assert!(attempts.len() <= 1);
    let status = status_patch(&calls);
    assert_eq!(condition(&status, "SecretReady")["reason"], "SecretConflict");
    assert_eq!(condition(&status, "Ready")["status"], "False");
}

/// Another team labels its own Secret as kauth's, so that it sits in kauth's cache: kauth
/// still sees it is not owned by this client and writes nothing.
#[tokio::test]
async fn a_look_alike_secret_with_kauths_label_is_left_alone() {
    let obj = client(json!({"audiences": ["https://a.example.com"]}), "uid-web");
    let look_alike: Secret = serde_json::from_value(json!({
        "metadata": {"name": "web-oauth", "namespace": "shop",
                     "labels": {kauth::controller::secrets::CREDENTIALS_LABEL: "generated"}},
        "data": {"CLIENT_SECRET": "c2VjcmV0"}
    }))
    .unwrap();
    let (api, calls) = apiserver(vec![look_alike.clone()]);
    reconcile_client(
        Arc::new(obj.clone()),
        ctx_with_secrets(api, vec![obj], vec![], vec![look_alike]),
    )
    .await
    .unwrap();
    assert!(writes(&calls, "/secrets").is_empty());
    let status = status_patch(&calls);
    assert_eq!(condition(&status, "SecretReady")["reason"], "SecretConflict");
}

#[tokio::test]
async fn ungranted_scope_is_named_in_the_condition() {
    let obj = client(json!({"scopes": ["orders.read"]}), "uid-web");
    let scopes = vec![scope(
        "orders",
        "read",
        "orders.read",
        &["billing"],
        "2026-01-01T00:00:00Z",
    )];
    let (api, calls) = apiserver(vec![]);
    reconcile_client(Arc::new(obj.clone()), ctx(api, vec![obj], scopes))
        .await
        .unwrap();
    let status = status_patch(&calls);
    let granted = condition(&status, "ScopesGranted");
    assert_eq!(granted["status"], "False");
    assert_eq!(granted["reason"], "ScopeNotGranted");
    assert!(
        granted["message"]
            .as_str()
            .unwrap()
            .contains("Scope orders/read does not grant 'orders.read' to namespace shop")
    );
    assert_eq!(condition(&status, "Ready")["reason"], "ScopeNotGranted");
    assert!(
        calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.path.contains("/events") && c.body["type"] == "Warning")
    );
}

#[tokio::test]
async fn invalid_client_gets_a_condition_naming_the_field_and_no_secret() {
    let obj = client(json!({"accessTokenLifetime": "forever"}), "uid-web");
    let (api, calls) = apiserver(vec![]);
    reconcile_client(Arc::new(obj.clone()), ctx(api, vec![obj], vec![]))
        .await
        .unwrap();
    assert!(writes(&calls, "/secrets").is_empty());
    let ready = condition(&status_patch(&calls), "Ready").clone();
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.accessTokenLifetime: 'forever'")
    );
}

#[tokio::test]
async fn second_scope_claimant_gets_a_conflict() {
    let first = scope("orders", "read", "orders.read", &[], "2026-01-01T00:00:00Z");
    let second = scope("evil", "read", "orders.read", &["*"], "2026-02-01T00:00:00Z");
    let (api, calls) = apiserver(vec![]);
    reconcile_scope(Arc::new(second.clone()), ctx(api, vec![], vec![second.clone(), first]))
        .await
        .unwrap();
    let accepted = condition(&status_patch(&calls), "Accepted").clone();
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "Conflict");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("'orders.read' is claimed by namespace orders, which claimed it first")
    );
}

#[tokio::test]
async fn signing_key_gets_a_private_key_secret_and_public_keys_in_status() {
    let sk: SigningKey = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "SigningKey",
        "metadata": {"name": "default", "namespace": "kauth", "uid": "uid-sk", "generation": 1},
        "spec": {"algorithm": "ES256", "rotation": {"every": "720h"}},
    }))
    .unwrap();
    let (api, calls) = apiserver(vec![]);
    reconcile_signing_key(Arc::new(sk.clone()), ctx(api, vec![], vec![]))
        .await
        .unwrap();
    let created = writes(&calls, "/secrets");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].path, "/api/v1/namespaces/kauth/secrets");
    let secret: Secret = serde_json::from_value(created[0].body.clone()).unwrap();
    let keys = kauth::controller::secrets::key_set(&secret).unwrap();
    assert_eq!(keys.keys.len(), 1);
    let status = status_patch(&calls);
    assert_eq!(status["activeKid"], keys.keys[0].kid.as_str());
    assert_eq!(status["keys"][0]["state"], "Active");
    assert!(
        !status["keys"][0]["publicJwk"].as_str().unwrap().contains("\"d\""),
        "no private part in status"
    );
    assert!(status["nextRotationStep"].is_string());

    // Outside kauth's namespace the key is refused, and nothing is written but status.
    let mut elsewhere = sk.clone();
    elsewhere.metadata.namespace = Some("team".into());
    let (api, calls) = apiserver(vec![]);
    reconcile_signing_key(Arc::new(elsewhere), ctx(api, vec![], vec![]))
        .await
        .unwrap();
    assert!(writes(&calls, "/secrets").is_empty());
    assert_eq!(condition(&status_patch(&calls), "Ready")["reason"], "WrongNamespace");
}
