//! Shared helpers: a real provider on 127.0.0.1 fed from a manifest folder, as standalone
//! mode feeds it.
#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod chromium;
pub mod keys;
pub mod passkey;

use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;
use kauth::issuer::Issuer;
use kauth::metrics::Metrics;
use kauth::provider::serve::{ServeOptions, serve};
use kauth::provider::{ProviderState, ops_router, router};
use kauth::registry::Registry;
use kauth::standalone::{ManifestSource, StandaloneConfig};
use kauth::store::GrantStore;
use tempfile::TempDir;

/// The JSON document at `url` (discovery, a JWKS), fetched with a plain GET.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// A port on 127.0.0.1 free a moment ago.
/// POSTs `form` to `{issuer}/token`, with HTTP Basic for `basic` (id, secret) when given:
/// the status and the JSON answer.
pub async fn token_call(
    issuer: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = rp_http().post(format!("{issuer}/token")).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const SCOPES: &str = r#"
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
---
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: reports-read, namespace: reports}
spec:
  value: reports.read
  audience: https://reports.example.com
  grantedTo: {namespaces: [shop]}
"#;

pub const CLIENTS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: backend, namespace: shop}
spec:
  scopes: [orders.read, orders.write, reports.read]
  audiences: [https://reports.example.com]
  secret:
    rotation: {trigger: one, overlap: 2s}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: poster, namespace: shop}
spec:
  scopes: [orders.read]
  tokenEndpointAuthMethod: client_secret_post
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: api, namespace: orders}
spec:
  scopes: [orders.read]
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: other, namespace: elsewhere}
spec:
  audiences: [https://elsewhere.example.com]
"#;

/// alice / wonderland, bob / builder (hashes made with `kauth hash-password`).
pub fn people() -> String {
    let alice = kauth::people::hash_password("wonderland");
    let bob = kauth::people::hash_password("builder");
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: kauth-users, namespace: kauth}}
stringData:
  users.yaml: |
    users:
      - username: alice
        name: Alice Liddell
        email: alice@example.com
        emailVerified: true
        groups: [shop-admins]
        passwordHash: "{alice}"
      - username: bob
        passwordHash: "{bob}"
"#
    )
}

pub struct TestProvider {
    pub dir: TempDir,
    pub url: String,
    /// Where liveness, readiness and metrics are served.
    pub ops_url: String,
    pub cfg: StandaloneConfig,
    pub registry: Registry,
    pub state: ProviderState,
}

impl TestProvider {
    /// Starts a provider serving `files` (name, YAML).
    pub async fn start(files: &[(&str, &str)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, files).await
    }

    /// Starts a provider on `listener` (bound earlier, so others can be told its URL).
    pub async fn start_on(listener: tokio::net::TcpListener, files: &[(&str, &str)]) -> Self {
        Self::start_with(listener, files, &[], ServeOptions::default()).await
    }

    /// Starts a provider whose issuer is `http://localhost:<port>` (listening on 127.0.0.1):
    /// a WebAuthn relying party needs a domain name, so passkeys are on.
    pub async fn start_as_localhost(files: &[(&str, &str)]) -> Self {
        Self::start_as_localhost_with(files, ServeOptions::default()).await
    }

    /// As [`Self::start_as_localhost`], with the platform's `opts`.
    pub async fn start_as_localhost_with(files: &[(&str, &str)], opts: ServeOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        Self::start_at(listener, url, files, &[], opts).await
    }

    /// Starts a provider whose platform declared `first_party` namespaces first-party.
    pub async fn start_first_party(files: &[(&str, &str)], first_party: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_with(listener, files, first_party, ServeOptions::default()).await
    }

