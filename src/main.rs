//! The `kauth` binary: parses arguments and runs the chosen command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kauth::issuer::Issuer;
use kauth::standalone::{ManifestSource, StandaloneConfig};
use kauth::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "kauth",
    version,
    about = "Kubernetes-native OAuth 2.0 / OpenID Connect provider and client operator"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "KAUTH_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Tenancy settings of the platform team, the same in both modes.
#[derive(clap::Args)]
struct Tenancy {
    /// How long a Scope value, audience or explicit client id stays with its namespace after
    /// the last object claiming it is gone, e.g. 48h (at least 24h, the longest token
    /// lifetime).
    #[arg(long, env = "KAUTH_CLAIM_GRACE", default_value = "24h", value_parser = kauth::claims::parse_grace)]
    claim_grace: std::time::Duration,
    /// Namespace whose clients are first-party: people are not asked before they are
    /// identified to them (repeatable, or comma-separated).
    #[arg(
        long = "first-party-namespace",
        env = "KAUTH_FIRST_PARTY_NAMESPACES",
        value_delimiter = ','
    )]
    first_party_namespaces: Vec<String>,
    /// Most claims (Scope values, audiences, explicit client ids, deleted ones for their grace
    /// period) one namespace may hold; an object that would claim more is refused.
    #[arg(long, env = "KAUTH_CLAIMS_PER_NAMESPACE", default_value_t = kauth::claims::DEFAULT_QUOTA)]
    claims_per_namespace: usize,
    /// A Scope value, audience or client id the platform keeps: `NAME=NAMESPACE` for that
    /// namespace alone, `NAME` for nobody; a trailing `*` makes it a prefix (`payments.*=payments`).
    /// Repeatable, or comma-separated.
    #[arg(long = "reserve", env = "KAUTH_RESERVED_NAMES", value_delimiter = ',', value_parser = kauth::claims::Reservation::parse)]
    reserved: Vec<kauth::claims::Reservation>,
}

