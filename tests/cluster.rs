//! Cluster tier: `kauth run` against a real kube-apiserver. Run with `make test-cluster`
//! (KUBECONFIG, or a local etcd + kube-apiserver started by tests/cluster/up.sh). Each test
//! works in namespaces of its own and starts its own `kauth run` processes.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kauth::crd::{OAuthClient, Scope, SigningKey, condition_is_true};
use kauth::manifests::Manifests;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() % 0xfff, nanos % 0xfffff)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn client() -> Client {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a cluster (make test-cluster)");
    install_crds(&client).await;
    client
}

/// Installs crds/ with create/replace (server-side apply of CEL rules fails on old servers).
async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(root().join("crds/kauth.dev.yaml")).unwrap();
    let crds: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text).unwrap();
    for crd in crds {
        let name = crd.name_any();
        match api.get_opt(&name).await.unwrap() {
            None => {
                api.create(&PostParams::default(), &crd).await.unwrap();
            }
            Some(existing) => {
                let mut crd = crd;
                crd.metadata.resource_version = existing.resource_version();
                api.replace(&name, &PostParams::default(), &crd).await.unwrap();
            }
        }
        wait_until("CRD established", Duration::from_secs(20), async || {
            api.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await;
    }
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// Polls `check` every 20 ms until it holds; panics after `limit`. Returns the time it took.
async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `kauth run` child process.
struct Kauth {
    child: Child,
    url: String,
    /// Liveness, readiness and metrics.
    ops_url: String,
    log: PathBuf,
    _state: tempfile::TempDir,
}

impl Kauth {
    async fn start(kauth_ns: &str, identity: &str, kubeconfig: Option<&Path>) -> Self {
        let k = Self::spawn(kauth_ns, identity, kubeconfig);
        k.wait_ready(Duration::from_secs(30)).await;
        k
    }

    fn spawn(kauth_ns: &str, identity: &str, kubeconfig: Option<&Path>) -> Self {
        Self::spawn_with(kauth_ns, identity, kubeconfig, &[])
    }

    fn spawn_with(kauth_ns: &str, identity: &str, kubeconfig: Option<&Path>, extra: &[&str]) -> Self {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let ops_port = free_port();
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("kauth.log");
        let mut cmd = Command::new(kauth_bin());
        cmd.args([
            "run",
            "--issuer",
            &url,
            "--namespace",
            kauth_ns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            &format!("127.0.0.1:{ops_port}"),
        ])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--identity", identity, "--lease-duration", "3s"])
        .args(extra)
        .env("POD_NAME", identity)
        .env("RUST_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(kc) = kubeconfig {
            cmd.env("KUBECONFIG", kc);
        }
        let child = cmd.spawn().unwrap();
        Self {
            child,
            url,
            ops_url: format!("http://127.0.0.1:{ops_port}"),
            log,
            _state: state,
        }
    }

    async fn wait_ready(&self, limit: Duration) {
        let http = reqwest::Client::new();
        let ready = format!("{}/readyz", self.ops_url);
        let start = Instant::now();
        while !http.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(
                start.elapsed() < limit,
                "kauth run did not become ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kauth {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what kauth said last: its log goes with its temp folder.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- last lines of kauth's log ({}):", self.log.display());
            for line in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The examples, moved into this test's namespaces and scope values.
fn examples(id: &str) -> Manifests {
    let mut m = Manifests::default();
    for file in ["scope-orders.yaml", "client-m2m.yaml", "signing-key.yaml"] {
        let text = std::fs::read_to_string(root().join("examples").join(file)).unwrap();
        let text = text
            .replace("namespace: shop", &format!("namespace: shop-{id}"))
            .replace("namespaces: [shop]", &format!("namespaces: [shop-{id}]"))
            .replace("namespace: orders", &format!("namespace: orders-{id}"))
            .replace("namespace: kauth", &format!("namespace: kauth-{id}"))
            .replace("namespace: billing", &format!("namespace: billing-{id}"))
            .replace("orders.read", &format!("orders.read.{id}"))
            .replace("orders.write", &format!("orders.write.{id}"))
            // Audiences belong to the first namespace that declares them: one per test.
            .replace(
                "https://orders.example.com",
                &format!("https://orders-{id}.example.com"),
            );
        m.add_text(Path::new(file), &text);
    }
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m
}

async fn create<K>(client: &Client, obj: &K) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap());
    api.create(&PostParams::default(), obj).await.unwrap()
}

async fn ready_client(client: &Client, ns: &str, name: &str) -> OAuthClient {
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), ns);
    let mut found = None;
    wait_until(
        &format!("OAuthClient {ns}/{name} Ready"),
        Duration::from_secs(30),
        async || {
            found = api.get(name).await.ok().filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| condition_is_true(&s.conditions, "Ready"))
            });
            found.is_some()
        },
    )
    .await;
    found.unwrap()
}