    /// Starts a provider that trusts 127.0.0.1 as its proxy, reading the client's address from
    /// `header` (as behind an ingress controller): a test names any address it likes there.
    pub async fn start_behind_proxy(files: &[(&str, &str)], header: kauth::provider::serve::ForwardedHeader) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = ServeOptions {
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            forwarded_header: header,
            ..ServeOptions::default()
        };
        Self::start_with(listener, files, &[], opts).await
    }

    /// Starts a provider with the platform's `opts` (as `kauth run` and standalone take them).
    pub async fn start_with_options(files: &[(&str, &str)], opts: ServeOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_with(listener, files, &[], opts).await
    }

    async fn start_with(
        listener: tokio::net::TcpListener,
        files: &[(&str, &str)],
        first_party: &[&str],
        opts: ServeOptions,
    ) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        Self::start_at(listener, url, files, first_party, opts).await
    }

    async fn start_at(
        listener: tokio::net::TcpListener,
        url: String,
        files: &[(&str, &str)],
        first_party: &[&str],
        opts: ServeOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("manifests").join(name), text).unwrap();
        }
        let cfg = StandaloneConfig {
            manifests: ManifestSource::Dir(dir.path().join("manifests")),
            state_dir: dir.path().join("state"),
            issuer: Issuer::parse(&url).unwrap(),
            kauth_namespace: "kauth".into(),
            claims: Default::default(),
            first_party_namespaces: first_party.iter().map(|n| n.to_string()).collect(),
            strict: false,
        };
        let registry = Registry::new();
        let store = GrantStore::open_file(&dir.path().join("state")).await.unwrap();
        // As standalone: second factors sealed with a key in the state folder.
        let mut opts = opts;
        if opts.second_factor_key_file.is_none() {
            opts.second_factor_key_file =
                Some(kauth::provider::launch::second_factor_key_in(&dir.path().join("state")).unwrap());
        }
        // The state as both modes build it (launch.rs), from these options.
        let state = kauth::provider::launch::Provider {
            registry: registry.clone(),
            issuer: cfg.issuer.clone(),
            store,
            metrics: Arc::new(Metrics::new()),
            opts: &opts,
            first_party_namespaces: cfg.first_party_namespaces.clone(),
            audit: Arc::new(kauth::audit::Audit::open(dir.path().join("audit.jsonl").to_str().unwrap()).unwrap()),
        }
        .state()
        .await
        .unwrap();
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops_url = format!("http://{}", ops.local_addr().unwrap());
        let serving = state.clone();
        tokio::spawn(async move {
            let never = std::future::pending::<()>;
            futures::try_join!(
                serve(listener, router(serving.clone()), &opts, None, never()),
                serve(ops, ops_router(serving), &opts, None, never()),
            )
            .unwrap()
        });
        let provider = Self {
            dir,
            url,
            ops_url,
            cfg,
            registry,
            state,
        };
        provider.reload();
        provider
    }

    /// Re-reads the manifests and publishes the result, as the standalone loop does.
    pub fn reload(&self) {
        self.reload_at(Timestamp::now());
    }

    /// A pass as if it ran at `now` (claims' grace periods are judged by it), published.
    pub fn reload_at(&self, now: Timestamp) {
        let pass = self.cfg.pass(now).unwrap();
        self.registry.publish(pass.snapshot);
        self.state.people.store(Arc::new(pass.people.unwrap_or_default()));
        self.state
            .connectors
            .store(Arc::new(pass.connectors.unwrap_or_default()));
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("manifests").join(name), text).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join("manifests").join(name)).unwrap();
    }

    /// The problems the last look at the manifests reports (as standalone prints them).
    pub fn problems(&self) -> Vec<String> {
        self.cfg.pass(Timestamp::now()).unwrap().problems
    }

    pub fn secret_dir(&self, ns: &str, secret: &str) -> PathBuf {
        self.dir.path().join("state/secrets").join(ns).join(secret)
    }

    /// (client id, secret) of a generated Secret with default keys.
    pub fn credentials(&self, ns: &str, client: &str) -> (String, String) {
        let d = self.secret_dir(ns, &format!("{client}-oauth"));
        (
            std::fs::read_to_string(d.join("CLIENT_ID")).unwrap(),
            std::fs::read_to_string(d.join("CLIENT_SECRET")).unwrap(),
        )
    }
}

/// An HTTP client for relying parties: no redirects followed.
pub fn rp_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An `openidconnect` client configured from discovery: the same type kauth uses as a client.
pub type RpClient = kauth::outbound::Discovered;

/// A relying party of the provider at `issuer`, from its discovery document. Without a
/// secret it is a public client and sends its id in the body.
pub async fn relying_party(issuer: &str, client_id: &str, secret: Option<String>, redirect: &str) -> RpClient {
    use openidconnect::core::{CoreClient, CoreProviderMetadata};
    use openidconnect::{AuthType, ClientId, ClientSecret, IssuerUrl, RedirectUrl};
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.to_string()).unwrap(), &rp_http())
        .await
        .unwrap();
    let public = secret.is_none();
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.into()), secret.map(ClientSecret::new))
            .set_redirect_uri(RedirectUrl::new(redirect.into()).unwrap());
    if public {
        client.set_auth_type(AuthType::RequestBody)
    } else {
        client
    }
}

/// A new, empty database on the PostgreSQL of `KAUTH_TEST_POSTGRES_URL` (`make test` starts a
/// throwaway server and sets it); returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::SqlSafeStr;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var("KAUTH_TEST_POSTGRES_URL")
        .expect("KAUTH_TEST_POSTGRES_URL is not set: run `make test`, which starts a throwaway PostgreSQL");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .expect("connect to KAUTH_TEST_POSTGRES_URL");
    let name = format!("kauth_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")).into_sql_str())
        .execute(&pool)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').expect("a database in the URL").0;
    format!("{base}/{name}")
}

/// The value of a hidden field on one of kauth's pages.
pub fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// A TLS client configuration that trusts only the CA certificate(s) in `ca` (PEM).
pub fn tls_trusting(ca: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A hyper client over HTTPS that trusts only the CA certificate(s) in `ca` (PEM), with
/// kauth's own rustls stack (reqwest is built without TLS in the tests).
pub fn https_trusting<B>(
    ca: &std::path::Path,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_trusting(ca))
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build(connector)
}

/// kubectl's public client, as the chart's `kubectlClient` makes it: `kauth login` signs in
/// as `kauth.kubectl`.
/// The platform's grant of the cluster's audience (kube-apiserver takes `kauth.kubectl`) to the
/// namespace `ci`, and the CI's client there.
pub const CI_CLUSTER_ACCESS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: Scope
metadata: {name: kubernetes, namespace: kauth}
spec:
  value: kubernetes
  audience: kauth.kubectl
  description: Act on the cluster (kube-apiserver)
  grantedTo: {namespaces: [ci]}
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: deployer, namespace: ci}
spec:
  scopes: [kubernetes]
"#;

pub const KUBECTL_CLIENT: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: kubectl, namespace: kauth}
spec:
  clientType: public
  grantTypes: [authorization_code, "urn:ietf:params:oauth:grant-type:device_code", refresh_token]
  redirectUris: ["http://127.0.0.1/callback"]
"#;