impl Tenancy {
    fn claims(&self) -> kauth::claims::ClaimPolicy {
        kauth::claims::ClaimPolicy {
            grace: self.claim_grace,
            quota: self.claims_per_namespace,
            reserved: std::sync::Arc::new(kauth::claims::Reserved {
                names: self.reserved.clone(),
                issuer: None,
            }),
        }
    }
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve manifests from a folder without a cluster, on 127.0.0.1.
    Standalone(StandaloneArgs),
    /// Run the controller and the provider against a cluster (in-cluster or KUBECONFIG).
    Run(RunArgs),
    /// kubectl credential plugin: print an ExecCredential with the person's ID token (from
    /// the cache, a silent refresh, or a sign-in). `kauth login setup` prints the kubeconfig
    /// entry that runs it.
    Login(LoginArgs),
    /// Print what kube-apiserver needs to accept kauth's ID tokens: the OIDC flags and the
    /// AuthenticationConfiguration (Kubernetes 1.30+).
    ClusterAuthConfig(ClusterAuthConfigArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Read a password from standard input and print its argon2id hash for users.yaml.
    HashPassword,
}

/// The arguments of `kauth standalone`.
#[derive(clap::Args)]
struct StandaloneArgs {
    /// Folder of YAML manifests (default: the examples built into kauth).
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Where generated credentials, keys and the grant store are kept.
    #[arg(long, default_value = ".kauth-state")]
    state_dir: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Refuse a resource with fields the schema does not know (default: report and
    /// ignore them, as an apiserver prunes them).
    #[arg(long)]
    strict: bool,
    /// Port on 127.0.0.1 of liveness, readiness and metrics (0 picks a free one). Default
    /// 9090, or a free port when 9090 is taken (Prometheus's default too); the summary
    /// says which.
    #[arg(long)]
    ops_port: Option<u16>,
    #[command(flatten)]
    serve: kauth::provider::serve::ServeOptions,
    /// Issuer URL (default: http://127.0.0.1:PORT, or https:// with TLS).
    #[arg(long)]
    issuer: Option<String>,
    #[command(flatten)]
    tls: kauth::tls::TlsOptions,
    /// `self-signed`: serve HTTPS with a certificate from a throwaway local CA made in the
    /// state folder (its path is printed).
    #[arg(long = "tls", id = "tls_mode", value_enum, conflicts_with = "tls_cert_file")]
    tls_mode: Option<kauth::tls::TlsMode>,
    /// kauth's namespace: SigningKeys elsewhere are ignored.
    #[arg(long, default_value = "kauth")]
    namespace: String,
    /// A grant store shared with other processes (postgres://...); default: a SQLite file
    /// in the state folder.
    #[arg(long, env = "KAUTH_STORE_URL", hide_env_values = true)]
    store_url: Option<String>,
    #[command(flatten)]
    tenancy: Tenancy,
}

/// The arguments of `kauth run`.
#[derive(clap::Args)]
struct RunArgs {
    /// Issuer URL, e.g. https://auth.example.com.
    #[arg(long, env = "KAUTH_ISSUER")]
    issuer: String,
    /// kauth's own namespace (SigningKeys live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kauth")]
    namespace: String,
    /// Address the provider listens on.
    #[arg(long, env = "KAUTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Address of liveness, readiness and metrics (never the provider's listener; always
    /// plain HTTP, for probes).
    #[arg(long, env = "KAUTH_OPS_LISTEN", default_value = "127.0.0.1:9090")]
    ops_listen: String,
    #[command(flatten)]
    tls: kauth::tls::TlsOptions,
    #[command(flatten)]
    serve: kauth::provider::serve::ServeOptions,
    /// Where the embedded grant store (SQLite) is kept when --store-url is not given.
    #[arg(long, env = "KAUTH_STATE_DIR", default_value = "/var/lib/kauth")]
    state_dir: PathBuf,
    /// Shared grant store for several replicas: postgres://user@host/db (the password from
    /// PGPASSWORD or the URL).
    #[arg(long, env = "KAUTH_STORE_URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Local people who may sign in: a users.yaml (the chart mounts the kauth-users Secret).
    #[arg(long, env = "KAUTH_USERS_FILE")]
    users_file: Option<PathBuf>,
    /// Upstream OpenID providers people may sign in with: a connectors.yaml.
    #[arg(long, env = "KAUTH_CONNECTORS_FILE")]
    connectors_file: Option<PathBuf>,
    /// Where Secrets referenced by connectors are mounted, as <dir>/<name>/<key>.
    #[arg(long, env = "KAUTH_SECRETS_DIR", default_value = "/etc/kauth/secrets")]
    secrets_dir: PathBuf,
    /// Run only the provider (no controller writes).
    #[arg(long, conflicts_with = "no_provider")]
    no_controller: bool,
    /// Run only the controller.
    #[arg(long)]
    no_provider: bool,
    /// Identity in the leader Lease (default: pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Expected issuer of ServiceAccount tokens (default: read from the cluster).
    #[arg(long, env = "KAUTH_SERVICE_ACCOUNT_ISSUER")]
    service_account_issuer: Option<String>,
    /// Extra audience accepted in ServiceAccount tokens (repeatable).
    #[arg(long = "service-account-audience")]
    service_account_audiences: Vec<String>,
    /// Also ask the cluster (TokenReview, cached 5 s) whether a ServiceAccount token is still
    /// valid: pod-bound tokens stop working within ~15 s of their pod's deletion.
    #[arg(long)]
    service_account_token_review: bool,
    /// Longest ServiceAccount token accepted (`exp - iat`), e.g. 1h: a stolen token should
    /// not work for long.
    #[arg(long, default_value = "1h", value_parser = kauth::validation::parse_duration)]
    service_account_token_max_lifetime: std::time::Duration,
    /// How long the leader Lease holds without renewal, e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = kauth::validation::parse_duration)]
    lease_duration: std::time::Duration,
    /// The ConfigMap kauth keeps the JWKS, issuer and discovery document in, in every
    /// namespace that owns a Scope or holds a granted client ("" turns it off).
    #[arg(long, env = "KAUTH_JWKS_CONFIG_MAP", default_value = "kauth-jwks")]
    jwks_config_map: String,
    /// Also deliver the JWKS ConfigMap to namespaces with these labels (`key=value`,
    /// comma-separated, all must match), e.g. for resource servers that hold no Scope.
    #[arg(long, env = "KAUTH_JWKS_NAMESPACE_SELECTOR", value_parser = kauth::controller::jwks::parse_match_labels)]
    jwks_namespace_selector: Option<std::collections::BTreeMap<String, String>>,
    #[command(flatten)]
    tenancy: Tenancy,
}

/// The arguments of `kauth clusterauthconfig`.
#[derive(clap::Args)]
struct ClusterAuthConfigArgs {
    /// kauth's issuer URL (https).
    #[arg(long, env = "KAUTH_ISSUER")]
    issuer: String,
    /// The client id kubectl signs in as (the ID token's audience).
    #[arg(long, default_value = "kauth.kubectl")]
    client_id: String,
    /// The CA certificate (PEM) of kauth's certificate, to embed in the configuration.
    #[arg(long)]
    certificate_authority: Option<PathBuf>,
    /// Where that CA file is on the apiserver's hosts (for --oidc-ca-file).
    #[arg(long)]
    apiserver_ca_path: Option<String>,
    /// Put before every username and group claim, so people never pass for
    /// ServiceAccounts or system groups.
    #[arg(long, default_value = "kauth:")]
    prefix: String,
}

/// The arguments of `kauth login`.
#[derive(clap::Args)]
struct LoginArgs {
    #[command(flatten)]
    opts: kauth::login::LoginOptions,
    /// `setup`: print the kubeconfig `users:` entry instead; `logout`: revoke the refresh
    /// token at the issuer and forget the cached tokens (of this issuer, client and account).
    #[arg(value_parser = ["setup", "logout"])]
    action: Option<String>,
    /// The user's name in that kubeconfig entry.
    #[arg(long, default_value = "kauth")]
    user: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Login(args) => login(args).await,
        Command::ClusterAuthConfig(args) => cluster_auth_config(args),
        Command::Crds => {
            print!("{}", kauth::crd::crds_yaml());
            Ok(())
        }
        Command::HashPassword => hash_password(),
        Command::Run(args) => run(args).await,
        Command::Standalone(args) => standalone(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// How a command failed: with its arguments (exit code 2), or while it ran (exit code 1).
enum Failure {
    Usage(String),
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(e.to_string())
}

fn error(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(format!("error: {e}"))
}

async fn login(LoginArgs { opts, action, user }: LoginArgs) -> Result<(), Failure> {
    match action.as_deref() {
        Some("setup") => {
            print!("{}", kauth::login::setup(&opts, &user));
            return Ok(());
        }
        Some(_) => {
            eprintln!("{}", kauth::login::logout(&opts).await.map_err(failed)?);
            return Ok(());
        }
        None => {}
    }
    let credential = kauth::login::login(&opts).await.map_err(failed)?;
    println!("{credential}");
    Ok(())
}

fn cluster_auth_config(args: ClusterAuthConfigArgs) -> Result<(), Failure> {
    let ca_pem = match args.certificate_authority.as_deref().map(std::fs::read_to_string) {
        Some(Ok(pem)) => Some(pem),
        Some(Err(e)) => return Err(Failure::Usage(format!("--certificate-authority: {e}"))),
        None => None,
    };
    let settings = kauth::cluster_auth::ClusterAuth {
        issuer: args.issuer,
        client_id: args.client_id,
        ca_pem,
        ca_file: args.apiserver_ca_path,
        prefix: args.prefix,
    };
    if let Some(problem) = settings.problem() {
        return Err(Failure::Usage(problem.to_string()));
    }
    println!("# kube-apiserver flags (any version):");
    print!("{}", settings.flags());
    println!("---\n# Or, Kubernetes 1.30+: --authentication-config=<this file>");
    print!("{}", settings.authentication_configuration());
    Ok(())
}

fn hash_password() -> Result<(), Failure> {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty() {
        return Err(Failure::Usage(
            "give the password on standard input, e.g. `kauth hash-password < file`".into(),
        ));
    }
    println!("{}", kauth::people::hash_password(line.trim_end_matches(['\r', '\n'])));
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let issuer = Issuer::parse(&args.issuer).map_err(|e| Failure::Usage(format!("--issuer: {e}")))?;
    let cfg = kauth::run::RunConfig {
        issuer,
        namespace: args.namespace,
        listen: args.listen,
        ops_listen: args.ops_listen,
        serve: args.serve,
        tls: args.tls.choice(),
        state_dir: args.state_dir,
        store_url: args.store_url,
        users_file: args.users_file,
        connectors_file: args.connectors_file,
        secrets_dir: args.secrets_dir,
        controller: !args.no_controller,
        provider: !args.no_provider,
        identity: args.identity.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        }),
        lease_duration: args.lease_duration,
        service_account_issuer: args.service_account_issuer,
        service_account_audiences: args.service_account_audiences,
        service_account_token_review: args.service_account_token_review,
        service_account_token_max_lifetime: args.service_account_token_max_lifetime,
        claims: args.tenancy.claims(),
        first_party_namespaces: args.tenancy.first_party_namespaces,
        jwks_config_map: args.jwks_config_map,
        jwks_namespace_selector: args.jwks_namespace_selector,
    };
    kauth::run::run(cfg).await.map_err(error)
}

async fn standalone(args: StandaloneArgs) -> Result<(), Failure> {
    let issuer_given = args.issuer.is_some();
    let issuer = Issuer::parse(args.issuer.as_deref().unwrap_or("http://127.0.0.1"))
        .map_err(|e| Failure::Usage(format!("--issuer: {e}")))?;
    let cfg = StandaloneConfig {
        manifests: args
            .manifests
            .map(ManifestSource::Dir)
            .unwrap_or(ManifestSource::Embedded),
        state_dir: args.state_dir,
        issuer,
        kauth_namespace: args.namespace,
        claims: args.tenancy.claims(),
        first_party_namespaces: args.tenancy.first_party_namespaces,
        strict: args.strict,
    };
    let ports = kauth::standalone::Ports {
        provider: args.port,
        ops: args.ops_port,
    };
    let tls = match args.tls_mode {
        Some(kauth::tls::TlsMode::SelfSigned) => kauth::tls::TlsChoice::LocalCa(cfg.state_dir.join("tls")),
        None => args.tls.choice(),
    };
    kauth::standalone::run(cfg, ports, args.serve, tls, issuer_given, args.store_url)
        .await
        .map_err(error)
}
