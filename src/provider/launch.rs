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
        let sealing = match &self.opts.second_factor_key_file {
            Some(path) => Some(read_second_factor_key(path).map_err(|e| StoreError::Sql(sqlx::Error::Io(e)))?),
            None => None,
        };
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
            .with_second_factors(
                sealing,
                crate::second_factors::Policy {
                    everyone: self.opts.require_second_factor,
                    // "a, b" as well as "a,b": a stray space must not drop a group.
                    groups: self
                        .opts
                        .require_second_factor_groups
                        .iter()
                        .map(|g| g.trim().to_string())
                        .filter(|g| !g.is_empty())
                        .collect(),
                },
            )
            .with_secret_use_report_interval(self.opts.secret_use_report_interval)
            .with_audit(self.audit))
    }
}

/// Reads the key second factors are sealed with: 32 bytes, raw or in base64.
pub fn read_second_factor_key(path: &std::path::Path) -> std::io::Result<crate::second_factors::SealingKey> {
    use base64::Engine;
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok();
    let key: [u8; 32] = decoded.as_deref().unwrap_or(&bytes).try_into().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: a second-factor key is 32 bytes, raw or in base64", path.display()),
        )
    })?;
    Ok(crate::second_factors::SealingKey::new(&key))
}

/// Standalone's second-factor key in its state folder `dir`, made on the first start (readable
/// by its owner only): the path to pass as `--second-factor-key-file`.
pub fn second_factor_key_in(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("second-factor.key");
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| std::io::Error::other("no randomness"))?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(&key)?;
            file.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(path)
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