async fn secret_data(client: &Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get(name).await.unwrap();
    s.data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// client_credentials with HTTP Basic.
async fn token(url: &str, id: &str, secret: &str, scope: &str) -> (u16, Value) {
    post_token(
        url,
        Some((id, secret)),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await
}

/// POST /token with a form (and HTTP Basic if given); the status and JSON body.
async fn post_token(url: &str, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{url}/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn examples_become_ready_and_changes_reach_the_token_endpoint_within_a_second() {
    let client = client().await;
    let id = unique();
    for ns in ["kauth", "shop", "orders", "billing"] {
        namespace(&client, &format!("{ns}-{id}")).await;
    }
    let m = examples(&id);
    for (_, k) in &m.signing_keys {
        create(&client, k).await;
    }
    let kauth = Kauth::start(&format!("kauth-{id}"), "solo", None).await;
    for (_, s) in &m.scopes {
        create(&client, s).await;
    }
    let applied = Instant::now();
    create(&client, &m.clients[0].1).await;
    let shop = format!("shop-{id}");
    let oac = ready_client(&client, &shop, "shop-backend").await;
    eprintln!("OAuthClient Ready {:?} after it was applied", applied.elapsed());
    let status = oac.status.unwrap();
    assert_eq!(
        status.client_id.as_deref(),
        Some(format!("shop-{id}.shop-backend").as_str())
    );
    assert_eq!(status.granted_scopes, [format!("orders.read.{id}")]);

    let data = secret_data(&client, &shop, "shop-backend-oauth").await;
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["CLIENT_ID", "CLIENT_SECRET", "ISSUER_URL", "TOKEN_URL"]
    );
    assert_eq!(data["TOKEN_URL"], format!("{}/token", kauth.url));
    let scope = format!("orders.read.{id}");
    let took = wait_until("token obtainable", Duration::from_secs(5), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .0
            == 200
    })
    .await;
    eprintln!(
        "token obtainable {:?} after Ready ({:?} after apply)",
        took,
        applied.elapsed()
    );

    // The signing key reconciled into a Secret and status.
    let sk: SigningKey = Api::namespaced(client.clone(), &format!("kauth-{id}"))
        .get("default")
        .await
        .unwrap();
    assert!(sk.status.unwrap().active_kid.is_some());

    // Withdraw the grant: refused within a second.
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &format!("orders-{id}"));
    scopes
        .patch(
            "orders-read",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": []}}})),
        )
        .await
        .unwrap();
    let took = wait_until("grant withdrawal at /token", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .1["error"]
            == "invalid_scope"
    })
    .await;
    eprintln!("grant withdrawal took effect after {took:?}");
    scopes
        .patch(
            "orders-read",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": [shop.clone()]}}})),
        )
        .await
        .unwrap();
    wait_until("grant restored", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .0
            == 200
    })
    .await;

    // Rotate: the new secret works within a second, the old one still inside the overlap.
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &shop);
    clients
        .patch(
            "shop-backend",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secret": {"rotation": {"trigger": "second"}}}})),
        )
        .await
        .unwrap();
    let mut rotated = None;
    let took = wait_until("rotated secret at /token", Duration::from_secs(1), async || {
        let now = secret_data(&client, &shop, "shop-backend-oauth").await;
        if now["CLIENT_SECRET"] == data["CLIENT_SECRET"] {
            return false;
        }
        let ok = token(&kauth.url, &now["CLIENT_ID"], &now["CLIENT_SECRET"], &scope)
            .await
            .0
            == 200;
        rotated = Some(now);
        ok
    })
    .await;
    eprintln!("rotation took effect after {took:?}");
    assert_eq!(
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &scope)
            .await
            .0,
        200,
        "old secret inside the overlap"
    );
    let rotated = rotated.unwrap();

    // Delete the client: refused within a second.
    clients.delete("shop-backend", &DeleteParams::default()).await.unwrap();
    let took = wait_until("client deletion at /token", Duration::from_secs(1), async || {
        token(&kauth.url, &rotated["CLIENT_ID"], &rotated["CLIENT_SECRET"], &scope)
            .await
            .1["error"]
            == "invalid_client"
    })
    .await;
    eprintln!("deletion took effect after {took:?}");
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn invalid_client_gets_a_condition_and_an_event_naming_the_field() {
    let client = client().await;
    let id = unique();
    let ns = format!("team-{id}");
    namespace(&client, &ns).await;
    namespace(&client, &format!("kauth-{id}")).await;
    let _kauth = Kauth::start(&format!("kauth-{id}"), "solo", None).await;
    let bad: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"accessTokenLifetime": "forever", "audiences": ["https://api.example.com"]}
    }))
    .unwrap();
    create(&client, &bad).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    wait_until("InvalidSpec condition", Duration::from_secs(10), async || {
        api.get("bad").await.ok().and_then(|c| c.status).is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.reason == "InvalidSpec" && c.message.contains("spec.accessTokenLifetime")
            })
        })
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    wait_until("InvalidSpec event", Duration::from_secs(10), async || {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidSpec")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("spec.accessTokenLifetime"))
            })
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(
        secrets.get_opt("bad-oauth").await.unwrap().is_none(),
        "no credentials for an invalid client"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn a_secret_kauth_did_not_create_is_never_touched() {
    let client = client().await;
    let id = unique();
    let ns = format!("team-{id}");
    namespace(&client, &ns).await;
    namespace(&client, &format!("kauth-{id}")).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let foreign = Secret {
        metadata: kube::core::ObjectMeta {
            name: Some("app-oauth".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "CLIENT_SECRET".to_string(),
            ByteString(b"mine".to_vec()),
        )])),
        ..Default::default()
    };
    let foreign = secrets.create(&PostParams::default(), &foreign).await.unwrap();
    let _kauth = Kauth::start(&format!("kauth-{id}"), "solo", None).await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"audiences": ["https://api.example.com"]}
    }))
    .unwrap();
    create(&client, &app).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    wait_until("SecretConflict condition", Duration::from_secs(10), async || {
        api.get("app")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SecretConflict"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = secrets.get("app-oauth").await.unwrap();
    assert_eq!(after.resource_version(), foreign.resource_version(), "never written");
    assert_eq!(after.data, foreign.data);
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn secret_presets_templates_labels_and_an_orphan_kept_and_adopted() {
    let client = client().await;
    let id = unique();
    let ns = format!("team-{id}");
    namespace(&client, &ns).await;
    namespace(&client, &format!("kauth-{id}")).await;
    own_api(&client, &ns).await;
    let kauth = Kauth::start(&format!("kauth-{id}"), "solo", None).await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {
            "scopes": [format!("api.{ns}")],
            "secret": {
                "presets": ["springBoot", "oauth2Proxy", "dotenv"],
                "template": {"AUTH_HEADER": "{{ client_id }}:{{ client_secret }}", "SCOPES": "{{ scopes | join(' ') }}"},
                "labels": {"argocd.argoproj.io/instance": "shop"},
                "annotations": {"reloader.stakater.com/match": "true"},
                "deletionPolicy": "Orphan"
            }
        }
    }))
    .unwrap();
    create(&client, &app).await;
    let ready = ready_client(&client, &ns, "app").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get("app-oauth").await.unwrap();
    let data = secret_data(&client, &ns, "app-oauth").await;
    let spring = |k: &str| data[&format!("SPRING_SECURITY_OAUTH2_CLIENT_{k}")].clone();
    let (id_, secret_) = (
        spring("REGISTRATION_KAUTH_CLIENT_ID"),
        spring("REGISTRATION_KAUTH_CLIENT_SECRET"),
    );
    assert_eq!(Some(&id_), ready.status.as_ref().unwrap().client_id.as_ref());
    assert_eq!(secret_, data["CLIENT_SECRET"]);
    assert_eq!(spring("PROVIDER_KAUTH_ISSUER_URI"), kauth.url);
    assert_eq!(spring("REGISTRATION_KAUTH_SCOPE"), format!("api.{ns}"));
    assert_eq!(data["AUTH_HEADER"], format!("{id_}:{secret_}"));
    assert_eq!(data["SCOPES"], format!("api.{ns}"));
    assert_eq!(data["OAUTH2_PROXY_CLIENT_ID"], id_);
    assert_eq!(data["OAUTH2_PROXY_OIDC_ISSUER_URL"], kauth.url);
    assert!(
        data[".env"].contains(&format!("CLIENT_SECRET={secret_}\n")),
        "{}",
        data[".env"]
    );
    assert_eq!(secret.labels()["argocd.argoproj.io/instance"], "shop");
    assert_eq!(secret.annotations()["reloader.stakater.com/match"], "true");
    assert!(
        secret.owner_references().is_empty(),
        "Orphan: nothing for the garbage collector to follow"
    );
    let (status, _) = token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await;
    assert_eq!(status, 200);

    // A deleted Secret is written again (the controller hears of it through the cache).
    secrets.delete("app-oauth", &DeleteParams::default()).await.unwrap();
    wait_until("the Secret restored", Duration::from_secs(5), async || {
        secrets.get_opt("app-oauth").await.unwrap().is_some()
    })
    .await;
    wait_until("a SecretRecreated Event", Duration::from_secs(5), async || {
        has_event(&client, &ns, "SecretRecreated", "app").await
    })
    .await;
    assert!(
        !has_event(&client, &ns, "SecretCreated", "app").await,
        "the first Secret is routine: no Event"
    );
    let secret_ = secret_data(&client, &ns, "app-oauth").await["CLIENT_SECRET"].clone();
    wait_until("the restored secret works", Duration::from_secs(5), async || {
        token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await.0 == 200
    })
    .await;

    // Deleted: the Secret stays, and its secret stops working with the client.
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    clients.delete("app", &DeleteParams::default()).await.unwrap();
    wait_until("the deleted client refused", Duration::from_secs(5), async || {
        token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await.0 == 401
    })
    .await;
    assert!(
        secrets.get_opt("app-oauth").await.unwrap().is_some(),
        "Orphan keeps the Secret"
    );

    // Another client of the namespace may not take the orphan over by naming it.
    let other: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "other", "namespace": ns},
        "spec": {"scopes": [format!("api.{ns}")], "secret": {"name": "app-oauth"}}
    }))
    .unwrap();
    create(&client, &other).await;
    wait_until(
        "SecretConflict for another client",
        Duration::from_secs(10),
        async || {
            client_condition(&client, &ns, "other")
                .await
                .is_some_and(|(reason, _)| reason == "SecretConflict")
        },
    )
    .await;

    // Created again under the same name (now with policy Delete): adopted, same secret.
    let mut again = app.clone();
    again.spec.secret.as_mut().unwrap().deletion_policy = None;
    create(&client, &again).await;
    let readopted = ready_client(&client, &ns, "app").await;
    wait_until(
        "the Secret owned by the new client",
        Duration::from_secs(10),
        async || {
            secrets.get("app-oauth").await.is_ok_and(|s| {
                s.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == readopted.metadata.uid.as_ref())
            })
        },
    )
    .await;
    assert_eq!(secret_data(&client, &ns, "app-oauth").await["CLIENT_SECRET"], secret_);
    wait_until("the adopted secret works", Duration::from_secs(5), async || {
        token(&kauth.url, &id_, &secret_, &format!("api.{ns}")).await.0 == 200
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn a_previous_secret_in_use_outlives_its_overlap_and_an_unused_one_is_retired() {
    let client = client().await;
    let id = unique();
    let ns = format!("team-{id}");
    namespace(&client, &ns).await;
    namespace(&client, &format!("kauth-{id}")).await;
    own_api(&client, &ns).await;
    // Replicas report secret use every second here (30 s by default).
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let kauth = Kauth::spawn_with(
        &format!("kauth-{id}"),
        "solo",
        None,
        &[
            "--secret-use-report-interval",
            "1s",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
    );
    kauth.wait_ready(Duration::from_secs(30)).await;
    let scope = format!("api.{ns}");
    let rotation = json!({"overlap": "5s", "retirePrevious": "WhenUnused", "quietPeriod": "30s"});
    for name in ["busy", "idle"] {
        let c: OAuthClient = serde_json::from_value(json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scopes": [scope], "secret": {"rotation": rotation}}
        }))
        .unwrap();
        create(&client, &c).await;
    }
    let mut old = BTreeMap::new();
    for name in ["busy", "idle"] {
        let ready = ready_client(&client, &ns, name).await;
        let data = secret_data(&client, &ns, &format!("{name}-oauth")).await;
        let id_ = ready.status.unwrap().client_id.unwrap();
        // Ready is the controller's word; the provider's cache may see the Secret a moment later.
        wait_until("the new client's token", Duration::from_secs(5), async || {
            token(&kauth.url, &id_, &data["CLIENT_SECRET"], &scope).await.0 == 200
        })
        .await;
        old.insert(name, (id_, data["CLIENT_SECRET"].clone()));
    }
    let clients: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    for name in ["busy", "idle"] {
        let patch = json!({"spec": {"secret": {"rotation": {"trigger": "leaked"}}}});
        clients
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    wait_until("both rotated", Duration::from_secs(10), async || {
        let mut rotated = 0;
        for name in ["busy", "idle"] {
            let data = secret_data(&client, &ns, &format!("{name}-oauth")).await;
            rotated += usize::from(data["CLIENT_SECRET"] != old[name].1);
        }
        rotated == 2
    })
    .await;
    // A workload that never reloaded keeps using busy's old secret, every second.
    let (busy_id, busy_old) = old["busy"].clone();
    let url = kauth.url.clone();
    let scope_ = scope.clone();
    let workload = tokio::spawn(async move {
        let mut refused = Vec::new();
        loop {
            let (status, body) = token(&url, &busy_id, &busy_old, &scope_).await;
            if status != 200 {
                refused.push(body);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if refused.len() > 3 {
                break refused;
            }
        }
    });
    // Nobody uses idle's (trying it would be a use): it stops working once unused for the
    // quiet period; its last use was just before the rotation, so about 30 s to 90 s after it.
    let (idle_id, idle_old) = old["idle"].clone();
    let started = Instant::now();
    wait_until("PreviousSecretRetired event", Duration::from_secs(120), async || {
        has_event(&client, &ns, "PreviousSecretRetired", "idle").await
    })
    .await;
    let retired_after = started.elapsed();
    assert!(
        retired_after > Duration::from_secs(20),
        "retired {retired_after:?} after the rotation: before the quiet period"
    );
    assert_eq!(token(&kauth.url, &idle_id, &idle_old, &scope).await.0, 401);
    // Busy's old secret is still in use, so it still works, well past overlap + quiet period,
    // and the status says when each secret was last used.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !workload.is_finished(),
        "busy's old secret was refused: {:?}",
        workload.await
    );
    workload.abort();
    let busy = clients.get("busy").await.unwrap().status.unwrap();
    let previous = busy
        .secret_usage
        .iter()
        .find(|u| u.version == 1)
        .expect("previous secret in status");
    assert!(
        previous.last_used.is_some() && previous.valid_until.is_some(),
        "{busy:?}"
    );
    assert!(has_event(&client, &ns, "PreviousSecretInUse", "busy").await);
    // A namespace that tries to take the API's scope value gets a Conflict, and the audit
    // trail records it beside the rotations and the retirement, with no secret in any line.
    let thief = format!("thief-{id}");
    namespace(&client, &thief).await;
    let stolen: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "api", "namespace": thief},
        "spec": {"value": scope}
    }))
    .unwrap();
    create(&client, &stolen).await;
    let audit_lines = async || -> Vec<Value> {
        std::fs::read_to_string(&audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until("claim_conflict audit record", Duration::from_secs(10), async || {
        audit_lines()
            .await
            .iter()
            .any(|l| l["event"] == "claim_conflict" && l["namespace"] == thief.as_str() && l["resource"] == "Scope/api")
    })
    .await;
    let lines = audit_lines().await;
    let of = |event: &str, name: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == event && l["resource"] == format!("OAuthClient/{name}").as_str())
            .count()
    };
    assert_eq!(
        (of("secret_rotated", "busy"), of("secret_rotated", "idle")),
        (1, 1),
        "{lines:?}"
    );
    assert_eq!(
        (of("secret_created", "busy"), of("secret_created", "idle")),
        (1, 1),
        "each client's first secret: {lines:?}"
    );
    assert_eq!(of("previous_secret_retired", "idle"), 1, "{lines:?}");
    assert_eq!(of("previous_secret_retired", "busy"), 0, "{lines:?}");
    let text = std::fs::read_to_string(&audit_log).unwrap();
    for name in ["busy", "idle"] {
        let now = secret_data(&client, &ns, &format!("{name}-oauth")).await;
        assert!(
            !text.contains(&old[name].1) && !text.contains(&now["CLIENT_SECRET"]),
            "a secret in the audit trail"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", kauth.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kauth_previous_secret_uses_total") && l.contains(&old["busy"].0)),
        "old-secret use per client in the metrics"
    );
}

