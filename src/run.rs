//! `kauth run`: controller and provider in one process against a cluster, sharing one cache.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::connectors::{Connectors, mounted_secret};
use crate::controller::leader::{self, LeaseConfig};
use crate::controller::watch_health::WatchHealth;
use crate::controller::{self, Cache, Context};
use crate::followed;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::people::Directory;
use crate::provider::launch;
use crate::provider::serve::ServeOptions;
use crate::registry::Registry;
use crate::store::GrantStore;
use crate::workload_identity::{KubeIssuerKeys, KubeTokenReviewer, ServiceAccountTokens};

/// Settings of `kauth run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Issuer URL.
    pub issuer: Issuer,
    /// kauth's namespace.
    pub namespace: String,
    /// Address the provider listens on.
    pub listen: String,
    /// Where the embedded grant store (SQLite) is kept when no `store_url` is given.
    pub state_dir: PathBuf,
    /// The shared grant store (`postgres://...`); several replicas need one.
    pub store_url: Option<String>,
    /// Local people (`users.yaml`, usually a mounted Secret), followed as it changes.
    pub users_file: Option<PathBuf>,
    /// Upstream OpenID providers (`connectors.yaml`, usually a mounted ConfigMap).
    pub connectors_file: Option<PathBuf>,
    /// Where the Secrets connectors reference are mounted (`<dir>/<name>/<key>`).
    pub secrets_dir: PathBuf,
    /// Run the controller half.
    pub controller: bool,
    /// Run the provider half.
    pub provider: bool,
    /// This replica's identity for the leader Lease.
    pub identity: String,
    /// How long the leader Lease holds without renewal.
    pub lease_duration: std::time::Duration,
    /// Expected `iss` of ServiceAccount tokens (default: the cluster's discovery document).
    pub service_account_issuer: Option<String>,
    /// Audiences accepted in ServiceAccount tokens besides kauth's issuer and token endpoint.
    pub service_account_audiences: Vec<String>,
    /// Also ask the cluster (TokenReview) whether a ServiceAccount token is still valid.
    pub service_account_token_review: bool,
    /// Where liveness, readiness and metrics are served.
    pub ops_listen: String,
    /// Listener limits and trusted proxies.
    pub serve: ServeOptions,
    /// The provider's certificate, when it serves HTTPS itself.
    pub tls: crate::tls::TlsChoice,
    /// Longest ServiceAccount token accepted.
    pub service_account_token_max_lifetime: std::time::Duration,
    /// Claim grace, quota and reservations.
    pub claims: crate::claims::ClaimPolicy,
    /// Namespaces whose clients are first-party (no consent to identify people).
    pub first_party_namespaces: Vec<String>,
    /// The ConfigMap the JWKS is delivered in, in every namespace that wants it ("": none).
    pub jwks_config_map: String,
    /// Namespaces with all these labels get the JWKS too.
    pub jwks_namespace_selector: Option<std::collections::BTreeMap<String, String>>,
}

/// A failure that stops `kauth run`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunError(String);

/// The CRDs kauth serves.
const CRDS: [&str; 3] = ["oauthclients.kauth.dev", "scopes.kauth.dev", "signingkeys.kauth.dev"];

/// The first kauth CRD that is not installed, if any.
async fn missing_crd(client: &Client) -> Result<Option<&'static str>, RunError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for name in CRDS {
        match api.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Some(name)),
            // Reading CRDs may be forbidden by a narrower RBAC; the watches will tell.
            Err(kube::Error::Api(s)) if s.code == 403 => return Ok(None),
            Err(e) => return Err(RunError(format!("cannot reach the Kubernetes API: {e}"))),
        }
    }
    Ok(None)
}

