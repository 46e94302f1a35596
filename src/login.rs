//! `kauth login`: a kubectl credential plugin (`client.authentication.k8s.io/v1` exec). It
//! prints an `ExecCredential` carrying the person's ID token, which kube-apiserver's OIDC
//! authenticator checks. The token comes from the cache when it is still good, else from a
//! silent refresh, else from a sign-in: authorization code with PKCE through the system
//! browser and a loopback port (RFC 8252), or the device grant where there is no browser.
//! Tokens are cached under the user's cache folder, readable by the user alone, one file per
//! issuer, client, scopes and `--account` (so several people, or one person's several
//! identities, stay signed in side by side), and each run holds a lock on its file: two kubectl
//! processes never spend the same rotating refresh token (the second use would revoke its
//! family). `kauth login logout` revokes the refresh token at the issuer and drops the file.
//! Without a person (CI), a client's own credential gets its access token instead
//! ([`machine`]).

pub mod machine;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, RefreshToken, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::outbound::{Discovered, Outbound, Reach};

/// A cached ID token is used while it has at least this long to live.
const FRESH_FOR: i64 = 60;
/// How long a person has to finish signing in in the browser.
const BROWSER_WAIT: Duration = Duration::from_secs(300);

/// What `kauth login` is told.
#[derive(clap::Args, Clone, Debug)]
pub struct LoginOptions {
    /// kauth's issuer URL.
    #[arg(long, env = "KAUTH_ISSUER")]
    pub issuer: String,
    /// The public OAuthClient kubectl signs in as (the chart's preset: <namespace>.kubectl).
    #[arg(long, env = "KAUTH_LOGIN_CLIENT_ID")]
    pub client_id: String,
    /// A CA certificate (PEM) to trust for the issuer, besides the system's.
    #[arg(long)]
    pub certificate_authority: Option<PathBuf>,
    /// Sign in with the device grant: a code to type on any browser (for machines without
    /// one).
    #[arg(long)]
    pub device: bool,
    /// Print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// More scopes to ask for (openid, profile, email, groups and offline_access always are).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Where tokens are cached (default: $XDG_CACHE_HOME/kauth/login or ~/.cache/kauth/login).
    #[arg(long, env = "KAUTH_LOGIN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The person to sign in as (their username, or `sub`): each account has its own tokens,
    /// so several people stay signed in side by side on one issuer. The sign-in is asked for
    /// afresh with this `login_hint` (not answered by another person's browser session), and a
    /// token of anyone else is refused.
    #[arg(long, env = "KAUTH_LOGIN_ACCOUNT")]
    pub account: Option<String>,
    /// Non-interactive (CI): `--client-id` is the CI's own OAuthClient and this file holds its
    /// client secret (client credentials); the credential is its access token for the
    /// `--scope`s (the platform's Scope for the cluster's audience). No person signs in.
    #[arg(
        long,
        env = "KAUTH_LOGIN_CLIENT_SECRET_FILE",
        conflicts_with_all = ["device", "no_browser", "account", "service_account_token_file"]
    )]
    pub client_secret_file: Option<PathBuf>,
    /// Non-interactive (CI): exchange the ServiceAccount token in this file for the access
    /// token of the OAuthClient bound to that ServiceAccount (RFC 8693), for the `--scope`s.
    #[arg(long, env = "KAUTH_LOGIN_SERVICE_ACCOUNT_TOKEN_FILE", conflicts_with_all = ["device", "no_browser", "account"])]
    pub service_account_token_file: Option<PathBuf>,
}

/// Why no credential could be had: one line for the person at the terminal.
#[derive(Debug, thiserror::Error)]
#[error("kauth login: {0}")]
pub struct LoginError(String);

fn fail(what: &str) -> impl Fn(&dyn std::fmt::Display) -> LoginError + '_ {
    move |e| LoginError(format!("{what}: {e}"))
}

/// The tokens kept between runs.
#[derive(Serialize, Deserialize, Default)]
struct Cached {
    id_token: String,
    /// The ID token's `exp`.
    expires_at: i64,
    refresh_token: Option<String>,
}