/// True when `ns` has an Event with `reason` about the object named `name`.
async fn has_event(client: &Client, ns: &str, reason: &str, name: &str) -> bool {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt("kauth-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// The Scope of a namespace's own API (audience `https://<ns>.example.com`): a Scope's own
/// namespace is always granted, and a client gets tokens only for audiences of its Scopes.
async fn own_api(client: &Client, ns: &str) {
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "api", "namespace": ns},
        "spec": {"value": format!("api.{ns}"), "audience": format!("https://{ns}.example.com")}
    }))
    .unwrap();
    create(client, &scope).await;
}

/// A client of its namespace's own API ([`own_api`]).
fn m2m_client(ns: &str, name: &str) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scopes": [format!("api.{ns}")]}
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn one_leader_writes_another_takes_over_and_every_replica_serves() {
    let client = client().await;
    let id = unique();
    let kns = format!("kauth-{id}");
    let ns = format!("team-{id}");
    namespace(&client, &kns).await;
    namespace(&client, &ns).await;
    let mut a = Kauth::start(&kns, "replica-a", None).await;
    wait_until("replica-a leads", Duration::from_secs(10), async || {
        lease_holder(&client, &kns).await.as_deref() == Some("replica-a")
    })
    .await;
    let b = Kauth::start(&kns, "replica-b", None).await;

    own_api(&client, &ns).await;
    create(&client, &m2m_client(&ns, "first")).await;
    ready_client(&client, &ns, "first").await;
    let data = secret_data(&client, &ns, "first-oauth").await;
    for url in [&a.url, &b.url] {
        wait_until("both replicas serve", Duration::from_secs(5), async || {
            token(url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], "").await.0 == 200
        })
        .await;
    }
    // Only the leader wrote: every kauth Event so far comes from replica-a.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reporters: Vec<Option<String>> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.reporting_instance)
        .collect();
    assert!(!reporters.is_empty());
    assert!(
        reporters.iter().all(|r| r.as_deref() == Some("replica-a")),
        "{reporters:?}"
    );
    assert_eq!(lease_holder(&client, &kns).await.as_deref(), Some("replica-a"));

    // Kill the leader without a goodbye: replica-b takes over within the lease duration.
    a.kill();
    let killed = Instant::now();
    let took = wait_until("replica-b takes over", Duration::from_secs(8), async || {
        assert_eq!(
            token(&b.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], "").await.0,
            200,
            "replica-b serves throughout"
        );
        lease_holder(&client, &kns).await.as_deref() == Some("replica-b")
    })
    .await;
    eprintln!("replica-b took the lease {took:?} after replica-a died");
    create(&client, &m2m_client(&ns, "second")).await;
    ready_client(&client, &ns, "second").await;
    eprintln!(
        "a client applied after the failover was Ready {:?} after the kill",
        killed.elapsed()
    );
}

