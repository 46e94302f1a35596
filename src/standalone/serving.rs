//! Serving a folder: the first pass, the start-up summary, the provider launched on it, and
//! the loop that runs a new pass when a file changes (or a secret's plan is due).

use super::*;

/// The start-up summary: where credentials are and a ready-to-paste curl (trusting `ca`, the
/// local CA of `--tls self-signed`, when there is one).
pub fn summary(cfg: &StandaloneConfig, pass: &Pass, listen: &str, ops: &str, ca: Option<&Path>) -> String {
    let mut out = format!(
        "kauth standalone: issuer {} (listening on {listen}; health and metrics on http://{ops})\n",
        cfg.issuer.url
    );
    for problem in &pass.problems {
        out.push_str(&format!("  problem: {problem}\n"));
    }
    for warning in &pass.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    for notice in &pass.notices {
        out.push_str(&format!("  note: {notice}\n"));
    }
    for c in &pass.ready {
        out.push_str(&format!(
            "  client {} ready: client_id {}, credentials in {}, scopes [{}]\n",
            c.resource,
            c.client_id,
            c.credentials_dir.display(),
            c.scopes.join(" ")
        ));
    }
    if let Some(people) = &pass.people {
        out.push_str(&format!(
            "  people: {} local account(s) from Secret {}/{USERS_SECRET} may sign in at {}\n",
            people.len(),
            cfg.kauth_namespace,
            cfg.issuer.endpoint("/authorize")
        ));
    }
    if let Some(connectors) = pass.connectors.as_ref().filter(|c| !c.list.is_empty()) {
        let names: Vec<&str> = connectors.list.iter().map(|c| c.id.as_str()).collect();
        out.push_str(&format!("  connectors: {}\n", names.join(", ")));
    }
    if let Some(c) = pass.ready.iter().find(|c| !c.id_key.is_empty() && c.client_credentials) {
        let dir = c.credentials_dir.display();
        let scope = c.scopes.first().map(|s| format!(" -d scope={s}")).unwrap_or_default();
        let trust = ca.map(|ca| format!("--cacert {} ", ca.display())).unwrap_or_default();
        out.push_str(&format!(
            "\nGet a token:\n  curl -s {trust}-u \"$(cat {dir}/{}):$(cat {dir}/{})\" -d grant_type=client_credentials{scope} {}\n",
            c.id_key,
            c.secret_key,
            cfg.issuer.endpoint("/token")
        ));
    }
    out
}