/// The `ExecCredential` kubectl reads from standard output.
pub fn exec_credential(id_token: &str, expires_at: i64) -> String {
    let expiry = jiff::Timestamp::from_second(expires_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": id_token, "expirationTimestamp": expiry},
    })
    .to_string()
}

/// The kubeconfig `users:` entry that runs this plugin.
pub fn setup(opts: &LoginOptions, user: &str) -> String {
    let mut args = vec![
        "login".to_string(),
        format!("--issuer={}", opts.issuer),
        format!("--client-id={}", opts.client_id),
    ];
    if let Some(ca) = &opts.certificate_authority {
        args.push(format!("--certificate-authority={}", ca.display()));
    }
    if opts.device {
        args.push("--device".into());
    }
    if let Some(account) = &opts.account {
        args.push(format!("--account={account}"));
    }
    match machine::MachineCredential::of(opts) {
        Some(machine::MachineCredential::ClientSecret(file)) => {
            args.push(format!("--client-secret-file={}", file.display()))
        }
        Some(machine::MachineCredential::ServiceAccountToken(file)) => {
            args.push(format!("--service-account-token-file={}", file.display()))
        }
        None => {}
    }
    for scope in &opts.scopes {
        args.push(format!("--scope={scope}"));
    }
    let interactive = if machine::MachineCredential::of(opts).is_some() {
        "Never"
    } else {
        "IfAvailable"
    };
    let args: String = args.iter().map(|a| format!("\n          - {a}")).collect();
    format!(
        "# A kubeconfig with the user entry alone: add it to KUBECONFIG and use it in a context
# (kubectl config set-context --current --user={user}).
apiVersion: v1
kind: Config
users:
  - name: {user}
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1
        command: kauth
        args:{args}
        interactiveMode: {interactive}
        provideClusterInfo: false
"
    )
}

/// The cache file of this issuer and client.
fn cache_file(opts: &LoginOptions) -> Result<PathBuf, LoginError> {
    let dir = match &opts.cache_dir {
        Some(dir) => dir.clone(),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .ok_or_else(|| LoginError("no cache folder: set HOME or --cache-dir".into()))?
            .join("kauth/login"),
    };
    // The scopes as a set, and the account: another scope or account is another token.
    let mut scopes: Vec<&str> = opts.scopes.iter().map(String::as_str).collect();
    scopes.sort_unstable();
    scopes.dedup();
    // A client's own token (CI) never shares a file with a person's.
    let account = match machine::MachineCredential::of(opts) {
        Some(_) => "\n(client)",
        None => opts.account.as_deref().unwrap_or(""),
    };
    let key = crate::store::handle_digest(&format!(
        "{}\n{}\n{}\n{account}",
        opts.issuer,
        opts.client_id,
        scopes.join(" "),
    ));
    Ok(dir.join(format!("{}.json", &key[..32])))
}

/// Holds the lock of one cache file (released when dropped, or when the process ends).
struct CacheLock(#[allow(dead_code)] std::fs::File);

/// Waits for the lock beside `path` (creating the folder and the lock file, readable by the
/// user alone): one run at a time reads, refreshes and writes each cache file.
async fn lock(path: &Path) -> Result<CacheLock, LoginError> {
    use std::os::unix::fs::OpenOptionsExt;
    cache_folder(path)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.with_extension("lock"))
        .map_err(|e| fail("cannot open the cache lock")(&e))?;
    // Held for a whole run, a sign-in included: say why this one waits.
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        return Ok(CacheLock(file));
    }
    eprintln!("kauth login: waiting for another kauth login of this account to finish");
    tokio::task::spawn_blocking(move || {
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map(|()| CacheLock(file))
    })
    .await
    .map_err(|e| fail("cache lock")(&e))?
    .map_err(|e| fail("cannot lock the token cache")(&std::io::Error::from(e)))
}

/// Makes the folder of the cache file `path`, readable by the user alone.
fn cache_folder(path: &Path) -> Result<(), LoginError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path.parent().expect("the cache file is in a folder"))
        .map_err(|e| fail("cannot create the cache folder")(&e))
}