/// Renders the chart and applies its ServiceAccount and RBAC; returns a kubeconfig for a
/// TokenRequest token of that ServiceAccount.
async fn chart_identity(client: &Client, kns: &str, release: &str, dir: &Path) -> PathBuf {
    let helm = PathBuf::from(std::env::var("KAUTH_TOOLS").expect("KAUTH_TOOLS (tests/cluster/tools.sh)")).join("helm");
    let out = Command::new(helm)
        .args([
            "template",
            release,
            "charts/kauth",
            "-n",
            kns,
            "--set",
            "issuer=http://127.0.0.1",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let pp = PostParams::default();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => drop(
                Api::<ServiceAccount>::namespaced(client.clone(), kns)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "ClusterRole" => drop(
                Api::<ClusterRole>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "ClusterRoleBinding" => drop(
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "Role" => drop(
                Api::<Role>::namespaced(client.clone(), kns)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "RoleBinding" => drop(
                Api::<RoleBinding>::namespaced(client.clone(), kns)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            _ => {}
        }
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), kns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sa_name = format!("{release}-kauth");
    let token = sas
        .create_token_request(&sa_name, &pp, &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    // The admin kubeconfig with the ServiceAccount's token instead of the admin's.
    let admin = kube::config::Kubeconfig::read().unwrap();
    let mut kc = admin.clone();
    for auth in &mut kc.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.token = Some(token.clone().into());
        }
    }
    let path = dir.join("sa-kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn the_charts_rbac_is_enough_and_no_more() {
    let client = client().await;
    let id = unique();
    let kns = format!("kauth-{id}");
    let ns = format!("team-{id}");
    namespace(&client, &kns).await;
    namespace(&client, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = chart_identity(&client, &kns, &format!("r{id}"), dir.path()).await;
    let kauth = Kauth::start(&kns, "rbac", Some(&kubeconfig)).await;

    own_api(&client, &ns).await;
    create(&client, &m2m_client(&ns, "app")).await;
    ready_client(&client, &ns, "app").await;
    wait_until(
        "claims recorded with the chart's identity",
        Duration::from_secs(5),
        async || recorded_claim(&client, &kns, "scopeValues", &format!("api.{ns}")).await["namespace"] == json!(ns),
    )
    .await;
    let data = secret_data(&client, &ns, "app-oauth").await;
    wait_until("token with the chart's identity", Duration::from_secs(5), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], "")
            .await
            .0
            == 200
    })
    .await;
    wait_until("default SigningKey created", Duration::from_secs(5), async || {
        Api::<SigningKey>::namespaced(client.clone(), &kns)
            .get_opt("default")
            .await
            .unwrap()
            .is_some()
    })
    .await;

    // The chart's identity may read the ServiceAccount issuer's keys: secretless clients work.
    service_account(&client, &ns, "worker").await;
    let sa_client: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "worker", "namespace": ns},
        "spec": {"serviceAccount": "worker", "scopes": [format!("api.{ns}")]}
    }))
    .unwrap();
    create(&client, &sa_client).await;
    ready_client(&client, &ns, "worker").await;
    let projected = mint(&client, &ns, "worker", &kauth.url).await;
    wait_until(
        "ServiceAccount token with the chart's identity",
        Duration::from_secs(5),
        async || {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", kauth::workload_identity::JWT_BEARER_ASSERTION),
                ("client_assertion", projected.as_str()),
            ];
            post_token(&kauth.url, None, &form).await.0 == 200
        },
    )
    .await;

    // The same identity may not write outside its rules.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let sa_client = Client::try_from(config).unwrap();
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let sa_secrets: Api<Secret> = Api::namespaced(sa_client.clone(), &ns);
    assert!(
        forbidden(
            sa_secrets
                .delete("app-oauth", &DeleteParams::default())
                .await
                .map(|_| ())
        ),
        "delete Secret"
    );
    // ConfigMaps: kauth may create (the JWKS one; create cannot be bound to a name), but it
    // cannot read, list, change or delete any ConfigMap but `kauth-jwks`.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x", "namespace": ns}})).unwrap();
    create(&client, &cm).await;
    let sa_config_maps = Api::<ConfigMap>::namespaced(sa_client.clone(), &ns);
    assert!(
        forbidden(sa_config_maps.get("x").await.map(|_| ())),
        "get another ConfigMap"
    );
    assert!(
        forbidden(sa_config_maps.list(&ListParams::default()).await.map(|_| ())),
        "list ConfigMaps"
    );
    let change = Patch::Merge(json!({"data": {"k": "v"}}));
    assert!(
        forbidden(
            sa_config_maps
                .patch("x", &PatchParams::default(), &change)
                .await
                .map(|_| ())
        ),
        "patch another ConfigMap"
    );
    assert!(
        forbidden(sa_config_maps.delete("x", &DeleteParams::default()).await.map(|_| ())),
        "delete another ConfigMap"
    );
    let spec_patch = Patch::Merge(json!({"spec": {"audiences": ["https://evil.example.com"]}}));
    assert!(
        forbidden(
            Api::<OAuthClient>::namespaced(sa_client.clone(), &ns)
                .patch("app", &PatchParams::default(), &spec_patch)
                .await
                .map(|_| ())
        ),
        "patch an OAuthClient's spec"
    );
    let other_ns_key: SigningKey =
        serde_json::from_value(json!({"metadata": {"name": "k", "namespace": ns}, "spec": {}})).unwrap();
    assert!(
        forbidden(
            Api::<SigningKey>::namespaced(sa_client, &ns)
                .create(&PostParams::default(), &other_ns_key)
                .await
                .map(|_| ())
        ),
        "SigningKey outside kauth's namespace"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn scale_a_thousand_clients_become_ready() {
    let (n, client, id, kns, ns) = scale_setup("scale").await;
    let kauth = Kauth::start(&kns, "scale", None).await;
    scale_scope(&client, &ns, &format!("scale.read.{id}")).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    // Counted from one watch, as an observer would. Listing every client every 20 ms cost
    // the apiserver more CPU than kauth's own writes did, and slowed what it measured.
    let all_ready = tokio::spawn(all_ready(api.clone(), n));
    let cpu_before = Cpu::now(kauth.child.id());
    let started = Instant::now();
    create_scale_clients(&api, n, &format!("scale.read.{id}")).await;
    let applied = started.elapsed();
    tokio::time::timeout(Duration::from_secs(600), all_ready)
        .await
        .expect("every client Ready within 600 s")
        .unwrap();
    let ready = started.elapsed();
    let memory = |field: &str| {
        std::fs::read_to_string(format!("/proc/{}/status", kauth.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let rss_at_ready = memory("VmRSS:");
    let cpu = Cpu::now(kauth.child.id()).since(&cpu_before);
    // At the moment the last client turns Ready, kauth may be building the catalog for the
    // last Secrets next to the one it serves; a few seconds later only one is left.
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!(
        "scale: {n} OAuthClients applied in {applied:?}; all Ready {ready:?} after the first was applied; kauth RSS {rss_at_ready} then, {} 5 s later, peak {}; CPU seconds meanwhile: {cpu}",
        memory("VmRSS:"),
        memory("VmHWM:")
    );
    remove_scale_clients(&client, &ns).await;
}

/// A scale test's client count (`make bench` sets 10,000; the suite keeps 1,000 within CI's
/// time), apiserver client, run id, and kauth's and the clients' namespaces (created).
async fn scale_setup(prefix: &str) -> (usize, Client, String, String, String) {
    let n: usize = std::env::var("KAUTH_SCALE_CLIENTS").map_or(1000, |v| v.parse().unwrap());
    let client = client().await;
    let id = unique();
    let kns = format!("kauth-{id}");
    let ns = format!("{prefix}-{id}");
    namespace(&client, &kns).await;
    namespace(&client, &ns).await;
    (n, client, id, kns, ns)
}

/// The Scope of a scale test: `value` granted to its own namespace.
async fn scale_scope(client: &Client, ns: &str, value: &str) {
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": ns},
        "spec": {"value": value, "audience": format!("https://{ns}.example.com")}
    }))
    .unwrap();
    create(client, &scope).await;
}

/// Creates OAuthClients `c0`..`c{n-1}` asking for `scope`, 16 at a time.
async fn create_scale_clients(api: &Api<OAuthClient>, n: usize, scope: &str) {
    let ns = api.namespace().unwrap_or_default().to_string();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let obj: OAuthClient = serde_json::from_value(json!({
                "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
                "metadata": {"name": format!("c{i}"), "namespace": ns},
                "spec": {"scopes": [scope]}
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &obj).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// Deletes a scale test's clients and Secrets: the test cluster has no garbage collector, and
/// every later kauth of the run would otherwise cache and judge them too.
async fn remove_scale_clients(client: &Client, ns: &str) {
    delete_all(Api::<OAuthClient>::namespaced(client.clone(), ns)).await;
    delete_all(Api::<Secret>::namespaced(client.clone(), ns)).await;
}

/// Deletes everything in `api`. Deleting 10,000 objects can outlast the apiserver's request
/// deadline (it answers 500, having deleted some): the next call takes up what is left.
async fn delete_all<K>(api: Api<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for attempt in 1.. {
        match api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            Ok(_) => return,
            Err(e) if attempt < 5 => eprintln!("deleting all {}: {e}; again", K::kind(&())),
            Err(e) => panic!("deleting all {}: {e}", K::kind(&())),
        }
    }
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn scale_kauth_starts_on_existing_clients() {
    // Where the time of the scale test goes: the same clients, created before kauth runs, so
    // the apiserver's cost of the creates and kauth's cost (its writes and the apiserver's
    // work for them) are measured apart.
    let (n, client, id, kns, ns) = scale_setup("existing").await;
    scale_scope(&client, &ns, &format!("existing.read.{id}")).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    let before_creates = Cpu::now(0);
    let started = Instant::now();
    create_scale_clients(&api, n, &format!("existing.read.{id}")).await;
    let applied = started.elapsed();
    let creates = Cpu::now(0).since(&before_creates);
    let all_ready = tokio::spawn(all_ready(api.clone(), n));
    let started = Instant::now();
    let kauth = Kauth::start(&kns, "existing", None).await;
    let cpu_before = Cpu::now(kauth.child.id());
    tokio::time::timeout(Duration::from_secs(600), all_ready)
        .await
        .expect("every client Ready within 600 s")
        .unwrap();
    let cpu = Cpu::now(kauth.child.id()).since(&cpu_before);
    eprintln!(
        "scale (clients there before kauth): {n} OAuthClients created in {applied:?} with nothing else running (CPU seconds: {creates}); kauth started and made all Ready in {:?} (CPU seconds: {cpu})",
        started.elapsed()
    );
    remove_scale_clients(&client, &ns).await;
}

/// Returns once all `n` OAuthClients of `api` are Ready, as one watch of them tells.
async fn all_ready(api: Api<OAuthClient>, n: usize) {
    use kube::runtime::{WatchStreamExt, watcher};
    let mut ready = std::collections::HashSet::new();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(client) = events.next().await {
        let Ok(client) = client else { continue };
        let is_ready = client
            .status
            .as_ref()
            .is_some_and(|s| condition_is_true(&s.conditions, "Ready"));
        if is_ready {
            ready.insert(client.name_any());
        } else {
            ready.remove(&client.name_any());
        }
        if ready.len() == n {
            return;
        }
    }
}

async fn service_account(client: &Client, ns: &str, name: &str) {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

/// A projected-style token for a ServiceAccount, from the TokenRequest API.
async fn mint(client: &Client, ns: &str, sa: &str, audience: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    api.create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn service_account_tokens_are_client_credentials() {
    use kauth::workload_identity::{JWT_BEARER_ASSERTION, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
    let client = client().await;
    let id = unique();
    let (kns, ns, other_ns, api_ns) = (
        format!("kauth-{id}"),
        format!("team-{id}"),
        format!("other-{id}"),
        format!("api-{id}"),
    );
    for n in [&kns, &ns, &other_ns, &api_ns] {
        namespace(&client, n).await;
    }
    service_account(&client, &ns, "backend").await;
    service_account(&client, &ns, "frontend").await;
    service_account(&client, &other_ns, "backend").await;
    let audience = format!("https://api-{id}.example.com");
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": api_ns},
        "spec": {"value": format!("sa.read.{id}"), "audience": audience, "grantedTo": {"namespaces": [ns]}}
    }))
    .unwrap();
    create(&client, &scope).await;
    let kauth = Kauth::start(&kns, "sa", None).await;
    let oac: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "backend", "namespace": ns},
        "spec": {
            "serviceAccount": "backend",
            "grantTypes": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
            "scopes": [format!("sa.read.{id}")]
        }
    }))
    .unwrap();
    create(&client, &oac).await;
    let ready = ready_client(&client, &ns, "backend").await;
    let conditions = ready.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "SecretReady" && c.reason == "ServiceAccount")
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("backend-oauth")
            .await
            .unwrap()
            .is_none(),
        "no Secret is written"
    );

    let assert_with = |token: String| {
        let url = kauth.url.clone();
        async move {
            post_token(
                &url,
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", JWT_BEARER_ASSERTION),
                    ("client_assertion", &token),
                ],
            )
            .await
        }
    };
    let good = mint(&client, &ns, "backend", &kauth.url).await;
    wait_until("ServiceAccount token accepted", Duration::from_secs(5), async || {
        assert_with(good.clone()).await.0 == 200
    })
    .await;
    let (_, body) = assert_with(good.clone()).await;
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(body["access_token"].as_str().unwrap())
        .unwrap()
        .claims;
    assert_eq!(
        claims["sub"],
        format!("client:{ns}.backend"),
        "never a person's subject"
    );
    assert_eq!(claims["aud"], audience.as_str());

    let refused = [
        (
            "another ServiceAccount",
            mint(&client, &ns, "frontend", &kauth.url).await,
        ),
        (
            "another namespace",
            mint(&client, &other_ns, "backend", &kauth.url).await,
        ),
        (
            "wrong audience",
            mint(&client, &ns, "backend", "https://not-kauth.example.com").await,
        ),
        ("unknown key", {
            let stranger = kauth::keys::generate_key(kauth::crd::KeyAlgorithm::RS256, jiff::Timestamp::now()).unwrap();
            let good_claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&good).unwrap().claims;
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some("not-a-cluster-key".into());
            jsonwebtoken::encode(&h, &good_claims, &stranger.encoding_key().unwrap()).unwrap()
        }),
    ];
    for (what, token) in refused {
        let (status, body) = assert_with(token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {body}"
        );
    }
    // Expired: signed with the cluster's own key (only where the harness started the cluster).
    if let Ok(key_path) = std::env::var("KAUTH_SA_SIGNING_KEY") {
        let header = jsonwebtoken::decode_header(&good).unwrap();
        let mut claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&good).unwrap().claims;
        let now = jiff::Timestamp::now().as_second();
        claims["exp"] = json!(now - 3600);
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key_path).unwrap()).unwrap();
        let expired = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let (status, body) = assert_with(expired).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "expired: {body}"
        );
    }

    // Token exchange: only audiences the client was granted.
    let exchange = |aud: String| {
        let (url, good) = (kauth.url.clone(), good.clone());
        async move {
            post_token(
                &url,
                None,
                &[
                    ("grant_type", TOKEN_EXCHANGE_GRANT),
                    ("subject_token", &good),
                    ("subject_token_type", JWT_TOKEN_TYPE),
                    ("audience", &aud),
                ],
            )
            .await
        }
    };
    let (status, body) = exchange(audience.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let (status, body) = exchange("https://payments.example.com".into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn kauth_run_waits_for_missing_crds_and_says_so() {
    let client = client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["oauthclients.kauth.dev", "scopes.kauth.dev", "signingkeys.kauth.dev"] {
        let _ = crds.delete(name, &DeleteParams::default()).await;
    }
    wait_until("CRDs gone", Duration::from_secs(60), async || {
        crds.get_opt("oauthclients.kauth.dev").await.unwrap().is_none()
            && crds.get_opt("scopes.kauth.dev").await.unwrap().is_none()
            && crds.get_opt("signingkeys.kauth.dev").await.unwrap().is_none()
    })
    .await;
    let id = unique();
    namespace(&client, &format!("kauth-{id}")).await;
    let kauth = Kauth::spawn(&format!("kauth-{id}"), "waiter", None);
    wait_until(
        "a clear message about the missing CRDs",
        Duration::from_secs(10),
        async || {
            kauth
                .log_text()
                .contains("kauth's CRDs are not installed: apply crds/kauth.dev.yaml")
        },
    )
    .await;
    install_crds(&client).await;
    kauth.wait_ready(Duration::from_secs(30)).await;
    assert!(kauth.log_text().contains("kauth's CRDs are installed"));
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn token_review_refuses_a_bound_token_once_its_object_is_gone() {
    use k8s_openapi::api::authentication::v1::BoundObjectReference;
    let client = client().await;
    let id = unique();
    let (kns, ns) = (format!("kauth-{id}"), format!("team-{id}"));
    namespace(&client, &kns).await;
    namespace(&client, &ns).await;
    service_account(&client, &ns, "job").await;
    let kauth = Kauth::spawn_with(&kns, "review", None, &["--service-account-token-review"]);
    kauth.wait_ready(Duration::from_secs(30)).await;
    own_api(&client, &ns).await;
    create(&client, &m2m_client_for_sa(&ns, "job")).await;
    ready_client(&client, &ns, "job").await;

    // A token bound to an object (a Secret here; a Pod in real life) dies with it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let anchor: Secret = serde_json::from_value(json!({"metadata": {"name": "anchor", "namespace": ns}})).unwrap();
    let anchor = secrets.create(&PostParams::default(), &anchor).await.unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![kauth.url.clone()]),
            expiration_seconds: Some(600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some("anchor".into()),
                uid: anchor.uid(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request("job", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", kauth::workload_identity::JWT_BEARER_ASSERTION),
        ("client_assertion", token.as_str()),
    ];
    wait_until("bound token accepted", Duration::from_secs(5), async || {
        post_token(&kauth.url, None, &form).await.0 == 200
    })
    .await;
    secrets.delete("anchor", &DeleteParams::default()).await.unwrap();
    // The apiserver caches its own answers about 10 s, kauth 5 s more.
    let took = wait_until(
        "bound token refused after its object is deleted",
        Duration::from_secs(20),
        async || post_token(&kauth.url, None, &form).await.1["error"] == "invalid_client",
    )
    .await;
    eprintln!("a deleted object's token was refused {took:?} after the deletion");
}

/// A secretless client of its namespace's own API ([`own_api`]).
fn m2m_client_for_sa(ns: &str, sa: &str) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": sa, "namespace": ns},
        "spec": {"serviceAccount": sa, "scopes": [format!("api.{ns}")]}
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn namespace_labels_grant_and_withdraw_scopes_within_a_second() {
    let client = client().await;
    let id = unique();
    let (kns, ns, api_ns) = (format!("kauth-{id}"), format!("team-{id}"), format!("api-{id}"));
    for n in [&kns, &ns, &api_ns] {
        namespace(&client, n).await;
    }
    let kauth = Kauth::start(&kns, "selector", None).await;
    let value = format!("labelled.read.{id}");
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": api_ns},
        "spec": {"value": value, "audience": format!("https://labelled-{id}.example.com"),
                 "grantedTo": {"namespaceSelector": {"matchLabels": {"kauth-test/team": id}}}}
    }))
    .unwrap();
    create(&client, &scope).await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"scopes": [value]}
    }))
    .unwrap();
    create(&client, &app).await;
    let api: Api<OAuthClient> = Api::namespaced(client.clone(), &ns);
    let not_granted = async |what: &str| {
        wait_until(what, Duration::from_secs(5), async || {
            api.get("app")
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "ScopeNotGranted"))
        })
        .await
    };
    not_granted("ScopeNotGranted before the label").await;
    let data = secret_data(&client, &ns, "app-oauth").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = |v: Value| Patch::Merge(json!({"metadata": {"labels": {"kauth-test/team": v}}}));
    namespaces
        .patch(&ns, &PatchParams::default(), &label(json!(id)))
        .await
        .unwrap();
    let took = wait_until("granted by label", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &value)
            .await
            .0
            == 200
    })
    .await;
    eprintln!("a namespace label granted the scope after {took:?}");
    // The status follows the label too, although nothing about the client itself changed.
    let took = wait_until("Ready by label", Duration::from_secs(5), async || {
        api.get("app")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| condition_is_true(&s.conditions, "Ready"))
    })
    .await;
    eprintln!("the client's status became Ready after {took:?}");
    namespaces
        .patch(&ns, &PatchParams::default(), &label(Value::Null))
        .await
        .unwrap();
    wait_until("withdrawn with the label", Duration::from_secs(1), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &value)
            .await
            .1["error"]
            == "invalid_scope"
    })
    .await;
    not_granted("ScopeNotGranted after the label is gone").await;
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn sigterm_stops_cleanly_and_hands_the_lease_over() {
    let client = client().await;
    let id = unique();
    let kns = format!("kauth-{id}");
    namespace(&client, &kns).await;
    let mut kauth = Kauth::start(&kns, "leaving", None).await;
    wait_until("leads", Duration::from_secs(10), async || {
        lease_holder(&client, &kns).await.as_deref() == Some("leaving")
    })
    .await;
    let pid = kauth.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = kauth.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", kauth.log_text());
    assert_eq!(
        lease_holder(&client, &kns).await,
        None,
        "the lease is released for the next replica"
    );
    assert!(kauth.log_text().contains("shutting down"));
}