/// Runs standalone until Ctrl-C: serves on 127.0.0.1:`port` and re-reads the manifests when
/// a file changes (checked twice a second) or a rotation step is due.
pub async fn run(
    mut cfg: StandaloneConfig,
    ports: Ports,
    opts: ServeOptions,
    tls: TlsChoice,
    issuer_given: bool,
    store_url: Option<String>,
) -> Result<(), StandaloneError> {
    let bind = async |port: u16, what: &str| {
        TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| StandaloneError(format!("cannot listen on 127.0.0.1:{port} ({what}): {e}")))
    };
    let listener = bind(ports.provider, "--port").await?;
    // Health and metrics must never keep the first command from starting: without --ops-port,
    // a taken 9090 (Prometheus's default too) gives way to a free port, named in the summary.
    let ops_listener = match ports.ops {
        Some(port) => bind(port, "--ops-port").await?,
        None => match TcpListener::bind(("127.0.0.1", DEFAULT_OPS_PORT)).await {
            Ok(listener) => listener,
            Err(_) => bind(0, "--ops-port").await?,
        },
    };
    let addr = listener.local_addr().map_err(|e| StandaloneError(e.to_string()))?;
    let ops_addr = ops_listener.local_addr().map_err(|e| StandaloneError(e.to_string()))?;
    if !issuer_given {
        cfg.issuer = Issuer::parse(&format!("{}://{addr}", tls.scheme())).map_err(StandaloneError)?;
    }
    let certificate = tls
        .certificate(&cfg.issuer.host())
        .map_err(|e| StandaloneError(format!("TLS: {e}")))?;

    private_dir(&cfg.state_dir)?;
    let url = match store_url {
        Some(url) => url,
        None => GrantStore::file_url(&cfg.state_dir).map_err(|e| StandaloneError(e.to_string()))?,
    };
    let metrics = Arc::new(Metrics::new());
    let store = launch::open_store(&url, &opts, &metrics)
        .await
        .map_err(|e| StandaloneError(e.to_string()))?;
    let registry = Registry::new();
    // Taken before the first pass: an edit made while kauth starts is reloaded, not missed.
    let mut seen = cfg.fingerprint();
    let cfg = Arc::new(cfg);
    let first_cfg = cfg.clone();
    // Passes run on blocking threads, which may wait for the store.
    let used: Arc<SecretUseLookup> = {
        let (store, runtime) = (store.clone(), tokio::runtime::Handle::current());
        Arc::new(move |names: &[&str]| {
            runtime.block_on(store.secret_last_used(names)).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read client secret use from the grant store");
                HashMap::new()
            })
        })
    };
    let first_used = used.clone();
    let first = tokio::task::spawn_blocking(move || first_cfg.pass_with(Timestamp::now(), &*first_used))
        .await
        .map_err(|e| StandaloneError(format!("the first pass stopped: {e}")))??;
    metrics.registered_clients.set(first.snapshot.clients.len() as i64);
    let local_ca = certificate.as_ref().and_then(|c| c.local_ca.clone());
    print!(
        "{}",
        summary(
            &cfg,
            &first,
            &addr.to_string(),
            &ops_addr.to_string(),
            local_ca.as_deref()
        )
    );
    if let Some(ca) = certificate.as_ref().and_then(|c| c.local_ca.as_ref()) {
        println!(
            "TLS: a local CA signed the certificate; clients trust it with {}",
            ca.display()
        );
    }
    let mut next_step = first.next_step;
    registry.publish(first.snapshot);
    // The first pass read and parsed every manifest: most of what it allocated is free now.
    crate::memory::release_freed_soon();

    // Second factors are sealed with a key the state folder keeps, unless the platform names one.
    let mut opts = opts;
    if opts.second_factor_key_file.is_none() {
        opts.second_factor_key_file = Some(
            launch::second_factor_key_in(&cfg.state_dir)
                .map_err(|e| StandaloneError(format!("second-factor key in {}: {e}", cfg.state_dir.display())))?,
        );
    }
    let provider = launch::Provider {
        registry: registry.clone(),
        issuer: cfg.issuer.clone(),
        store,
        metrics: metrics.clone(),
        opts: &opts,
        first_party_namespaces: cfg.first_party_namespaces.clone(),
        audit: opts
            .audit("off")
            .map(Arc::new)
            .map_err(|e| StandaloneError(format!("--audit-log: {e}")))?,
    };
    let state = provider.state().await.map_err(|e| StandaloneError(e.to_string()))?;
    let people = state.people.clone();
    people.store(Arc::new(first.people.unwrap_or_default()));
    let connectors = state.connectors.clone();
    connectors.store(Arc::new(first.connectors.unwrap_or_default()));
    let stop = futures::FutureExt::shared(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    let acceptor = certificate.as_ref().map(|c| c.cert.acceptor());
    let follow_certificate = async move {
        match certificate {
            Some(served) => served.cert.follow().await,
            None => std::future::pending().await,
        }
    };
    let listeners = launch::Listeners {
        provider: listener,
        ops: ops_listener,
        tls: acceptor,
    };
    let server = launch::run_provider(state, listeners, &opts, stop);
    let watcher = async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = Timestamp::now();
            let fingerprint_cfg = cfg.clone();
            let fingerprint = tokio::task::spawn_blocking(move || fingerprint_cfg.fingerprint())
                .await
                .unwrap_or_default();
            if fingerprint == seen && next_step.is_none_or(|t| now < t) {
                continue;
            }
            seen = fingerprint;
            // A pass reads and writes files and judges every manifest: it runs on a blocking
            // thread, and the provider serves the previous snapshot until the new one is swapped in.
            let pass_cfg = cfg.clone();
            let started = std::time::Instant::now();
            let pass_used = used.clone();
            let pass = tokio::task::spawn_blocking(move || pass_cfg.pass_with(now, &*pass_used))
                .await
                .unwrap_or_else(|e| Err(StandaloneError(format!("the reload stopped: {e}"))));
            match pass {
                Ok(pass) => {
                    for change in &pass.changes {
                        tracing::info!("{change}");
                    }
                    for problem in pass.problems.iter().chain(&pass.warnings) {
                        tracing::warn!("{problem}");
                    }
                    tracing::info!(
                        clients = pass.snapshot.clients.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "manifests reloaded"
                    );
                    metrics.registered_clients.set(pass.snapshot.clients.len() as i64);
                    next_step = pass.next_step;
                    registry.publish(pass.snapshot);
                    people.store(Arc::new(pass.people.unwrap_or_default()));
                    connectors.store(Arc::new(pass.connectors.unwrap_or_default()));
                    crate::memory::release_freed_soon();
                }
                // Keep serving the last good snapshot.
                Err(e) => tracing::error!("reload failed, still serving the previous state: {e}"),
            }
        }
    };
    tokio::select! {
        result = server => result.map(|_| ()).map_err(|e| StandaloneError(format!("server failed: {e}"))),
        _ = watcher => Ok(()),
        _ = follow_certificate => Ok(()),
    }
}