/// Waits until the CRDs are installed, saying clearly which one is missing and how to fix it.
async fn wait_for_crds(client: &Client) -> Result<(), RunError> {
    let mut told = false;
    while let Some(name) = missing_crd(client).await? {
        if !told {
            tracing::warn!(
                crd = name,
                "kauth's CRDs are not installed: apply crds/kauth.dev.yaml (or install the Helm chart); waiting for them"
            );
            told = true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    if told {
        tracing::info!("kauth's CRDs are installed");
    }
    Ok(())
}

/// Runs until SIGTERM or Ctrl-C; in-flight requests finish before it returns.
pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default()
        .await
        .map_err(|e| RunError(format!("no Kubernetes configuration: {e}")))?;
    wait_for_crds(&client).await?;
    let metrics = Arc::new(Metrics::new());
    let changed = Arc::new(Notify::new());
    let health = WatchHealth::default();
    let (cache, reflectors) = Cache::start(client.clone(), &cfg.namespace, changed.clone(), health.clone());
    let issuer = Arc::new(cfg.issuer.clone());
    let registry = Registry::new();

    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        tracing::info!("shutting down");
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));

    let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = reflectors;
    tasks.push(Box::pin(controller::run_registry(
        cache.clone(),
        changed,
        registry.clone(),
        cfg.namespace.clone(),
        metrics.clone(),
        cfg.claims.clone().with_issuer(&cfg.issuer.url),
    )));
    let lease = LeaseConfig {
        name: "kauth-controller".into(),
        namespace: cfg.namespace.clone(),
        identity: cfg.identity.clone(),
        duration: cfg.lease_duration,
        renew_every: (cfg.lease_duration / 3).max(std::time::Duration::from_millis(200)),
    };
    // One audit trail for the provider's events and the controller's.
    let audit = Arc::new(
        cfg.serve
            .audit("stdout")
            .map_err(|e| RunError(format!("--audit-log: {e}")))?,
    );
    // The provider keeps grants in it; the controller reads secret use from it (only a shared
    // store shows the use of every replica).
    let store = if cfg.provider || cfg.store_url.is_some() {
        let url = match &cfg.store_url {
            Some(url) => url.clone(),
            None => GrantStore::file_url(&cfg.state_dir).map_err(|e| RunError(e.to_string()))?,
        };
        let store = launch::open_store(&url, &cfg.serve, &metrics)
            .await
            .map_err(|e| RunError(e.to_string()))?;
        Some(store)
    } else {
        None
    };
    if cfg.controller {
        let mut ctx = Context::new(
            client.clone(),
            cache.clone(),
            issuer.clone(),
            cfg.namespace.clone(),
            metrics.clone(),
        );
        if !cfg.jwks_config_map.is_empty() {
            ctx = ctx.with_jwks(crate::controller::jwks::JwksDelivery {
                registry: registry.clone(),
                config_map: cfg.jwks_config_map.clone(),
                namespace_selector: cfg.jwks_namespace_selector.clone(),
            });
        }
        if let Some(store) = &store {
            ctx = ctx.with_store(store.clone());
        }
        ctx.audit = audit.clone();
        let ctx = Arc::new(ctx);
        let (leading_tx, leading) = watch::channel(false);
        tasks.push(Box::pin(leader::hold_lease(
            client.clone(),
            lease.clone(),
            leading_tx,
            shutdown.clone(),
        )));
        tasks.push(Box::pin(lead_while_holding(ctx, leading, shutdown.clone())));
    }
    let server = if cfg.provider {
        let store = store.clone().expect("opened for the provider");
        let bind = async |address: &str| {
            TcpListener::bind(address)
                .await
                .map_err(|e| RunError(format!("cannot listen on {address}: {e}")))
        };
        let listener = bind(&cfg.listen).await?;
        let ops_listener = bind(&cfg.ops_listen).await?;
        tracing::info!(address = %cfg.listen, operations = %cfg.ops_listen, issuer = %cfg.issuer.url, "provider listening");
        let provider = launch::Provider {
            registry,
            issuer: cfg.issuer.clone(),
            store,
            metrics,
            opts: &cfg.serve,
            first_party_namespaces: cfg.first_party_namespaces.clone(),
            audit: audit.clone(),
        };
        let mut state = provider
            .state()
            .await
            .map_err(|e| RunError(e.to_string()))?
            .with_freshness(Arc::new(health.clone()));
        if let Some(path) = &cfg.users_file {
            let parse = |text: &str| {
                Directory::parse(text).inspect(|people| {
                    for problem in people.problems() {
                        tracing::warn!("{}: {problem}", crate::people::USERS_KEY);
                    }
                })
            };
            let follow = followed::follow("local people", path.clone(), parse, state.people.clone());
            tasks.push(Box::pin(follow));
        }
        if let Some(path) = &cfg.connectors_file {
            let secrets = cfg.secrets_dir.clone();
            let parse = move |text: &str| Connectors::parse(text, |name, key| mounted_secret(&secrets, name, key));
            let follow = followed::follow("connectors", path.clone(), parse, state.connectors.clone());
            tasks.push(Box::pin(follow));
        }
        if let Some(tokens) = service_account_tokens(&client, &cfg).await {
            state = state.with_service_accounts(tokens);
        }
        let tls = match cfg
            .tls
            .certificate(&cfg.issuer.host())
            .map_err(|e| RunError(format!("TLS: {e}")))?
        {
            Some(served) => {
                tasks.push(Box::pin(served.cert.clone().follow()));
                Some(served.cert.acceptor())
            }
            None => None,
        };
        let (sd, opts) = (shutdown.clone(), cfg.serve.clone());
        let listeners = launch::Listeners {
            provider: listener,
            ops: ops_listener,
            tls,
        };
        Some(async move { launch::run_provider(state, listeners, &opts, sd).await })
    } else {
        None
    };
    let background = futures::future::join_all(tasks);
    let result = match server {
        Some(server) => tokio::select! {
            r = server => r.map_err(|e| RunError(format!("server failed: {e}"))),
            _ = background => Ok(()),
        },
        None => tokio::select! {
            _ = shutdown => Ok(()),
            _ = background => Ok(()),
        },
    };
    // Released at shutdown by hold_lease already; again here for a run that ended otherwise
    // (only while this replica still holds it).
    if cfg.controller {
        leader::release(client, &lease).await;
    }
    result
}