#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn a_person_signs_in_through_kauth_run_and_gets_an_rs256_id_token() {
    let client = client().await;
    let id = unique();
    let (kns, ns) = (format!("kauth-{id}"), format!("app-{id}"));
    for n in [&kns, &ns] {
        namespace(&client, n).await;
    }
    // The chart mounts the kauth-users Secret; here the file stands in for the mount.
    let people = tempfile::tempdir().unwrap();
    let users = people.path().join("users.yaml");
    std::fs::write(
        &users,
        format!(
            "users:\n- username: alice\n  email: alice@example.com\n  passwordHash: '{}'\n",
            kauth::people::hash_password("wonderland")
        ),
    )
    .unwrap();
    let kauth = Kauth::spawn_with(&kns, "sign-in", None, &["--users-file", users.to_str().unwrap()]);
    kauth.wait_ready(Duration::from_secs(30)).await;
    let web: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"grantTypes": ["authorization_code"], "redirectUris": ["https://app.example.com/cb"]}
    }))
    .unwrap();
    create(&client, &web).await;
    ready_client(&client, &ns, "web").await;
    let creds = secret_data(&client, &ns, "web-oauth").await;
    // With no SigningKey at all, kauth creates the ES256 default and an RS256 key for ID tokens.
    let keys: Api<SigningKey> = Api::namespaced(client.clone(), &kns);
    wait_until("default SigningKeys", Duration::from_secs(10), async || {
        let names: Vec<String> = keys
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|k| k.name_any())
            .collect();
        names.contains(&"default".to_string()) && names.contains(&"default-rs256".to_string())
    })
    .await;

    // The provider publishes the RS256 key once its Secret reached the cache.
    wait_until("an RS256 key in the JWKS", Duration::from_secs(20), async || {
        let jwks: Value = reqwest::get(format!("{}/jwks", kauth.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"].as_array().unwrap().iter().any(|k| k["kty"] == "RSA")
    })
    .await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = format!(
        "{}/authorize?client_id={}&response_type=code&scope=openid%20email&state=s&nonce=n&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb",
        kauth.url, creds["CLIENT_ID"]
    );
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
    let mut to_client = None;
    // The client's Secret may still be on its way into the provider's registry (Ready is
    // written by the controller, which does not wait for the provider): retry briefly.
    wait_until("sign-in through kauth run", Duration::from_secs(20), async || {
        let r = browser.get(&authorize).send().await.unwrap();
        if r.status() != 303 {
            return false;
        }
        let page = browser.get(location(&r)).send().await.unwrap().text().await.unwrap();
        let form = [
            ("request", support::hidden_field(&page, "request")),
            ("csrf", support::hidden_field(&page, "csrf")),
            ("username", "alice".into()),
            ("password", "wonderland".into()),
        ];
        let r = browser
            .post(format!("{}/login", kauth.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        if r.status() != 303 {
            return false;
        }
        let page = browser.get(location(&r)).send().await.unwrap().text().await.unwrap();
        let form = [
            ("request", support::hidden_field(&page, "request")),
            ("csrf", support::hidden_field(&page, "csrf")),
            ("decision", "allow".into()),
        ];
        let r = browser
            .post(format!("{}/consent", kauth.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        to_client = Some(location(&r));
        true
    })
    .await;
    let back = url::Url::parse(&to_client.unwrap()).unwrap();
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let tokens: Value = reqwest::Client::new()
        .post(format!("{}/token", kauth.url))
        .basic_auth(&creds["CLIENT_ID"], Some(&creds["CLIENT_SECRET"]))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example.com/cb"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: Value = reqwest::get(format!("{}/jwks", kauth.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"].as_str() == header.kid.as_deref()),
        "the ID token's key is published"
    );
}

/// The claim kauth recorded on `name` of `kind` (`scopeValues`, `audiences`, `clientIds`), as
/// JSON: its shard of the claims record in kauth's namespace, by the name's key (Null while
/// the record holds none).
async fn recorded_claim(client: &Client, kns: &str, kind: &str, name: &str) -> Value {
    use kauth::controller::claims_record::{KEY, shard_name};
    let key = kauth::claims::claim_key(name);
    Api::<ConfigMap>::namespaced(client.clone(), kns)
        .get_opt(&shard_name(kauth::claims::shard_of(&key)))
        .await
        .unwrap()
        .and_then(|cm| cm.data)
        .and_then(|d| d.get(KEY).cloned())
        .map(|text| serde_json::from_str::<Value>(&text).unwrap()[kind][&key].clone())
        .unwrap_or(Value::Null)
}

/// The Accepted condition's reason and message of a Scope.
async fn scope_condition(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
    let scope = Api::<Scope>::namespaced(client.clone(), ns).get(name).await.ok()?;
    scope
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Accepted")
        .map(|c| (c.reason, c.message))
}

/// The Ready condition's reason and message of an OAuthClient.
async fn client_condition(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
    let oac = Api::<OAuthClient>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    oac.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason, c.message))
}