fn load(path: &Path) -> Option<Cached> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes the cache readable by the user alone (the folder too), replacing it in one rename.
fn save(path: &Path, cached: &Cached) -> Result<(), LoginError> {
    cache_folder(path)?;
    let text = serde_json::to_vec(cached).expect("the cache serialises");
    crate::files::replace(path, &text, 0o600).map_err(|e| fail("cannot write the token cache")(&e))
}

/// With `--account`, refuses a token of anyone else: a browser may sign in whoever typed
/// their password, and one account's cache must never hold another person's token.
fn check_account(opts: &LoginOptions, id_token: &str) -> Result<(), LoginError> {
    let Some(account) = &opts.account else { return Ok(()) };
    let claims = crate::tokens::unverified_claims(id_token).unwrap_or_default();
    let who = |name: &str| claims[name].as_str().map(str::to_owned);
    if who("sub").as_deref() == Some(account.as_str()) || who("preferred_username").as_deref() == Some(account.as_str())
    {
        return Ok(());
    }
    Err(LoginError(format!(
        "signed in as {}, not {account}: sign in as {account} (nothing was cached)",
        who("sub").unwrap_or_else(|| "someone else".into())
    )))
}

/// The `exp` of a JWT, read without checking it (kube-apiserver checks the token; this only
/// decides when to get another).
fn expiry(jwt: &str) -> Option<i64> {
    crate::tokens::unverified_claims(jwt)?["exp"].as_i64()
}

/// A run's cache file, locked for the run.
enum Opened {
    /// Its token is good for a while yet: the credential to print.
    Fresh(String),
    /// A new token is needed: the file, its lock and what it held.
    Stale(PathBuf, CacheLock, Cached),
}

/// Locks the cache file of `opts` until this run has written what it got (another run waits,
/// then finds it there) and reads it.
async fn open_cache(opts: &LoginOptions) -> Result<Opened, LoginError> {
    let path = cache_file(opts)?;
    let lock = lock(&path).await?;
    let now = jiff::Timestamp::now().as_second();
    let cached = load(&path).unwrap_or_default();
    if !cached.id_token.is_empty() && cached.expires_at - FRESH_FOR > now {
        return Ok(Opened::Fresh(exec_credential(&cached.id_token, cached.expires_at)));
    }
    Ok(Opened::Stale(path, lock, cached))
}

/// Runs the plugin: the `ExecCredential` to print.
pub async fn login(opts: &LoginOptions) -> Result<String, LoginError> {
    if let Some(credential) = machine::MachineCredential::of(opts) {
        return machine::login(opts, &credential).await;
    }
    let (path, _lock, cached) = match open_cache(opts).await? {
        Opened::Fresh(credential) => return Ok(credential),
        Opened::Stale(path, lock, cached) => (path, lock, cached),
    };
    let now = jiff::Timestamp::now().as_second();
    let (http, client) = discover(opts).await?;
    // A refresh, silently, when there is a refresh token and it still works.
    if let Some(refresh) = &cached.refresh_token {
        let refreshed = client
            .exchange_refresh_token(&RefreshToken::new(refresh.clone()))
            .map_err(|e| fail("the issuer has no token endpoint")(&e))?
            .request_async(&http)
            .await;
        if let Ok(tokens) = refreshed
            && let Some(id_token) = tokens.id_token()
        {
            let next = Cached {
                id_token: id_token.to_string(),
                expires_at: expiry(&id_token.to_string()).unwrap_or(now),
                refresh_token: tokens
                    .refresh_token()
                    .map(|r| r.secret().clone())
                    .or(cached.refresh_token.clone()),
            };
            save(&path, &next)?;
            return Ok(exec_credential(&next.id_token, next.expires_at));
        }
    }
    let (id_token, refresh_token) = if opts.device {
        sign_in_on_a_device(&client, &http, &opts.issuer, scopes(opts, true)).await?
    } else {
        sign_in_with_a_browser(
            client,
            &http,
            scopes(opts, false),
            opts.no_browser,
            opts.account.as_deref(),
        )
        .await?
    };
    check_account(opts, &id_token)?;
    let next = Cached {
        expires_at: expiry(&id_token).ok_or_else(|| LoginError("the ID token has no expiry".into()))?,
        id_token,
        refresh_token,
    };
    save(&path, &next)?;
    Ok(exec_credential(&next.id_token, next.expires_at))
}