/// The verifier for secretless clients: the cluster's service-account issuer (configured, or
/// read from the apiserver's discovery document) and its keys, fetched through the API.
async fn service_account_tokens(client: &Client, cfg: &RunConfig) -> Option<Arc<ServiceAccountTokens>> {
    let issuer = match &cfg.service_account_issuer {
        Some(issuer) => issuer.clone(),
        None => match KubeIssuerKeys::discover_issuer(client).await {
            Ok(issuer) => issuer,
            Err(e) => {
                tracing::warn!(error = %e, "ServiceAccount tokens disabled: cannot read the cluster's issuer discovery document");
                return None;
            }
        },
    };
    // A projected token's audience: kauth's issuer or token endpoint (as documented).
    let mut audiences = vec![cfg.issuer.url.clone(), cfg.issuer.endpoint("/token")];
    audiences.extend(cfg.service_account_audiences.iter().cloned());
    let mut tokens =
        ServiceAccountTokens::new(issuer.clone(), audiences, Arc::new(KubeIssuerKeys::new(client.clone())))
            .with_max_lifetime(cfg.service_account_token_max_lifetime);
    if cfg.service_account_token_review {
        tokens = tokens.with_token_review(Arc::new(KubeTokenReviewer::new(client.clone())));
    }
    let tokens = Arc::new(tokens);
    if !tokens.refresh().await {
        tracing::warn!(%issuer, "the ServiceAccount issuer's keys are not readable yet; they are fetched again on first use");
    }
    tracing::info!(%issuer, "accepting ServiceAccount tokens from this issuer");
    Some(tokens)
}

/// Runs the reconcilers while this replica leads, and aborts them the moment it stops
/// leading, so a former leader writes nothing more.
async fn lead_while_holding(
    ctx: Arc<Context>,
    mut leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        let ctx = ctx.clone();
        let sd = shutdown.clone();
        let reconcilers = tokio::spawn(async move {
            if let Err(e) = controller::ensure_default_signing_key(&ctx).await {
                tracing::warn!(error = %e, "cannot ensure a default SigningKey");
            }
            controller::run(ctx, sd).await
        });
        let _ = leading.wait_for(|l| !*l).await;
        reconcilers.abort();
        tracing::info!("reconcilers stopped: not the leader");
    }
}