/// The hostile tenant on a real apiserver (README, Tenancy, T1 and T3): evil squats a Scope value
/// and an explicit client id, then waits while the owners' objects are broken, deleted and
/// re-created, and while kauth is killed and a new leader takes over.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn claims_hold_through_broken_deleted_recreated_owners_and_a_new_leader() {
    let client = client().await;
    let id = unique();
    let (kns, orders, one, evil) = (
        format!("kauth-{id}"),
        format!("orders-{id}"),
        format!("one-{id}"),
        format!("evil-{id}"),
    );
    for n in [&kns, &orders, &one, &evil] {
        namespace(&client, n).await;
    }
    let mut first = Kauth::start(&kns, "first", None).await;
    let value = format!("orders.write.{id}");
    let legacy = format!("legacy-{id}");
    let owner_scope = |selector: Value| -> Scope {
        serde_json::from_value(json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "write", "namespace": orders},
            "spec": {"value": value, "audience": format!("https://orders-{id}.example.com"), "grantedTo": selector}
        }))
        .unwrap()
    };
    create(&client, &owner_scope(json!({}))).await;
    let api: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "api", "namespace": orders}, "spec": {"scopes": [value]}
    }))
    .unwrap();
    create(&client, &api).await;
    let legit: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": one}, "spec": {"clientId": legacy}
    }))
    .unwrap();
    create(&client, &legit).await;
    ready_client(&client, &orders, "api").await;
    wait_until("claims recorded", Duration::from_secs(5), async || {
        let audience = format!("https://orders-{id}.example.com");
        recorded_claim(&client, &kns, "scopeValues", &value).await["namespace"] == json!(orders)
            && recorded_claim(&client, &kns, "audiences", &audience).await["namespace"] == json!(orders)
            && recorded_claim(&client, &kns, "clientIds", &legacy).await["namespace"] == json!(one)
    })
    .await;

    // The attacker arrives.
    let squat: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "squat", "namespace": evil},
        "spec": {"value": value, "audience": format!("https://evil-{id}.example.com"), "grantedTo": {"namespaces": ["*"]}}
    }))
    .unwrap();
    create(&client, &squat).await;
    let thief: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "thief", "namespace": evil}, "spec": {"scopes": [value]}
    }))
    .unwrap();
    create(&client, &thief).await;
    let twin: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "twin", "namespace": evil}, "spec": {"clientId": legacy}
    }))
    .unwrap();
    create(&client, &twin).await;
    let squat_refused = async |when: &str| {
        wait_until(
            &format!("squatter refused {when}"),
            Duration::from_secs(10),
            async || {
                scope_condition(&client, &evil, "squat")
                    .await
                    .is_some_and(|(reason, message)| {
                        reason == "Conflict" && message.contains(&format!("claimed by namespace {orders}"))
                    })
            },
        )
        .await;
        wait_until(&format!("twin refused {when}"), Duration::from_secs(10), async || {
            client_condition(&client, &evil, "twin")
                .await
                .is_some_and(|(reason, message)| {
                    reason == "ClientIdConflict" && message.contains(&format!("claimed by namespace {one}"))
                })
        })
        .await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &evil);
        assert!(
            secrets.get_opt("twin-oauth").await.unwrap().is_none(),
            "no credentials for the twin"
        );
    };
    squat_refused("at once").await;
    let events: Api<Event> = Api::namespaced(client.clone(), &evil);
    wait_until("a Conflict Event names the owner", Duration::from_secs(5), async || {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Conflict")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains(&format!("namespace {orders}")))
            })
    })
    .await;
    // The thief is served (it has a Secret) but never granted the stolen scope.
    wait_until("the thief is told what it lacks", Duration::from_secs(10), async || {
        client_condition(&client, &evil, "thief")
            .await
            .is_some_and(|(reason, _)| reason == "ScopeNotGranted")
    })
    .await;
    let thief_secret = secret_data(&client, &evil, "thief-oauth").await;
    let thief_token = async || {
        token(
            &first.url,
            &thief_secret["CLIENT_ID"],
            &thief_secret["CLIENT_SECRET"],
            &value,
        )
        .await
    };
    wait_until("the thief is served", Duration::from_secs(5), async || {
        thief_token().await.1["error"] == "invalid_scope"
    })
    .await;

    // A typo the schema lets through on this apiserver (CEL is not enforced before 1.25), and
    // one it refuses at admission.
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &orders);
    let typo = Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": ["Billing"]}}}));
    assert!(
        scopes.patch("write", &PatchParams::default(), &typo).await.is_err(),
        "refused at admission"
    );
    let broken = Patch::Merge(json!({"spec": {"grantedTo": {"namespaceSelector": {}}}}));
    scopes.patch("write", &PatchParams::default(), &broken).await.unwrap();
    wait_until("owner invalid", Duration::from_secs(10), async || {
        scope_condition(&client, &orders, "write")
            .await
            .is_some_and(|(r, _)| r == "InvalidSpec")
    })
    .await;
    squat_refused("while the owner is invalid").await;
    assert_eq!(thief_token().await.1["error"], "invalid_scope");

    // Deleted (the first half of a GitOps replace), and the leader killed meanwhile.
    scopes.delete("write", &DeleteParams::default()).await.unwrap();
    Api::<OAuthClient>::namespaced(client.clone(), &one)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    let second = Kauth::start(&kns, "second", None).await;
    wait_until("the second replica leads", Duration::from_secs(10), async || {
        lease_holder(&client, &kns).await.as_deref() == Some("second")
    })
    .await;
    let record = recorded_claim(&client, &kns, "scopeValues", &value).await;
    assert_eq!(record["namespace"], json!(orders), "{record}");
    assert!(record["vacantSince"].is_i64(), "{record}");
    let record = recorded_claim(&client, &kns, "clientIds", &legacy).await;
    assert_eq!(record["namespace"], json!(one), "{record}");
    let thief_token = async || {
        token(
            &second.url,
            &thief_secret["CLIENT_ID"],
            &thief_secret["CLIENT_SECRET"],
            &value,
        )
        .await
    };
    wait_until(
        "the new replica serves the thief, without the stolen scope",
        Duration::from_secs(5),
        async || thief_token().await.1["error"] == "invalid_scope",
    )
    .await;
    // The new leader keeps reporting the squatters as refused.
    Api::<Scope>::namespaced(client.clone(), &evil)
        .patch(
            "squat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"description": "x"}})),
        )
        .await
        .unwrap();
    squat_refused("after the deletion and the new leader").await;

    // Re-created by its owner: back in force for the owner's client, never for evil.
    create(&client, &owner_scope(json!({}))).await;
    let api_secret = secret_data(&client, &orders, "api-oauth").await;
    wait_until("the owner's scope is back", Duration::from_secs(5), async || {
        token(
            &second.url,
            &api_secret["CLIENT_ID"],
            &api_secret["CLIENT_SECRET"],
            &value,
        )
        .await
        .0 == 200
    })
    .await;
    assert_eq!(thief_token().await.1["error"], "invalid_scope");
    wait_until("the record shows the owner back", Duration::from_secs(5), async || {
        recorded_claim(&client, &kns, "scopeValues", &value).await["vacantSince"].is_null()
    })
    .await;
}

/// A Scope of `ns` offering `value` (for nobody else), with an audience when given.
fn plain_scope(ns: &str, name: &str, value: &str, audience: Option<&str>) -> Scope {
    let mut spec = json!({"value": value});
    if let Some(aud) = audience {
        spec["audience"] = json!(aud);
    }
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

/// The value of a metric of kauth's (0 when not exported yet).
async fn metric(kauth: &Kauth, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", kauth.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// T10 on the real apiserver. One namespace writes 260 maximal Scopes (a 256-character value
/// and a 2,048-character audience each): past its 500 claims the rest are refused, naming the
/// quota. The record is sharded, so it never nears a ConfigMap's 1 MiB: the orders team's claim
/// made after that is recorded, and its delete-and-recreate keeps the name from a squatter
/// (the old single record overflowed at about 440 such Scopes, recorded nothing after, and
/// handed the name to the squatter). Then a shard the apiserver refuses to write: the claim
/// waiting for it is served to nobody, and the Scope, an Event, the metrics and
/// `/readyz/claims` say so, until the shard can be written and the claim is recorded.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn claims_past_the_quota_are_refused_and_an_unwritable_record_keeps_them_pending() {
    let client = client().await;
    let id = unique();
    let (kns, greedy, orders, evil, pend) = (
        format!("kauth-{id}"),
        format!("greedy-{id}"),
        format!("orders-{id}"),
        format!("evil-{id}"),
        format!("pend-{id}"),
    );
    for n in [&kns, &greedy, &orders, &evil, &pend] {
        namespace(&client, n).await;
    }
    let kauth = Kauth::start(&kns, "solo", None).await;
    let big = |i: usize| {
        let value = format!("{i:04}{}", "v".repeat(252));
        let audience = format!("https://{i:04}.example.com/{}", "a".repeat(2048 - 29));
        plain_scope(&greedy, &format!("s{i}"), &value, Some(&audience))
    };
    for i in 0..260 {
        create(&client, &big(i)).await;
    }
    let refused = async || {
        let mut over = 0;
        for i in 0..260 {
            if let Some((reason, message)) = scope_condition(&client, &greedy, &format!("s{i}")).await
                && reason == "ClaimQuotaExceeded"
            {
                assert!(message.contains("--claims-per-namespace"), "{message}");
                over += 1;
            }
        }
        over
    };
    wait_until(
        "the quota refuses the last Scopes",
        Duration::from_secs(30),
        async || refused().await == 10,
    )
    .await;

    // The orders team's claim, made after all that, is recorded and survives its owner's
    // delete-and-recreate while a squatter waits.
    let value = format!("orders.write.{id}");
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &orders);
    create(&client, &plain_scope(&orders, "write", &value, None)).await;
    wait_until("the owner's claim recorded", Duration::from_secs(10), async || {
        recorded_claim(&client, &kns, "scopeValues", &value).await["namespace"] == json!(orders)
    })
    .await;
    create(&client, &plain_scope(&evil, "squat", &value, None)).await;
    scopes.delete("write", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    create(&client, &plain_scope(&orders, "write", &value, None)).await;
    wait_until("the owner has its name back", Duration::from_secs(10), async || {
        scope_condition(&client, &orders, "write")
            .await
            .is_some_and(|(r, _)| r == "Accepted")
    })
    .await;
    let squatter = scope_condition(&client, &evil, "squat").await.unwrap();
    assert_eq!(squatter.0, "Conflict", "{squatter:?}");

    // A shard the apiserver will not write: someone made it immutable (or put an immutable
    // ConfigMap of its name in the way).
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &kns);
    let pending = format!("pending.{id}");
    let shard =
        kauth::controller::claims_record::shard_name(kauth::claims::shard_of(&kauth::claims::claim_key(&pending)));
    if config_maps.get_opt(&shard).await.unwrap().is_some() {
        let patch = json!({"immutable": true});
        config_maps
            .patch(&shard, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    } else {
        let blocker: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": shard, "labels": {"app.kubernetes.io/managed-by": "kauth", "kauth.dev/claims": "shard"}},
            "data": {"claims.json": "{\"format\":2}"},
            "immutable": true
        }))
        .unwrap();
        config_maps.create(&PostParams::default(), &blocker).await.unwrap();
    }
    create(
        &client,
        &plain_scope(&pend, "api", &pending, Some(&format!("https://{pend}.example.com"))),
    )
    .await;
    let app: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "app", "namespace": pend}, "spec": {"scopes": [pending]}
    }))
    .unwrap();
    create(&client, &app).await;
    wait_until("ClaimPending on the Scope", Duration::from_secs(15), async || {
        scope_condition(&client, &pend, "api")
            .await
            .is_some_and(|(r, m)| r == "ClaimPending" && m.contains(&shard))
    })
    .await;
    wait_until("a ClaimPending Event", Duration::from_secs(5), async || {
        has_event(&client, &pend, "ClaimPending", "api").await
    })
    .await;
    assert!(metric(&kauth, "kauth_claims_pending").await >= 1.0);
    assert!(metric(&kauth, "kauth_claims_record_write_failures_total").await >= 1.0);
    let ops = |path: &str| format!("{}{path}", kauth.ops_url);
    wait_until("/readyz/claims says so", Duration::from_secs(10), async || {
        reqwest::get(ops("/readyz/claims")).await.unwrap().status() == 503
    })
    .await;
    assert_eq!(
        reqwest::get(ops("/readyz")).await.unwrap().status(),
        200,
        "and serves everyone else"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &pend);
    wait_until("the app's Secret", Duration::from_secs(5), async || {
        secrets.get_opt("app-oauth").await.unwrap().is_some()
    })
    .await;
    let data = secret_data(&client, &pend, "app-oauth").await;
    let (status, body) = token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &pending).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");

    // Out of the way (deleted: an immutable ConfigMap cannot be changed back): the shard is
    // written again from the claims' objects, and the claim recorded and served.
    config_maps.delete(&shard, &DeleteParams::default()).await.unwrap();
    wait_until(
        "the claim recorded and the Scope accepted",
        Duration::from_secs(10),
        async || {
            scope_condition(&client, &pend, "api")
                .await
                .is_some_and(|(r, _)| r == "Accepted")
        },
    )
    .await;
    wait_until("a token under it", Duration::from_secs(5), async || {
        token(&kauth.url, &data["CLIENT_ID"], &data["CLIENT_SECRET"], &pending)
            .await
            .0
            == 200
    })
    .await;
    assert_eq!(reqwest::get(ops("/readyz/claims")).await.unwrap().status(), 200);
}

/// The local test apiserver's state folder (tests/cluster/up.sh), where its pid and log are;
/// None against another cluster, which a test must not restart.
fn local_apiserver() -> Option<PathBuf> {
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG").ok()?);
    let dir = kubeconfig.parent()?.to_path_buf();
    dir.join("apiserver.pid").exists().then_some(dir)
}

