//! The one way both modes (`kauth run`, `kauth standalone`) start the provider: the grant
//! store, the state every handler shares, and the provider's and the operations listener
//! served with housekeeping beside them. Each mode adds only what is its own (a cluster's
//! watch health and ServiceAccount verifier; standalone's people from its folder).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::serve::{ServeOptions, serve};
use super::state::ProviderState;
use super::{ops_router, router};
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{GrantStore, StoreError};

/// Opens the grant store at `url` with the options' deadline and commit mode, its latency
/// measured into `metrics`.
pub async fn open_store(url: &str, opts: &ServeOptions, metrics: &Metrics) -> Result<GrantStore, StoreError> {
    Ok(GrantStore::open_with(url, opts.store_timeout, opts.store_group_commit)
        .await?
        .with_latency(metrics.store_latency.clone()))
}

/// What the provider's state is made of, in both modes.
pub struct Provider<'a> {
    /// What it serves.
    pub registry: Registry,
    /// Its issuer.
    pub issuer: Issuer,
    /// Where grants live.
    pub store: GrantStore,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Listener limits, trusted proxies, password checks.
    pub opts: &'a ServeOptions,
    /// Namespaces whose clients are first-party.
    pub first_party_namespaces: Vec<String>,
    /// The audit trail.
    pub audit: Arc<crate::audit::Audit>,
}

impl Provider<'_> {
    /// The state every handler shares.
    pub async fn state(self) -> Result<ProviderState, StoreError> {
        let nonce_secret = match self.opts.dpop_nonce {
            true => Some(self.store.shared_secret(super::dpop_nonce::SECRET_NAME).await?),
            false => None,
        };
        Ok(ProviderState::new(self.registry, self.issuer, self.store, self.metrics)
            .await?
            .with_first_party_namespaces(self.first_party_namespaces)
            .with_password_checks(self.opts.max_password_checks)
            .with_par_required(self.opts.require_pushed_authorization_requests)
            .with_outbound_allowed(self.opts.outbound_allowed_networks.clone())
            .with_strict_assertion_audience(self.opts.strict_assertion_audience)
            .with_dpop_nonces(nonce_secret.as_deref())
            .with_secret_use_report_interval(self.opts.secret_use_report_interval)
            .with_audit(self.audit))
    }
}

/// The listeners the provider serves on.
pub struct Listeners {
    /// OAuth endpoints and sign-in pages.
    pub provider: TcpListener,
    /// Liveness, readiness and metrics (plain HTTP).
    pub ops: TcpListener,
    /// HTTPS on the provider's listener, when kauth serves it itself.
    pub tls: Option<TlsAcceptor>,
}

/// Serves the provider and its operations listener until `shutdown` (then in-flight requests
/// finish), with the state's housekeeping beside them.
pub async fn run_provider(
    state: ProviderState,
    listeners: Listeners,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()> + Clone,
) -> std::io::Result<()> {
    let housekeeping = state.clone().housekeeping();
    let servers = async {
        futures::try_join!(
            serve(
                listeners.provider,
                router(state.clone()),
                opts,
                listeners.tls,
                shutdown.clone()
            ),
            serve(listeners.ops, ops_router(state), opts, None, shutdown),
        )
        .map(|_| ())
    };
    tokio::select! {
        result = servers => result,
        _ = housekeeping => Ok(()),
    }
}