/// The HTTP client for the issuer (trusting `--certificate-authority` too) and the OpenID
/// client from its discovery document.
async fn discover(opts: &LoginOptions) -> Result<(Outbound, Discovered), LoginError> {
    let ca = match &opts.certificate_authority {
        Some(file) => Some(std::fs::read(file).map_err(|e| fail(&format!("cannot read {}", file.display()))(&e))?),
        None => None,
    };
    let http = Outbound::new(ca.as_deref(), Reach::Anywhere, Default::default()).map_err(|e| fail("TLS")(&e))?;
    let issuer = IssuerUrl::new(opts.issuer.clone()).map_err(|e| fail("--issuer")(&e))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.map_err(|e| {
        LoginError(format!(
            "cannot read the discovery document of {}: {}",
            opts.issuer,
            why(&e)
        ))
    })?;
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new(opts.client_id.clone()), None)
        .set_auth_type(openidconnect::AuthType::RequestBody);
    Ok((http, client))
}

/// `kauth login logout`: revokes the cached refresh token at the issuer (RFC 7009: its whole
/// family ends) and drops the cache file; what it did, for standard error. The ID token cannot
/// be recalled: it expires on its own (kube-apiserver accepts it until then).
pub async fn logout(opts: &LoginOptions) -> Result<String, LoginError> {
    let path = cache_file(opts)?;
    let _lock = lock(&path).await?;
    let Some(cached) = load(&path) else {
        return Ok("kauth login: not signed in (no cached tokens)".into());
    };
    let revoked = match &cached.refresh_token {
        Some(refresh) => {
            let (http, _) = discover(opts).await?;
            revoke(&http, opts, refresh).await?;
            " and its refresh token revoked"
        }
        None => "",
    };
    std::fs::remove_file(&path).map_err(|e| fail("cannot remove the token cache")(&e))?;
    Ok(format!("kauth login: signed out: cached tokens removed{revoked}"))
}

/// RFC 7009 at the issuer's revocation endpoint (`{issuer}/revoke`, as discovery names it), as
/// the public client it is (`client_id` in the body).
async fn revoke(http: &Outbound, opts: &LoginOptions, refresh_token: &str) -> Result<(), LoginError> {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", refresh_token)
        .append_pair("token_type_hint", "refresh_token")
        .append_pair("client_id", &opts.client_id)
        .finish();
    let request = http::Request::post(format!("{}/revoke", opts.issuer.trim_end_matches('/')))
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.into_bytes())
        .map_err(|e| fail("revocation request")(&e))?;
    let response = http
        .send("login_revoke", request)
        .await
        .map_err(|e| fail("cannot reach the issuer to revoke")(&e))?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(LoginError(format!(
            "the issuer refused to revoke the refresh token (HTTP {status}); the cache is kept"
        ))),
    }
}

/// The scopes to ask for, each once: `openid` (the OpenID flow of the browser sign-in adds it
/// itself), profile, email, groups, offline_access and the `--scope`s.
fn scopes(opts: &LoginOptions, with_openid: bool) -> Vec<Scope> {
    let mut names: Vec<&str> = Vec::new();
    let wanted = ["openid", "profile", "email", "groups", "offline_access"]
        .into_iter()
        .chain(opts.scopes.iter().map(String::as_str));
    for name in wanted {
        if (name != "openid" || with_openid) && !names.contains(&name) {
            names.push(name);
        }
    }
    names.into_iter().map(|s| Scope::new(s.to_string())).collect()
}

/// Why a request to the issuer failed, in words a person can act on: an untrusted certificate
/// (name the CA with --certificate-authority), nothing listening, or the error's own chain.
fn why(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return "nothing answers there (connection refused): is kauth running at that address?".into();
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>()
            && matches!(tls, rustls::Error::InvalidCertificate(_))
        {
            return format!(
                "its TLS certificate is not trusted ({tls}): pass --certificate-authority with the CA certificate that signed it"
            );
        }
        chain.push(e.to_string());
        next = e.source();
    }
    let text = chain.join(": ");
    if text.contains("invalid peer certificate") {
        return format!(
            "its TLS certificate is not trusted ({text}): pass --certificate-authority with the CA certificate that signed it"
        );
    }
    text
}