/// Kills the local apiserver with SIGKILL; returns how to start it again (argv, working folder).
fn kill_apiserver(dir: &Path) -> (Vec<String>, PathBuf) {
    let pid = std::fs::read_to_string(dir.join("apiserver.pid"))
        .unwrap()
        .trim()
        .to_string();
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    while Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    (argv, cwd)
}

/// Starts the apiserver again as it was, in the background (it outlives this test, like the
/// one up.sh started), and records its pid for tests/cluster/down.sh.
fn relaunch_apiserver(dir: &Path, (argv, cwd): &(Vec<String>, PathBuf)) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"cd "$0" && "$@" >>apiserver.log 2>&1 </dev/null & echo $!"#)
        .arg(cwd)
        .args(argv)
        .output()
        .unwrap();
    let pid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!pid.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("apiserver.pid"), pid).unwrap();
}

/// The apiserver killed for 12 s and relaunched while kauth runs (issue 12): tokens keep
/// coming from the cache throughout, /readyz says the cache may be stale once the watches
/// have failed for 10 s, and after the apiserver answers again a new client gets tokens and
/// a deleted one stops getting them within seconds.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn changes_arrive_fast_after_the_apiserver_is_killed_and_relaunched() {
    let Some(dir) = local_apiserver() else {
        eprintln!("skipped: KUBECONFIG is not the local test apiserver, which this test restarts");
        return;
    };
    let client = client().await;
    let id = unique();
    let (kns, ns) = (format!("kauth-{id}"), format!("team-{id}"));
    namespace(&client, &kns).await;
    namespace(&client, &ns).await;
    let kauth = Kauth::start(&kns, "outage", None).await;
    own_api(&client, &ns).await;
    create(&client, &m2m_client(&ns, "before")).await;
    ready_client(&client, &ns, "before").await;
    let before = secret_data(&client, &ns, "before-oauth").await;
    let before_token = async || {
        token(&kauth.url, &before["CLIENT_ID"], &before["CLIENT_SECRET"], "")
            .await
            .0
    };
    wait_until("the first client gets tokens", Duration::from_secs(5), async || {
        before_token().await == 200
    })
    .await;

    let how = kill_apiserver(&dir);
    let killed = Instant::now();
    let http = reqwest::Client::new();
    let readyz = format!("{}/readyz", kauth.ops_url);
    let took = wait_until("/readyz reports the stale cache", Duration::from_secs(20), async || {
        assert_eq!(before_token().await, 200, "tokens keep coming from the cache");
        let r = http.get(&readyz).send().await.unwrap();
        r.status() == 503 && r.text().await.unwrap().contains("has not resynced")
    })
    .await;
    eprintln!("/readyz turned not ready {took:?} after the apiserver died");
    while killed.elapsed() < Duration::from_secs(12) {
        assert_eq!(before_token().await, 200, "no failed token request during the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    relaunch_apiserver(&dir, &how);
    let relaunched = Instant::now();
    let client = client_when_ready().await;
    eprintln!(
        "the apiserver answered again {:?} after it was relaunched",
        relaunched.elapsed()
    );

    // A client deleted right after the apiserver came back stops getting tokens...
    Api::<OAuthClient>::namespaced(client.clone(), &ns)
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    let took = wait_until("the deleted client is refused", Duration::from_secs(5), async || {
        before_token().await == 401
    })
    .await;
    eprintln!("a client deleted after the restart was refused {took:?} after the deletion");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // ... and a new one gets tokens.
    create(&client, &m2m_client(&ns, "after")).await;
    ready_client(&client, &ns, "after").await;
    let after = secret_data(&client, &ns, "after-oauth").await;
    let took = wait_until("the new client gets tokens", Duration::from_secs(5), async || {
        token(&kauth.url, &after["CLIENT_ID"], &after["CLIENT_SECRET"], "")
            .await
            .0
            == 200
    })
    .await;
    eprintln!(
        "a client created after the restart got a token {:?} after the deletion of the first",
        deleted.elapsed()
    );
    let _ = took;
    wait_until("/readyz ready again", Duration::from_secs(5), async || {
        http.get(&readyz).send().await.unwrap().status() == 200
    })
    .await;
}

/// A client for the apiserver once it answers again after a restart.
async fn client_when_ready() -> Client {
    let start = Instant::now();
    loop {
        if let Ok(c) = Client::try_default().await
            && c.apiserver_version().await.is_ok()
        {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the apiserver did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU seconds used so far by kauth and, when `tests/cluster/run.sh` started them, by the
/// local kube-apiserver and etcd: where the time of a scale run goes.
struct Cpu(Vec<(&'static str, f64)>);

impl Cpu {
    fn now(kauth: u32) -> Self {
        let seconds = |pid: &str| -> Option<f64> {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 per second).
            Some((fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?) / 100.0)
        };
        let mut parts = vec![("kauth", seconds(&kauth.to_string()).unwrap_or_default())];
        if let Ok(state) = std::env::var("KAUTH_CLUSTER_STATE") {
            for (name, file) in [("kube-apiserver", "apiserver.pid"), ("etcd", "etcd.pid")] {
                if let Some(s) = std::fs::read_to_string(format!("{state}/{file}"))
                    .ok()
                    .and_then(|p| seconds(&p))
                {
                    parts.push((name, s));
                }
            }
        }
        // Time the host's hypervisor ran something else on this machine's CPUs: on a shared
        // host it varies from run to run, and every figure above slows with it.
        let steal = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            let cpu = stat.lines().next()?.split_whitespace().collect::<Vec<_>>();
            cpu.get(8)?.parse::<f64>().ok().map(|ticks| ticks / 100.0)
        });
        parts.extend(steal.map(|s| ("stolen by the host", s)));
        Self(parts)
    }

    fn since(&self, before: &Self) -> String {
        let spent: Vec<String> = self
            .0
            .iter()
            .map(|(name, s)| {
                let was = before.0.iter().find(|(n, _)| n == name).map_or(0.0, |(_, b)| *b);
                format!("{name} {:.1}", s - was)
            })
            .collect();
        spent.join(", ")
    }
}

/// Starts `kauth standalone` serving HTTPS from a local CA, on `manifests`; returns it, its
/// issuer URL and the CA file.
/// The kauth binary the cluster tier runs: make test-cluster points KAUTH_BIN at the release
/// build, so figures are real.
fn kauth_bin() -> PathBuf {
    PathBuf::from(std::env::var("KAUTH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kauth").to_string()))
}

/// The HTTP status of listing ConfigMaps in `ns` with `bearer` as the only credential.
async fn list_as(bearer: &str, ns: &str) -> u16 {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(bearer.to_string().into()),
        ..Default::default()
    };
    let client = Client::try_from(config).unwrap();
    match Api::<ConfigMap>::namespaced(client, ns)
        .list(&ListParams::default())
        .await
    {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(e) => panic!("{e}"),
    }
}

/// A browser over HTTPS that trusts `ca` (reqwest is built without TLS here): keeps the
/// cookies kauth sets, follows no redirect.
struct TlsBrowser {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
    cookies: std::sync::Mutex<BTreeMap<String, String>>,
}

impl TlsBrowser {
    fn new(ca: &Path) -> Self {
        Self {
            client: support::https_trusting(ca),
            cookies: Default::default(),
        }
    }

    /// GET (no form) or POST `form` to `url`: status, Location and body.
    async fn send(&self, url: &str, form: Option<&[(&str, &str)]>) -> (u16, Option<String>, String) {
        use http_body_util::BodyExt;
        let cookie = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut request = http::Request::builder().uri(url).header("cookie", cookie);
        let body = match form {
            Some(form) => {
                request = request
                    .method("POST")
                    .header("content-type", "application/x-www-form-urlencoded");
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish()
            }
            None => String::new(),
        };
        let response = self
            .client
            .request(
                request
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.lock().unwrap().insert(name.into(), value.into());
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, location, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A person types a device's `code` at kauth's /device page, signs in and allows it.
async fn answer_device(issuer: &str, ca: &Path, code: &str, (user, password): (&str, &str)) {
    let browser = TlsBrowser::new(ca);
    let (mut status, mut location, mut body) = browser
        .send(&format!("{issuer}/device"), Some(&[("user_code", code)]))
        .await;
    while status == 303 {
        let to = location.clone().unwrap();
        let (page_status, _, page) = browser.send(&to, None).await;
        assert_eq!(page_status, 200, "{page}");
        let (request, csrf) = (
            support::hidden_field(&page, "request"),
            support::hidden_field(&page, "csrf"),
        );
        let (action, form): (&str, Vec<(&str, &str)>) = if to.contains("/login") {
            (
                "/login",
                vec![
                    ("request", &request),
                    ("csrf", &csrf),
                    ("username", user),
                    ("password", password),
                ],
            )
        } else {
            (
                "/consent",
                vec![("request", &request), ("csrf", &csrf), ("decision", "allow")],
            )
        };
        (status, location, body) = browser.send(&format!("{issuer}{action}"), Some(&form)).await;
    }
    assert!(body.contains("Device signed in"), "{status}: {body}");
}

fn standalone_with_tls(manifests: &Path, state: &Path) -> (Child, String, PathBuf) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(kauth_bin())
        .args(["standalone", "--port", "0", "--ops-port", "0", "--tls", "self-signed"])
        .arg("--manifests")
        .arg(manifests)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let issuer = first
        .split("issuer ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_string();
    (child, issuer, state.join("tls/ca.crt"))
}

/// People sign in to the cluster itself (issue 11): the apiserver is started with its OIDC
/// flags pointing at kauth over HTTPS (kauth's own TLS, a local CA), `kauth login --device` is
/// kubectl's credential plugin, and kubectl is then the person: RBAC bound to the person's
/// group (with kauth's prefix) allows exactly what it grants, and a tampered token is refused.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn people_sign_in_to_the_apiserver_with_kauth_login() {
    let Some(dir) = local_apiserver() else {
        eprintln!("skipped: KUBECONFIG is not the local test apiserver, which this test restarts");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(manifests.join("kubectl.yaml"), support::KUBECTL_CLIENT).unwrap();
    let (mut kauth, issuer, ca) = standalone_with_tls(&manifests, &work.path().join("state"));
    let config = Command::new(kauth_bin())
        .args(["cluster-auth-config", "--client-id", "kauth.kubectl"])
        .arg(format!("--issuer={issuer}"))
        .arg(format!("--apiserver-ca-path={}", ca.display()))
        .output()
        .unwrap();
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    let flags: Vec<String> = String::from_utf8(config.stdout)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("---"))
        .filter(|l| l.starts_with("--"))
        .map(str::to_string)
        .collect();
    assert!(flags.iter().any(|f| f == "--oidc-username-prefix=kauth:"), "{flags:?}");

    // The apiserver again, with the flags kauth printed (the original ones are put back last).
    let original = kill_apiserver(&dir);
    let mut with_oidc = original.clone();
    with_oidc.0.extend(flags.iter().cloned());
    relaunch_apiserver(&dir, &with_oidc);
    let admin = client_when_ready().await;
    let id = unique();
    let (mine, other) = (format!("people-{id}"), format!("closed-{id}"));
    namespace(&admin, &mine).await;
    namespace(&admin, &other).await;
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "read-config", "namespace": mine},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    }))
    .unwrap();
    create(&admin, &role).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "shop-admins-read", "namespace": mine},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kauth:shop-admins"}]
    }))
    .unwrap();
    create(&admin, &binding).await;

    // kauth login, as kubectl will run it: the device grant, answered by alice.
    let cache = work.path().join("login-cache");
    let login_args = vec![
        "login".to_string(),
        format!("--issuer={issuer}"),
        "--client-id=kauth.kubectl".to_string(),
        format!("--certificate-authority={}", ca.display()),
        format!("--cache-dir={}", cache.display()),
        "--device".to_string(),
    ];
    let mut login = Command::new(kauth_bin())
        .args(&login_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = {
        use std::io::{BufRead, BufReader};
        let stderr = BufReader::new(login.stderr.take().unwrap());
        let line = stderr
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("enter the code"))
            .expect("kauth login prints the code");
        line.rsplit(' ').next().unwrap().to_string()
    };
    answer_device(&issuer, &ca, &code, ("alice", "alice-demo-password")).await;
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success());
    let credential: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = credential["status"]["token"].as_str().unwrap().to_string();

    // The apiserver reads kauth's discovery document when it starts, in the background.
    let started = Instant::now();
    while list_as(&token, &mine).await != 200 {
        if started.elapsed() > Duration::from_secs(40) {
            let log = std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default();
            let oidc: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("oidc")).collect();
            panic!(
                "the apiserver never accepted kauth's ID token; its OIDC log lines:\n{}",
                oidc.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "the apiserver accepted the ID token {:?} after it was started",
        started.elapsed()
    );

    // kubectl with a kubeconfig whose user runs kauth login (from the cache now).
    let kubeconfig = work.path().join("alice.kubeconfig");
    let server = kube::Config::infer().await.unwrap().cluster_url.to_string();
    let server = server.trim_end_matches('/');
    let args: String = login_args[..5].iter().map(|a| format!("\n        - {a:?}")).collect();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server:?}, insecure-skip-tls-verify: true}}\nusers:\n- name: alice\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {:?}\n      args:{args}\n      interactiveMode: Never\ncontexts:\n- name: alice\n  context: {{cluster: local, user: alice}}\ncurrent-context: alice\n",
            kauth_bin().display()
        ),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let tools = PathBuf::from(std::env::var("KAUTH_TOOLS").expect("KAUTH_TOOLS (tests/cluster/tools.sh)"));
        let out = Command::new(tools.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = kubectl(&["get", "configmaps", "-n", &mine]);
    assert!(ok, "alice's group may list ConfigMaps in {mine}: {said}");
    let (ok, said) = kubectl(&["get", "configmaps", "-n", &other]);
    assert!(
        !ok && said.contains("User \"kauth:alice\""),
        "and nowhere else, as kauth:alice: {said}"
    );
    let (ok, said) = kubectl(&["get", "secrets", "-n", &mine]);
    assert!(!ok && said.contains("forbidden"), "nor anything else: {said}");

    // A tampered token (one claim changed, signature kept) is refused outright.
    let tampered = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        claims["groups"] = json!(["system:masters"]);
        format!("{}.{}.{}", parts[0], engine.encode(claims.to_string()), parts[2])
    };
    assert_eq!(list_as(&tampered, &mine).await, 401, "a tampered token");
    assert_eq!(list_as(&token, &mine).await, 200, "the genuine one");

    let _ = kauth.kill();
    let _ = kauth.wait();
    let _ = kill_apiserver(&dir);
    relaunch_apiserver(&dir, &original);
    client_when_ready().await;
}

