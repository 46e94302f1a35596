//! What every cluster test shares: the apiserver client with the CRDs installed, a test's own
//! namespaces, `kauth run` processes, and the calls and waits the tests make.

pub(crate) use crate::support;
pub use crate::support::free_port;
pub use futures::{StreamExt, TryStreamExt};
pub use k8s_openapi::ByteString;
pub use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
pub use k8s_openapi::api::coordination::v1::Lease;
pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
pub use k8s_openapi::api::events::v1::Event;
pub use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
pub use kauth::crd::{OAuthClient, Scope, SigningKey, condition_is_true};
pub use kauth::manifests::Manifests;
pub use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
pub use kube::{Api, Client, Resource, ResourceExt};
pub use serde_json::{Value, json};
pub use std::collections::BTreeMap;
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Stdio};
pub use std::time::{Duration, Instant};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() % 0xfff, nanos % 0xfffff)
}

pub async fn client() -> Client {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a cluster (make test-cluster)");
    install_crds(&client).await;
    client
}

/// Installs crds/ with create/replace (server-side apply of CEL rules fails on old servers).
pub async fn install_crds(client: &Client) {
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

pub async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// A test's own corner of the cluster: the client (CRDs installed), a fresh id, kauth's
/// namespace `kauth-<id>` and one namespace `<team>-<id>` per team, all created.
pub async fn setup<const N: usize>(teams: [&str; N]) -> (Client, String, String, [String; N]) {
    let client = client().await;
    let id = unique();
    let kns = format!("kauth-{id}");
    namespace(&client, &kns).await;
    let teams = teams.map(|team| format!("{team}-{id}"));
    for ns in &teams {
        namespace(&client, ns).await;
    }
    (client, id, kns, teams)
}

/// Polls `check` every 20 ms until it holds; panics after `limit`. Returns the time it took.
pub async fn wait_until(what: &str, limit: Duration, check: impl AsyncFnMut() -> bool) -> Duration {
    support::binary::wait_up_to(limit, what, check).await
}

/// A `kauth run` child process.
pub struct Kauth {
    pub child: Child,
    pub url: String,
    /// Liveness, readiness and metrics.
    pub ops_url: String,
    pub log: PathBuf,
    pub _state: tempfile::TempDir,
}

impl Kauth {
    pub async fn start(kauth_ns: &str, identity: &str, kubeconfig: Option<&Path>) -> Self {
        let k = Self::spawn(kauth_ns, identity, kubeconfig);
        k.wait_ready(Duration::from_secs(30)).await;
        k
    }

    pub fn spawn(kauth_ns: &str, identity: &str, kubeconfig: Option<&Path>) -> Self {
        Self::spawn_with(kauth_ns, identity, kubeconfig, &[])
    }

    pub fn spawn_with(kauth_ns: &str, identity: &str, kubeconfig: Option<&Path>, extra: &[&str]) -> Self {
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

    pub async fn wait_ready(&self, limit: Duration) {
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
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
pub fn examples(id: &str) -> Manifests {
    let mut m = Manifests::default();
    for file in [
        "scope-orders.yaml",
        "client-m2m.yaml",
        "signing-key.yaml",
        "client-fapi2.yaml",
    ] {
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

pub async fn create<K>(client: &Client, obj: &K) -> K
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

pub async fn ready_client(client: &Client, ns: &str, name: &str) -> OAuthClient {
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

pub async fn secret_data(client: &Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get(name).await.unwrap();
    s.data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// client_credentials with HTTP Basic.
pub async fn token(url: &str, id: &str, secret: &str, scope: &str) -> (u16, Value) {
    post_token(
        url,
        Some((id, secret)),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await
}

/// A client_credentials token once the provider serves a client that was just made Ready: its
/// registry follows the cache a moment after the controller writes the status (the product's
/// promise is within a second; this allows five). The last answer when it never comes.
pub async fn token_when_served(url: &str, id: &str, secret: &str, scope: &str) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let answer = token(url, id, secret, scope).await;
        if answer.0 == 200 || start.elapsed() > Duration::from_secs(5) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POST /token with a form (and HTTP Basic if given); the status and JSON body.
pub async fn post_token(url: &str, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{url}/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// True when `ns` has an Event with `reason` about the object named `name`.
pub async fn has_event(client: &Client, ns: &str, reason: &str, name: &str) -> bool {
    any_event(client, ns, |e| {
        e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
    })
    .await
}

/// True when some Event in `ns` is as `matches` wants.
pub async fn any_event(client: &Client, ns: &str, matches: impl Fn(&Event) -> bool) -> bool {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(matches)
}

pub async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
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
pub async fn own_api(client: &Client, ns: &str) {
    let scope: Scope = serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "api", "namespace": ns},
        "spec": {"value": format!("api.{ns}"), "audience": format!("https://{ns}.example.com")}
    }))
    .unwrap();
    create(client, &scope).await;
}

/// A client of its namespace's own API ([`own_api`]).
pub fn m2m_client(ns: &str, name: &str) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "kauth.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scopes": [format!("api.{ns}")]}
    }))
    .unwrap()
}

pub async fn service_account(client: &Client, ns: &str, name: &str) {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

/// A projected-style token for a ServiceAccount, from the TokenRequest API.
pub async fn mint(client: &Client, ns: &str, sa: &str, audience: &str) -> String {
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

/// The claim kauth recorded on `name` of `kind` (`scopeValues`, `audiences`, `clientIds`), as
/// JSON: its shard of the claims record in kauth's namespace, by the name's key (Null while
/// the record holds none).
pub async fn recorded_claim(client: &Client, kns: &str, kind: &str, name: &str) -> Value {
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

/// The Ready condition's reason and message of an OAuthClient.
pub async fn client_condition(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
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

/// The local test apiserver's state folder (tests/cluster/up.sh), where its pid and log are;
/// None against another cluster, which a test must not restart.
pub fn local_apiserver() -> Option<PathBuf> {
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG").ok()?);
    let dir = kubeconfig.parent()?.to_path_buf();
    dir.join("apiserver.pid").exists().then_some(dir)
}

/// Kills the local apiserver with SIGKILL; returns how to start it again (argv, working folder).
pub fn kill_apiserver(dir: &Path) -> (Vec<String>, PathBuf) {
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
pub fn relaunch_apiserver(dir: &Path, (argv, cwd): &(Vec<String>, PathBuf)) {
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

/// A client for the apiserver once it answers again after a restart.
pub async fn client_when_ready() -> Client {
    let start = Instant::now();
    loop {
        if let Ok(c) = Client::try_default().await
            && c.apiserver_version().await.is_ok()
        {
            return c;
        }
        if start.elapsed() > Duration::from_secs(60) {
            // Its own words, for the run's log: why it did not start.
            let log = std::env::var("KAUTH_CLUSTER_STATE")
                .ok()
                .and_then(|state| std::fs::read_to_string(Path::new(&state).join("apiserver.log")).ok())
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "the apiserver did not come back within 60 s; the end of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU seconds used so far by kauth and, when `tests/cluster/run.sh` started them, by the
/// local kube-apiserver and etcd: where the time of a scale run goes.
pub struct Cpu(Vec<(&'static str, f64)>);

impl Cpu {
    pub fn now(kauth: u32) -> Self {
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

    pub fn since(&self, before: &Self) -> String {
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
pub fn kauth_bin() -> PathBuf {
    PathBuf::from(std::env::var("KAUTH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kauth").to_string()))
}