/// The device grant: the code and URL on standard error, then polls until the person is done.
async fn sign_in_on_a_device(
    client: &Discovered,
    http: &Outbound,
    issuer: &str,
    scopes: Vec<Scope>,
) -> Result<(String, Option<String>), LoginError> {
    // kauth's device endpoint (discovery names it; the core metadata type has no field for it).
    let url =
        DeviceAuthorizationUrl::new(format!("{issuer}/device_authorization")).map_err(|e| fail("--issuer")(&e))?;
    let client = client.clone().set_device_authorization_url(url);
    let details: openidconnect::core::CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes)
        .request_async(http)
        .await
        .map_err(|e| fail("the device grant was refused")(&e))?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        details.verification_uri().as_str(),
        details.user_code().secret()
    );
    let tokens = client
        .exchange_device_access_token(&details)
        .map_err(|e| fail("the issuer has no token endpoint")(&e))?
        .request_async(http, tokio::time::sleep, None)
        .await
        .map_err(|e| fail("sign-in did not complete")(&e))?;
    let id_token = tokens
        .extra_fields()
        .id_token()
        .ok_or_else(|| LoginError("the issuer sent no ID token (is openid granted?)".into()))?;
    Ok((id_token.to_string(), tokens.refresh_token().map(|r| r.secret().clone())))
}

/// Authorization code with PKCE: the browser comes back to a loopback port kauth login
/// listens on for this one answer.
async fn sign_in_with_a_browser(
    client: Discovered,
    http: &Outbound,
    scopes: Vec<Scope>,
    no_browser: bool,
    account: Option<&str>,
) -> Result<(String, Option<String>), LoginError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail("cannot listen on a loopback port")(&e))?;
    let port = listener.local_addr().map_err(|e| fail("loopback port")(&e))?.port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback")).expect("a valid URL");
    let client = client.set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scopes(scopes)
        .set_pkce_challenge(challenge);
    if let Some(account) = account {
        // Whoever this browser is signed in as does not answer for the account: ask afresh.
        request = request
            .add_extra_param("login_hint", account)
            .add_extra_param("prompt", "login");
    }
    let (url, state, nonce) = request.url();
    eprintln!("To sign in, open {url}");
    if !no_browser {
        open_browser(url.as_str());
    }
    let code = tokio::time::timeout(BROWSER_WAIT, one_callback(listener, state.secret().clone()))
        .await
        .map_err(|_| LoginError("no sign-in within 5 minutes".into()))??;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| fail("the issuer has no token endpoint")(&e))?
        .set_pkce_verifier(verifier)
        .request_async(http)
        .await
        .map_err(|e| fail("the code was refused")(&e))?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| LoginError("the issuer sent no ID token".into()))?;
    // The nonce proves the token answers this sign-in; the signature is kube-apiserver's to
    // check, but a token for another sign-in is refused here already.
    let verifier = client.id_token_verifier();
    id_token
        .claims(&verifier, &nonce)
        .map_err(|e| fail("the ID token does not answer this sign-in")(&e))?;
    Ok((id_token.to_string(), tokens.refresh_token().map(|r| r.secret().clone())))
}