/// The `kauth-jwks` ConfigMap of `ns`, if there is one.
async fn jwks_config_map(client: &Client, ns: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("kauth-jwks")
        .await
        .unwrap()
}

/// The key ids in a JWKS ConfigMap.
fn kids(cm: &ConfigMap) -> Vec<String> {
    let jwks: Value = serde_json::from_str(&cm.data.as_ref().unwrap()["jwks.json"]).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The JWKS delivered where verifiers run (issue 13): the API team's namespace and the
/// granted app's get a `kauth-jwks` ConfigMap from which a token verifies offline; a key
/// rotation reaches it before the new key signs; it disappears when the grant is withdrawn;
/// and a ConfigMap of that name kauth did not create is never touched.
#[tokio::test]
#[ignore = "needs a cluster: make test-cluster"]
async fn the_jwks_reaches_granted_namespaces_follows_rotation_and_leaves() {
    let client = client().await;
    let id = unique();
    let (kns, api_ns, app_ns, other_ns) = (
        format!("kauth-{id}"),
        format!("api-{id}"),
        format!("app-{id}"),
        format!("other-{id}"),
    );
    for ns in [&kns, &api_ns, &app_ns, &other_ns] {
        namespace(&client, ns).await;
    }
    // Someone else's ConfigMap of the same name, in a namespace that will want the JWKS.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kauth-jwks", "namespace": other_ns},
        "data": {"jwks.json": "mine"}
    }))
    .unwrap();
    create(&client, &foreign).await;
    let selector = format!("jwks-{id}=wanted");
    let kauth = Kauth::spawn_with(&kns, "jwks", None, &["--jwks-namespace-selector", &selector]);
    kauth.wait_ready(Duration::from_secs(30)).await;
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "read", "namespace": api_ns},
        "spec": {"value": format!("read.{id}"), "audience": format!("https://{api_ns}.example.com"),
                 "grantedTo": {"namespaces": [app_ns, other_ns]}}
    }))
    .unwrap();
    create(&client, &scope).await;
    for ns in [&app_ns, &other_ns] {
        let app: OAuthClient = serde_json::from_value(json!({
            "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"scopes": [format!("read.{id}")]}
        }))
        .unwrap();
        create(&client, &app).await;
    }
    ready_client(&client, &app_ns, "app").await;
    let took = wait_until(
        "the JWKS in the API's and the app's namespaces",
        Duration::from_secs(10),
        async || jwks_config_map(&client, &api_ns).await.is_some() && jwks_config_map(&client, &app_ns).await.is_some(),
    )
    .await;
    eprintln!("JWKS delivered {took:?} after the app was Ready");
    let cm = jwks_config_map(&client, &app_ns).await.unwrap();
    assert_eq!(cm.labels().get("kauth.dev/jwks").map(String::as_str), Some("true"));
    let data = cm.data.clone().unwrap();
    assert_eq!(data["issuer"], kauth.url);
    let discovery: Value = serde_json::from_str(&data["openid-configuration.json"]).unwrap();
    assert_eq!(discovery["issuer"], kauth.url.as_str());

    // A token verifies offline, from the ConfigMap alone.
    let creds = secret_data(&client, &app_ns, "app-oauth").await;
    let (status, body) = token(&kauth.url, &creds["CLIENT_ID"], &creds["CLIENT_SECRET"], "").await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    let verify = |cm: &ConfigMap, token: &str| -> Result<Value, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&cm.data.as_ref().unwrap()["jwks.json"]).map_err(|e| e.to_string())?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let jwk = set
            .find(header.kid.as_deref().unwrap_or_default())
            .ok_or("no such kid")?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[format!("https://{api_ns}.example.com")]);
        validation.set_issuer(&[kauth.url.as_str()]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|t| t.claims)
            .map_err(|e| e.to_string())
    };
    let claims = verify(&cm, access).expect("verified offline");
    assert_eq!(claims["client_id"], creds["CLIENT_ID"].as_str());
    let foreign_now = jwks_config_map(&client, &other_ns).await.unwrap();
    assert_eq!(
        foreign_now.data.unwrap()["jwks.json"],
        "mine",
        "someone else's ConfigMap is left alone"
    );
    assert!(
        !foreign_now
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("kauth.dev/jwks")
    );

    // An emergency rotation: the new key reaches the ConfigMap while the old one still signs.
    let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    let signing = kid_of(access);
    let before = kids(&cm);
    Api::<SigningKey>::namespaced(client.clone(), &kns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rotation": {"trigger": "jwks-test", "publishAhead": "1h"}}})),
        )
        .await
        .unwrap();
    let took = wait_until("the new key in the ConfigMap", Duration::from_secs(10), async || {
        let now = jwks_config_map(&client, &app_ns).await.unwrap();
        kids(&now).iter().any(|k| !before.contains(k))
    })
    .await;
    eprintln!("a new key reached the ConfigMap {took:?} after the rotation");
    let (_, body) = token(&kauth.url, &creds["CLIENT_ID"], &creds["CLIENT_SECRET"], "").await;
    assert_eq!(
        kid_of(body["access_token"].as_str().unwrap()),
        signing,
        "published ahead: not signing yet"
    );

    // The grant withdrawn: the app's namespace no longer gets the keys.
    Api::<Scope>::namespaced(client.clone(), &api_ns)
        .patch(
            "read",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grantedTo": {"namespaces": [other_ns]}}})),
        )
        .await
        .unwrap();
    wait_until("the app's ConfigMap withdrawn", Duration::from_secs(10), async || {
        jwks_config_map(&client, &app_ns).await.is_none()
    })
    .await;
    assert!(
        jwks_config_map(&client, &api_ns).await.is_some(),
        "the API team keeps it"
    );
    assert_eq!(
        jwks_config_map(&client, &other_ns).await.unwrap().data.unwrap()["jwks.json"],
        "mine"
    );

    // A namespace that holds no Scope but matches the chart's selector gets it too, and loses
    // it with the label.
    let verifier_ns = format!("verifier-{id}");
    namespace(&client, &verifier_ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = |value: Option<&str>| json!({"metadata": {"labels": {format!("jwks-{id}"): value}}});
    namespaces
        .patch(
            &verifier_ns,
            &PatchParams::default(),
            &Patch::Merge(label(Some("wanted"))),
        )
        .await
        .unwrap();
    wait_until(
        "the JWKS in the selected namespace",
        Duration::from_secs(5),
        async || jwks_config_map(&client, &verifier_ns).await.is_some(),
    )
    .await;
    namespaces
        .patch(&verifier_ns, &PatchParams::default(), &Patch::Merge(label(None)))
        .await
        .unwrap();
    wait_until(
        "the JWKS withdrawn with the label",
        Duration::from_secs(5),
        async || jwks_config_map(&client, &verifier_ns).await.is_none(),
    )
    .await;
}
