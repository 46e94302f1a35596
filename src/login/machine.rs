//! `kauth login` without a person (CI): the OAuthClient `--client-id` authenticates with its
//! client secret (client credentials, RFC 6749 §4.4) or with a ServiceAccount token exchanged
//! for its token (RFC 8693), and the access token for the `--scope`s is the credential kubectl
//! presents. kube-apiserver accepts it when its audience is the apiserver's (the platform's
//! Scope naming `kauth.kubectl` as its audience, granted to the CI's namespace); the user it
//! sees is `<prefix>client:<client id>`, never a person. Cached like a person's token (the
//! same file, lock and freshness), without a refresh token: a new one is asked for each time.

use std::path::{Path, PathBuf};

use super::{Cached, LoginError, LoginOptions, Opened, exec_credential, expiry, fail, open_cache, save};
use crate::outbound::{Outbound, Reach};
use crate::workload_identity::{ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};

/// How a client proves itself without a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineCredential {
    /// Its client secret, in this file.
    ClientSecret(PathBuf),
    /// A token of its ServiceAccount, in this file (read anew each time: projected tokens
    /// rotate).
    ServiceAccountToken(PathBuf),
}

impl MachineCredential {
    /// The credential `opts` name, if any (then no person signs in).
    pub fn of(opts: &LoginOptions) -> Option<Self> {
        match (&opts.client_secret_file, &opts.service_account_token_file) {
            (Some(file), _) => Some(Self::ClientSecret(file.clone())),
            (None, Some(file)) => Some(Self::ServiceAccountToken(file.clone())),
            (None, None) => None,
        }
    }
}

/// Runs the plugin for a client: the `ExecCredential` to print.
pub async fn login(opts: &LoginOptions, credential: &MachineCredential) -> Result<String, LoginError> {
    let path = match open_cache(opts).await? {
        Opened::Fresh(credential) => return Ok(credential),
        Opened::Stale(path, _lock, _) => path,
    };
    let (http, token_endpoint) = token_endpoint(opts).await?;
    let token = request_token(&http, &token_endpoint, opts, credential).await?;
    let next = Cached {
        expires_at: expiry(&token).ok_or_else(|| LoginError("the access token has no expiry".into()))?,
        id_token: token,
        refresh_token: None,
    };
    save(&path, &next)?;
    Ok(exec_credential(&next.id_token, next.expires_at))
}

/// The issuer's token endpoint, from its discovery document.
async fn token_endpoint(opts: &LoginOptions) -> Result<(Outbound, String), LoginError> {
    let ca = match &opts.certificate_authority {
        Some(file) => Some(read(file)?),
        None => None,
    };
    let http = Outbound::new(ca.as_deref(), Reach::Anywhere, Default::default()).map_err(|e| fail("TLS")(&e))?;
    let url = format!("{}/.well-known/openid-configuration", opts.issuer.trim_end_matches('/'));
    let (status, document) = get_json(&http, http::Request::get(&url).body(Vec::new())).await?;
    let endpoint = document["token_endpoint"].as_str().filter(|_| status.is_success());
    let endpoint = endpoint.ok_or_else(|| {
        LoginError(format!(
            "cannot read the discovery document of {} (HTTP {status})",
            opts.issuer
        ))
    })?;
    Ok((http, endpoint.to_string()))
}

fn read(file: &Path) -> Result<Vec<u8>, LoginError> {
    std::fs::read(file).map_err(|e| fail(&format!("cannot read {}", file.display()))(&e))
}

/// Asks the token endpoint for the client's access token.
async fn request_token(
    http: &Outbound,
    endpoint: &str,
    opts: &LoginOptions,
    credential: &MachineCredential,
) -> Result<String, LoginError> {
    let scope = opts.scopes.join(" ");
    let mut form = form_urlencoded::Serializer::new(String::new());
    let request = http::Request::post(endpoint).header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let request = match credential {
        MachineCredential::ClientSecret(file) => {
            let secret =
                String::from_utf8(read(file)?).map_err(|_| LoginError("the client secret is not text".into()))?;
            form.append_pair("grant_type", "client_credentials");
            // RFC 6749 §2.3.1: each part form-encoded, then Basic.
            let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                encode(&opts.client_id),
                encode(secret.trim())
            ));
            request.header(http::header::AUTHORIZATION, format!("Basic {basic}"))
        }
        MachineCredential::ServiceAccountToken(file) => {
            let token = String::from_utf8(read(file)?)
                .map_err(|_| LoginError("the ServiceAccount token is not text".into()))?;
            form.append_pair("grant_type", TOKEN_EXCHANGE_GRANT)
                .append_pair("client_id", &opts.client_id)
                .append_pair("subject_token", token.trim())
                .append_pair("subject_token_type", JWT_TOKEN_TYPE)
                .append_pair("requested_token_type", ACCESS_TOKEN_TYPE);
            request
        }
    };
    if !scope.is_empty() {
        form.append_pair("scope", &scope);
    }
    let (status, body) = get_json(http, request.body(form.finish().into_bytes())).await?;
    match body["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_string()),
        _ => Err(LoginError(format!(
            "the issuer refused a token for {} (HTTP {status}): {} {}",
            opts.client_id,
            body["error"].as_str().unwrap_or("no error code"),
            body["error_description"].as_str().unwrap_or("")
        ))),
    }
}

async fn get_json(
    http: &Outbound,
    request: Result<http::Request<Vec<u8>>, http::Error>,
) -> Result<(http::StatusCode, serde_json::Value), LoginError> {
    let request = request.map_err(|e| fail("request")(&e))?;
    let response = http
        .send("login", request)
        .await
        .map_err(|e| LoginError(format!("cannot reach the issuer: {}", super::why(&e))))?;
    let status = response.status();
    Ok((status, serde_json::from_slice(response.body()).unwrap_or_default()))
}