/// Opens `url` in the system browser, if there is one; the URL is printed either way.
fn open_browser(url: &str) {
    for opener in ["xdg-open", "open"] {
        if std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
}

/// Serves the loopback port until the browser brings the answer: the code, once `state`
/// matches.
async fn one_callback(listener: tokio::net::TcpListener, state: String) -> Result<String, LoginError> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, LoginError>>(1);
    loop {
        tokio::select! {
            answer = rx.recv() => return answer.unwrap_or_else(|| Err(LoginError("the callback listener stopped".into()))),
            accepted = listener.accept() => {
                let Ok((stream, _)): Result<(tokio::net::TcpStream, SocketAddr), _> = accepted else { continue };
                let (tx, state) = (tx.clone(), state.clone());
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (tx, state) = (tx.clone(), state.clone());
                    async move {
                        let query = request.uri().query().unwrap_or("").to_string();
                        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
                        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        let (status, text, answer) = match (get("code"), get("state"), get("error")) {
                            _ if request.uri().path() != "/callback" => (404, "Not here.", None),
                            (_, Some(s), _) if s != state => (400, "This answer is for another sign-in.", None),
                            (Some(code), Some(_), None) => (200, "Signed in. You can close this window and return to the terminal.", Some(Ok(code))),
                            (_, _, Some(error)) => (400, "Sign-in failed; see the terminal.", Some(Err(LoginError(format!("sign-in failed: {error} {}", get("error_description").unwrap_or_default()))))),
                            _ => (400, "No code in this answer.", None),
                        };
                        if let Some(answer) = answer {
                            let _ = tx.send(answer).await;
                        }
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; charset=utf-8")
                            .body(Full::new(Bytes::from(text)))
                            .expect("a valid response");
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_credential_and_kubeconfig_entry() {
        let cred: serde_json::Value = serde_json::from_str(&exec_credential("eyJ.a.b", 1_800_000_000)).unwrap();
        assert_eq!(cred["apiVersion"], "client.authentication.k8s.io/v1");
        assert_eq!(cred["kind"], "ExecCredential");
        assert_eq!(cred["status"]["token"], "eyJ.a.b");
        assert_eq!(cred["status"]["expirationTimestamp"], "2027-01-15T08:00:00Z");
        let opts = LoginOptions {
            issuer: "https://auth.example.com".into(),
            client_id: "kauth.kubectl".into(),
            certificate_authority: Some("/etc/kauth/ca.crt".into()),
            device: false,
            no_browser: false,
            scopes: vec![],
            cache_dir: None,
            account: Some("alice-admin".into()),
            client_secret_file: None,
            service_account_token_file: None,
        };
        let entry = setup(&opts, "alice");
        assert!(entry.contains("kind: Config"), "a kubeconfig of its own: {entry}");
        let url_scopes = scopes(&opts, false);
        assert!(
            !url_scopes.iter().any(|s| s.as_str() == "openid"),
            "the OpenID flow adds it once"
        );
        assert_eq!(scopes(&opts, true)[0].as_str(), "openid");
        let parsed: serde_json::Value = serde_saphyr::from_str(&entry).unwrap();
        let exec = &parsed["users"][0]["user"]["exec"];
        assert_eq!(exec["command"], "kauth");
        assert_eq!(exec["args"][1], "--issuer=https://auth.example.com");
        assert_eq!(exec["args"][3], "--certificate-authority=/etc/kauth/ca.crt");
        assert_eq!(exec["args"][4], "--account=alice-admin");
        // Another account, another scope: another cache file; the scopes' order does not matter.
        let path = cache_file(&opts).unwrap();
        let bob = LoginOptions {
            account: Some("bob".into()),
            ..opts.clone()
        };
        assert_ne!(cache_file(&bob).unwrap(), path);
        let more = LoginOptions {
            scopes: vec!["b".into(), "a".into()],
            ..opts.clone()
        };
        let same = LoginOptions {
            scopes: vec!["a".into(), "b".into(), "a".into()],
            ..opts.clone()
        };
        assert_ne!(cache_file(&more).unwrap(), path);
        assert_eq!(cache_file(&more).unwrap(), cache_file(&same).unwrap());
        assert!(exec["interactiveMode"] == "IfAvailable", "{entry}");

        // CI: the client's own credential, never interactive, and a cache file apart.
        let ci = LoginOptions {
            client_id: "ci.deployer".into(),
            account: None,
            client_secret_file: Some("/var/run/secrets/ci/CLIENT_SECRET".into()),
            scopes: vec!["kubernetes".into()],
            ..opts.clone()
        };
        let entry: serde_json::Value = serde_saphyr::from_str(&setup(&ci, "ci")).unwrap();
        let exec = &entry["users"][0]["user"]["exec"];
        assert_eq!(exec["interactiveMode"], "Never");
        let args: Vec<&str> = exec["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--client-secret-file=/var/run/secrets/ci/CLIENT_SECRET"),
            "{args:?}"
        );
        assert!(args.contains(&"--scope=kubernetes"), "{args:?}");
        let person = LoginOptions {
            client_secret_file: None,
            ..ci.clone()
        };
        assert_ne!(cache_file(&ci).unwrap(), cache_file(&person).unwrap());
    }
}
