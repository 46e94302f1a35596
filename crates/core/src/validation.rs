//! Field-by-field validation of the three resources, shared by the controller and standalone
//! mode. The CRD's CEL rules catch some of this early on new clusters; this is the authority.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client_keys::ClientKeys;
use crate::crd::{
    ClientType, ExistingSecret, GrantType, KeyAlgorithm, OAuthClientSpec, ScopeSpec, SecretDeletionPolicy,
    SigningKeySpec, TokenEndpointAuthMethod,
};
use crate::credentials::RetirePrevious;
pub use crate::credentials::RotationPolicy;
pub use crate::fields::{FieldError, MAX_TOKEN_LIFETIME, describe, is_dns_label, parse_duration};
use crate::secret_contents::{SecretContents, is_secret_key};

/// OpenID Connect scope values kauth reserves for sign-in; no Scope resource may claim them.
pub const RESERVED_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "groups",
    "address",
    "phone",
    "offline_access",
];

/// An OAuthClient's settings after validation, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSettings {
    /// Explicit client id override, if any.
    pub client_id_override: Option<String>,
    /// Registered authentication method.
    pub auth_method: TokenEndpointAuthMethod,
    /// Lifetime of access tokens.
    pub access_token_lifetime: Duration,
    /// Where the secret comes from.
    pub secret: CredentialSource,
    /// Confidential or public.
    pub client_type: ClientType,
    /// Registered redirect URIs, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs, compared exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// Algorithm of its ID tokens.
    pub id_token_alg: KeyAlgorithm,
    /// How long an unused refresh token stays valid.
    pub refresh_token_lifetime: Duration,
    /// Its authorization requests must be pushed first (RFC 9126).
    pub require_par: bool,
    /// Its tokens must be DPoP-bound (RFC 9449).
    pub require_dpop: bool,
    /// The `acr` its sign-ins must reach (`spec.requiredAcr`).
    pub required_acr: Option<&'static str>,
    /// Held to the FAPI 2.0 Security Profile (`spec.profile: FAPI2`).
    pub fapi2: bool,
    /// Pushes only signed request objects (RFC 9101).
    pub require_signed_request_object: bool,
    /// Where logout tokens go (OIDC Back-Channel Logout).
    pub backchannel_logout_uri: Option<String>,
}

/// How a client proves who it is.
#[derive(Clone, Debug, PartialEq)]
pub enum CredentialSource {
    /// A secret kauth generates and writes into the named Secret.
    Generated(GeneratedSecret),
    /// A secret in a Secret the user manages; kauth reads `key`.
    Existing(ExistingSecret),
    /// The projected token of this ServiceAccount (in the client's namespace); no secret.
    ServiceAccount(String),
    /// A public client: nothing to prove (PKCE protects its codes).
    Public,
    /// `private_key_jwt`: assertions signed with one of the client's keys; no secret.
    Keys(ClientKeys),
}

/// A client secret kauth generates: the Secret it writes, its layout, rotation and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedSecret {
    /// The Secret's name.
    pub name: String,
    /// What it holds.
    pub contents: Box<SecretContents>,
    /// When the secret rotates.
    pub rotation: RotationPolicy,
    /// Its labels, annotations and deletion policy.
    pub metadata: SecretMetadata,
}

/// What the adapters (the controller, standalone) do about a client's credential: generate a
/// Secret, read the team's Secret, or nothing, the client proving itself otherwise. They ask
/// only this, so a new kind of credential (a key the client holds) adds a variant above and
/// an answer here, not a case in every adapter.
#[derive(Clone, Copy, Debug)]
pub enum SecretHandling<'a> {
    /// kauth generates the secret and writes it into a Secret.
    Generate(&'a GeneratedSecret),
    /// kauth reads the secret from the team's Secret.
    Read(&'a ExistingSecret),
    /// No Secret: how the client proves who it is instead.
    None(NoSecret<'a>),
}

/// How a client without a Secret proves who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSecret<'a> {
    /// The projected token of this ServiceAccount: verified against a cluster's issuer.
    ServiceAccount(&'a str),
    /// Nothing: a public client (PKCE protects its codes).
    Public,
    /// Assertions signed with the client's own keys (`private_key_jwt`).
    Keys(&'a ClientKeys),
}

impl NoSecret<'_> {
    /// The reason of the client's SecretReady condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceAccount(_) => "ServiceAccount",
            Self::Public => "PublicClient",
            Self::Keys(_) => "PrivateKeyJwt",
        }
    }

    /// What the client proves instead of a secret, in a sentence.
    pub fn describe(&self) -> String {
        match self {
            Self::ServiceAccount(sa) => {
                format!("no Secret: the client authenticates with projected tokens of ServiceAccount {sa}")
            }
            Self::Public => "no Secret: a public client has no credential (PKCE protects its codes)".into(),
            Self::Keys(ClientKeys::Inline(keys)) => format!(
                "no Secret: the client authenticates with private_key_jwt assertions signed by one of its {} keys (spec.jwks)",
                keys.len()
            ),
            Self::Keys(ClientKeys::Uri(uri)) => {
                format!(
                    "no Secret: the client authenticates with private_key_jwt assertions signed by a key published at {uri}"
                )
            }
        }
    }

    /// True when only a cluster can check it (its issuer verifies ServiceAccount tokens).
    pub fn needs_cluster(&self) -> bool {
        matches!(self, Self::ServiceAccount(_))
    }
}

impl CredentialSource {
    /// What the adapters do about it (see [`SecretHandling`]).
    pub fn secret_handling(&self) -> SecretHandling<'_> {
        match self {
            Self::Generated(generated) => SecretHandling::Generate(generated),
            Self::Existing(existing) => SecretHandling::Read(existing),
            Self::ServiceAccount(sa) => SecretHandling::None(NoSecret::ServiceAccount(sa)),
            Self::Public => SecretHandling::None(NoSecret::Public),
            Self::Keys(keys) => SecretHandling::None(NoSecret::Keys(keys)),
        }
    }

    /// Name of the Secret in the client's namespace, if the client has one.
    pub fn secret_name(&self) -> Option<&str> {
        match self.secret_handling() {
            SecretHandling::Generate(g) => Some(&g.name),
            SecretHandling::Read(e) => Some(&e.name),
            SecretHandling::None(_) => None,
        }
    }
}

/// What the generated Secret carries besides its data, and whether it outlives its client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretMetadata {
    /// The team's labels (kauth's own are added to them).
    pub labels: BTreeMap<String, String>,
    /// The team's annotations (kauth's own are added to them).
    pub annotations: BTreeMap<String, String>,
    /// `Orphan`: the Secret has no owner reference and stays when the client goes.
    pub deletion: SecretDeletionPolicy,
}

/// Default overlap in which a rotated-out secret still works.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// Default quiet period after which an unused previous secret is retired (`whenUnused`).
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(3600);
/// Default access token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Default idle lifetime of a refresh token.
pub const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// True when `url` names this machine: `localhost`, 127.0.0.1 or ::1 (where plain http is
/// allowed for development).
fn is_loopback_host(url: &url::Url) -> bool {
    matches!(
        url.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    )
}

/// Why `uri` cannot be a registered redirect URI, if it cannot. RFC 8252 and the OAuth 2.0
/// Security BCP: absolute, no fragment, no user info; https, http only to a loopback host, or
/// (public native apps) a private-use scheme in reverse-domain form.
pub fn redirect_uri_problem(uri: &str, public: bool) -> Option<String> {
    let parsed = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(e) => return Some(format!("'{uri}' is not an absolute URI ({e})")),
    };
    if parsed.as_str() != uri && format!("{uri}/") != parsed.as_str() {
        return Some(format!("'{uri}' is not in normal form (write it as '{parsed}')"));
    }
    if parsed.fragment().is_some() {
        return Some(format!("'{uri}' has a fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some(format!("'{uri}' carries user info"));
    }
    let loopback = is_loopback_host(&parsed);
    match parsed.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some(format!("'{uri}' uses http to a host other than loopback: use https")),
        scheme if public && scheme.contains('.') => None,
        scheme => Some(format!(
            "'{uri}': scheme '{scheme}' is not https (native apps: a reverse-domain scheme such as com.example.app:/cb)"
        )),
    }
}

fn duration_in(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
    default: Duration,
    min: Duration,
    max: Option<Duration>,
) -> Duration {
    let Some(raw) = value else { return default };
    match parse_duration(raw) {
        Ok(d) if d < min => {
            errors.push(FieldError::new(
                field,
                format!("'{raw}' is shorter than {}", humantime::format_duration(min)),
            ));
            default
        }
        Ok(d) if max.is_some_and(|m| d > m) => {
            let max = max.unwrap_or_default();
            errors.push(FieldError::new(
                field,
                format!("'{raw}' is longer than {}", humantime::format_duration(max)),
            ));
            default
        }
        Ok(d) => d,
        Err(e) => {
            errors.push(FieldError::new(field, e));
            default
        }
    }
}

/// RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E, at least one.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// RFC 8707 resource indicator: an absolute URI without a fragment.
pub fn is_resource_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.contains('#')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether `audience` is the client id of a client in `namespace` (`<namespace>.<name>`): the
/// one audience besides a URI a Scope may name. It lets a platform give tokens whose `aud` is
/// its own client's id (the apiserver's OIDC client, `kauth.kubectl`) to the namespaces it
/// chooses, and no team can name another namespace's client: a token for that audience would
/// pass for an ID token of that client.
pub fn is_client_of(namespace: &str, audience: &str) -> bool {
    audience
        .split_once('.')
        .is_some_and(|(ns, name)| ns == namespace && is_dns_label(name))
}

/// Whether a Scope's audience (valid) is an OpenID client's id rather than an API's URI: a
/// token for it passes for that client's ID token (kube-apiserver reads it so), so kauth issues
/// one only to a client for itself, and with no other audience beside it.
pub fn is_client_audience(audience: &str) -> bool {
    !is_resource_uri(audience)
}

/// Kubernetes DNS-1123 subdomain (Secret and most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Characters allowed in an explicit client id: unreserved URI characters except '.', so the id
/// needs no escaping in HTTP Basic or URLs and never collides with a default `<ns>.<name>` id.
pub fn is_client_id_override(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_~-".contains(&b))
}

/// True for a Kubernetes label or annotation key: `[prefix/]name`, the prefix a DNS
/// subdomain, the name 1-63 alphanumerics, `-`, `_` or `.` between alphanumerics.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_dns_subdomain(p)) && is_label_value(name) && !name.is_empty()
}

/// True for a label value: empty, or up to 63 alphanumerics, `-`, `_` or `.` between alphanumerics.
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Label and annotation keys kauth sets itself; a team's value would change what kauth trusts.
fn is_kauth_key(key: &str) -> bool {
    key.starts_with("kauth.dev/") || key == "app.kubernetes.io/managed-by"
}

fn secret_metadata(secret: &crate::crd::SecretSpec, errors: &mut Vec<FieldError>) -> SecretMetadata {
    let labels = secret.labels.clone().unwrap_or_default();
    let annotations = secret.annotations.clone().unwrap_or_default();
    for (key, value) in &labels {
        let field = format!("spec.secret.labels.{key}");
        if !is_qualified_name(key) {
            errors.push(FieldError::new(field, "not a valid label key"));
        } else if is_kauth_key(key) {
            errors.push(FieldError::new(field, "kauth sets this label itself"));
        } else if !is_label_value(value) {
            errors.push(FieldError::new(field, format!("'{value}' is not a valid label value")));
        }
    }
    let mut size = 0;
    for (key, value) in &annotations {
        let field = format!("spec.secret.annotations.{key}");
        size += key.len() + value.len();
        if !is_qualified_name(key) {
            errors.push(FieldError::new(field, "not a valid annotation key"));
        } else if is_kauth_key(key) {
            errors.push(FieldError::new(field, "kauth sets this annotation itself"));
        }
    }
    // The apiserver's limit is 256 KiB for all annotations; kauth's own need room too.
    if size > 128 * 1024 {
        errors.push(FieldError::new("spec.secret.annotations", "more than 128 KiB in all"));
    }
    SecretMetadata {
        labels,
        annotations,
        deletion: secret.deletion_policy.unwrap_or_default(),
    }
}

/// Validates an OAuthClient spec; `name` is the resource name (for the default Secret name).
pub fn validate_client(name: &str, spec: &OAuthClientSpec) -> Result<ClientSettings, Vec<FieldError>> {
    // Limits first: nothing else looks at an object that breaks them (T9).
    let mut errors = crate::schema_bounds::check_spec("OAuthClient", spec);
    if !errors.is_empty() {
        return Err(errors);
    }
    check_requested(spec, &mut errors);
    let access_token_lifetime = duration_in(
        &mut errors,
        "spec.accessTokenLifetime",
        spec.access_token_lifetime.as_deref(),
        DEFAULT_TOKEN_LIFETIME,
        Duration::from_secs(60),
        Some(Duration::from_secs(24 * 3600)),
    );
    let public = spec.client_type == ClientType::Public;
    let auth_method = spec.token_endpoint_auth_method.unwrap_or(if public {
        TokenEndpointAuthMethod::None
    } else if spec.jwks.is_some() || spec.jwks_uri.is_some() {
        TokenEndpointAuthMethod::PrivateKeyJwt
    } else {
        TokenEndpointAuthMethod::ClientSecretBasic
    });
    if auth_method == TokenEndpointAuthMethod::PrivateKeyJwt && spec.jwks.is_none() && spec.jwks_uri.is_none() {
        errors.push(FieldError::new(
            "spec.tokenEndpointAuthMethod",
            "private_key_jwt needs the client's keys: set spec.jwks or spec.jwksUri",
        ));
    }
    let refresh_token_lifetime = duration_in(
        &mut errors,
        "spec.refreshTokenLifetime",
        spec.refresh_token_lifetime.as_deref(),
        DEFAULT_REFRESH_LIFETIME,
        Duration::from_secs(3600),
        Some(Duration::from_secs(90 * 24 * 3600)),
    );
    check_sign_in(spec, public, auth_method, &mut errors);
    if let Some(uri) = &spec.backchannel_logout_uri {
        if let Some(problem) = https_uri_problem(uri) {
            errors.push(FieldError::new("spec.backchannelLogoutUri", problem));
        }
        if !spec.grant_types.contains(&GrantType::AuthorizationCode) {
            errors.push(FieldError::new(
                "spec.backchannelLogoutUri",
                "applies only to clients that sign people in (authorization_code)",
            ));
        }
    }
    let fapi2 = spec.profile == Some(crate::crd::ClientProfile::FAPI2);
    if spec.require_signed_request_object && spec.jwks.is_none() && spec.jwks_uri.is_none() {
        errors.push(FieldError::new(
            "spec.requireSignedRequestObject",
            "request objects are signed with the client's keys: set spec.jwks or spec.jwksUri",
        ));
    }
    if fapi2 {
        check_fapi2(spec, public, auth_method, &mut errors);
    }
    if spec.require_pushed_authorization_requests && !spec.grant_types.contains(&GrantType::AuthorizationCode) {
        errors.push(FieldError::new(
            "spec.requirePushedAuthorizationRequests",
            "applies only to clients with the authorization_code grant",
        ));
    }
    check_token_exchange(spec, &mut errors);
    let secret = credential_source(name, spec, public, &mut errors);
    match secret {
        Some(secret) if errors.is_empty() => Ok(ClientSettings {
            client_id_override: spec.client_id.clone(),
            auth_method,
            access_token_lifetime,
            secret,
            client_type: spec.client_type,
            redirect_uris: spec.redirect_uris.clone(),
            post_logout_redirect_uris: spec.post_logout_redirect_uris.clone(),
            id_token_alg: spec.id_token_signing_alg.unwrap_or(if fapi2 {
                KeyAlgorithm::ES256
            } else {
                KeyAlgorithm::RS256
            }),
            refresh_token_lifetime,
            require_par: spec.require_pushed_authorization_requests || fapi2,
            require_dpop: spec.dpop == Some(crate::crd::DpopPolicy::Required) || fapi2,
            required_acr: spec.required_acr.map(|a| a.as_str()),
            fapi2,
            require_signed_request_object: spec.require_signed_request_object,
            backchannel_logout_uri: spec.backchannel_logout_uri.clone(),
        }),
        _ => Err(errors),
    }
}

/// The rules for what the client asks for: its id, grants, scopes and audiences.
fn check_requested(spec: &OAuthClientSpec, errors: &mut Vec<FieldError>) {
    if let Some(id) = &spec.client_id
        && !is_client_id_override(id)
    {
        errors.push(FieldError::new(
            "spec.clientId",
            format!("'{id}' may only contain letters, digits, '_', '~' and '-' (1 to 128 characters)"),
        ));
    }
    if spec.grant_types.is_empty() {
        errors.push(FieldError::new(
            "spec.grantTypes",
            "at least one grant type is required",
        ));
    }
    for (i, scope) in spec.scopes.iter().enumerate() {
        let field = format!("spec.scopes[{i}]");
        if !is_scope_token(scope) {
            errors.push(FieldError::new(
                field,
                format!("'{scope}' is not an RFC 6749 scope-token"),
            ));
        } else if spec.scopes[..i].contains(scope) {
            errors.push(FieldError::new(field, format!("'{scope}' is listed twice")));
        }
    }
    for (i, aud) in spec.audiences.iter().enumerate() {
        if !is_resource_uri(aud) {
            errors.push(FieldError::new(
                format!("spec.audiences[{i}]"),
                format!("'{aud}' is not an absolute URI without a fragment (RFC 8707)"),
            ));
        }
    }
}

/// Token exchange takes the client's ServiceAccount token as the subject token.
fn check_token_exchange(spec: &OAuthClientSpec, errors: &mut Vec<FieldError>) {
    let grants_exchange = spec.grant_types.contains(&GrantType::TokenExchange);
    if grants_exchange && spec.service_account.is_none() {
        errors.push(FieldError::new(
            "spec.grantTypes",
            "token exchange needs spec.serviceAccount (the subject token is its token)",
        ));
    }
}

/// Where the client's credential comes from, and the rules for each source.
fn credential_source(
    name: &str,
    spec: &OAuthClientSpec,
    public: bool,
    errors: &mut Vec<FieldError>,
) -> Option<CredentialSource> {
    match (&spec.secret, &spec.existing_secret) {
        _ if public => {
            if spec.secret.is_some() || spec.existing_secret.is_some() || spec.service_account.is_some() {
                errors.push(FieldError::new(
                    "spec.clientType",
                    "a public client has no secret: remove spec.secret, spec.existingSecret and spec.serviceAccount",
                ));
            }
            Some(CredentialSource::Public)
        }
        _ if spec.jwks.is_some() || spec.jwks_uri.is_some() => client_keys(spec, errors).map(CredentialSource::Keys),
        _ if spec.service_account.is_some() => {
            let sa = spec.service_account.clone().unwrap_or_default();
            if !is_dns_subdomain(&sa) {
                errors.push(FieldError::new(
                    "spec.serviceAccount",
                    format!("'{sa}' is not a ServiceAccount name"),
                ));
            }
            if spec.secret.is_some() || spec.existing_secret.is_some() {
                errors.push(FieldError::new(
                    "spec.serviceAccount",
                    "a client with a ServiceAccount has no secret: remove spec.secret and spec.existingSecret",
                ));
            }
            Some(CredentialSource::ServiceAccount(sa))
        }
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "spec.existingSecret",
                "cannot be set together with spec.secret",
            ));
            None
        }
        (_, Some(existing)) => {
            if !is_dns_subdomain(&existing.name) {
                errors.push(FieldError::new(
                    "spec.existingSecret.name",
                    format!("'{}' is not a valid Secret name", existing.name),
                ));
            }
            if !is_secret_key(&existing.key) {
                errors.push(FieldError::new(
                    "spec.existingSecret.key",
                    format!("'{}' is not a valid Secret key", existing.key),
                ));
            }
            Some(CredentialSource::Existing(existing.clone()))
        }
        (secret, None) => Some(generated(name, &secret.clone().unwrap_or_default(), errors)),
    }
}

/// The FAPI 2.0 Security Profile's rules a spec can break, each refusal naming its rule.
fn check_fapi2(
    spec: &OAuthClientSpec,
    public: bool,
    auth_method: TokenEndpointAuthMethod,
    errors: &mut Vec<FieldError>,
) {
    let rule = |field: &str, what: &str| FieldError::new(field, format!("spec.profile FAPI2: {what}"));
    if public {
        errors.push(rule(
            "spec.clientType",
            "no public clients (FAPI 2.0 §5.3.2.1: confidential clients only)",
        ));
    }
    if auth_method != TokenEndpointAuthMethod::PrivateKeyJwt {
        errors.push(rule(
            "spec.tokenEndpointAuthMethod",
            "clients authenticate with private_key_jwt only (FAPI 2.0 §5.3.2.1): set spec.jwks or spec.jwksUri",
        ));
    }
    if spec.dpop == Some(crate::crd::DpopPolicy::Optional) {
        errors.push(rule(
            "spec.dpop",
            "tokens are DPoP-bound (FAPI 2.0 §5.3.2.2): remove dpop: Optional",
        ));
    }
    if let Some(other) = spec.grant_types.iter().find(|g| {
        !matches!(
            g,
            GrantType::AuthorizationCode | GrantType::RefreshToken | GrantType::ClientCredentials
        )
    }) {
        errors.push(rule(
            "spec.grantTypes",
            &format!(
                "{} is outside the profile: use authorization_code, refresh_token or client_credentials (FAPI 2.0 §5.3.2.2)",
                other.as_str()
            ),
        ));
    }
    if spec.id_token_signing_alg == Some(KeyAlgorithm::RS256) {
        errors.push(rule(
            "spec.idTokenSigningAlg",
            "ID tokens are signed ES256 or EdDSA, not RS256 (FAPI 2.0 §5.4.1)",
        ));
    }
}

/// The keys of a `private_key_jwt` client: inline or at a URL, never with a secret.
fn client_keys(spec: &OAuthClientSpec, errors: &mut Vec<FieldError>) -> Option<ClientKeys> {
    if spec.secret.is_some() || spec.existing_secret.is_some() || spec.service_account.is_some() {
        errors.push(FieldError::new(
            "spec.jwks",
            "a client with keys has no secret: remove spec.secret, spec.existingSecret and spec.serviceAccount",
        ));
    }
    if spec
        .token_endpoint_auth_method
        .is_some_and(|m| m != TokenEndpointAuthMethod::PrivateKeyJwt)
    {
        errors.push(FieldError::new(
            "spec.tokenEndpointAuthMethod",
            "a client with keys authenticates with private_key_jwt",
        ));
    }
    match (&spec.jwks, &spec.jwks_uri) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new("spec.jwksUri", "cannot be set together with spec.jwks"));
            None
        }
        (Some(jwks), None) => match crate::client_keys::parse_inline(jwks) {
            Ok(keys) => Some(ClientKeys::Inline(keys)),
            Err(e) => {
                errors.push(FieldError::new("spec.jwks", e));
                None
            }
        },
        (None, Some(uri)) => match https_uri_problem(uri) {
            Some(problem) => {
                errors.push(FieldError::new("spec.jwksUri", problem));
                None
            }
            None => Some(ClientKeys::Uri(uri.clone())),
        },
        (None, None) => None,
    }
}

/// Why `uri` cannot be an address kauth calls for a client (`jwksUri`,
/// `backchannelLogoutUri`): https (http only to a loopback host, for development), no user
/// info, no fragment.
fn https_uri_problem(uri: &str) -> Option<String> {
    let parsed = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(e) => return Some(format!("'{uri}' is not an absolute URL ({e})")),
    };
    let loopback = is_loopback_host(&parsed);
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Some(format!("'{uri}' must use https")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Some(format!("'{uri}' carries user info or a fragment"));
    }
    None
}

/// A Secret kauth generates and rotates: its name, keys and rotation.
fn generated(name: &str, secret: &crate::crd::SecretSpec, errors: &mut Vec<FieldError>) -> CredentialSource {
    let secret_name = secret.name.clone().unwrap_or_else(|| format!("{name}-oauth"));
    if !is_dns_subdomain(&secret_name) {
        errors.push(FieldError::new(
            "spec.secret.name",
            format!("'{secret_name}' is not a valid Secret name"),
        ));
    }
    let contents = Box::new(SecretContents::from_spec(secret, errors));
    let metadata = secret_metadata(secret, errors);
    let rotation = secret.rotation.clone().unwrap_or_default();
    let every = rotation.every.as_deref().map(|_| {
        duration_in(
            errors,
            "spec.secret.rotation.every",
            rotation.every.as_deref(),
            Duration::ZERO,
            Duration::from_secs(3600),
            None,
        )
    });
    let overlap = duration_in(
        errors,
        "spec.secret.rotation.overlap",
        rotation.overlap.as_deref(),
        DEFAULT_SECRET_OVERLAP,
        Duration::ZERO,
        Some(Duration::from_secs(30 * 24 * 3600)),
    );
    let retire = match rotation.retire_previous.unwrap_or_default() {
        crate::crd::RetirePreviousSecret::AfterOverlap => {
            if rotation.quiet_period.is_some() {
                errors.push(FieldError::new(
                    "spec.secret.rotation.quietPeriod",
                    "only applies with retirePrevious: WhenUnused",
                ));
            }
            RetirePrevious::AfterOverlap
        }
        crate::crd::RetirePreviousSecret::WhenUnused => RetirePrevious::WhenUnused {
            quiet: duration_in(
                errors,
                "spec.secret.rotation.quietPeriod",
                rotation.quiet_period.as_deref(),
                DEFAULT_QUIET_PERIOD,
                Duration::from_secs(30),
                Some(Duration::from_secs(30 * 24 * 3600)),
            ),
        },
    };
    if let Some(every) = every
        && overlap >= every
        && every > Duration::ZERO
    {
        errors.push(FieldError::new(
            "spec.secret.rotation.overlap",
            "must be shorter than spec.secret.rotation.every",
        ));
    }
    CredentialSource::Generated(GeneratedSecret {
        name: secret_name,
        contents,
        rotation: RotationPolicy {
            trigger: rotation.trigger.clone(),
            every,
            overlap,
            retire,
        },
        metadata,
    })
}

/// The rules for people-facing clients: grants, redirect URIs and how public clients differ.
fn check_sign_in(
    spec: &OAuthClientSpec,
    public: bool,
    auth_method: TokenEndpointAuthMethod,
    errors: &mut Vec<FieldError>,
) {
    let has = |g| spec.grant_types.contains(&g);
    if public {
        if let Some(g) = spec
            .grant_types
            .iter()
            .find(|g| !g.signs_people_in() && **g != GrantType::RefreshToken)
        {
            errors.push(FieldError::new(
                "spec.grantTypes",
                format!(
                    "a public client cannot use {} (it has no credential): only authorization_code, {} and refresh_token",
                    g.as_str(),
                    GrantType::DeviceCode.as_str()
                ),
            ));
        }
        if auth_method != TokenEndpointAuthMethod::None {
            errors.push(FieldError::new(
                "spec.tokenEndpointAuthMethod",
                "a public client authenticates with none",
            ));
        }
    } else if auth_method == TokenEndpointAuthMethod::None {
        errors.push(FieldError::new(
            "spec.tokenEndpointAuthMethod",
            "none is only for public clients (spec.clientType: public)",
        ));
    }
    if has(GrantType::AuthorizationCode) && spec.redirect_uris.is_empty() {
        errors.push(FieldError::new(
            "spec.redirectUris",
            "authorization_code needs at least one redirect URI",
        ));
    }
    if !has(GrantType::AuthorizationCode) && !spec.redirect_uris.is_empty() {
        errors.push(FieldError::new(
            "spec.redirectUris",
            "redirect URIs are only used with the authorization_code grant",
        ));
    }
    if has(GrantType::RefreshToken) && !spec.grant_types.iter().any(|g| g.signs_people_in()) {
        errors.push(FieldError::new(
            "spec.grantTypes",
            "refresh_token needs authorization_code or the device grant (refresh tokens come from sign-ins)",
        ));
    }
    for (field, uris) in [
        ("spec.redirectUris", &spec.redirect_uris),
        ("spec.postLogoutRedirectUris", &spec.post_logout_redirect_uris),
    ] {
        for (i, uri) in uris.iter().enumerate() {
            if let Some(problem) = redirect_uri_problem(uri, public) {
                errors.push(FieldError::new(format!("{field}[{i}]"), problem));
            } else if uris[..i].contains(uri) {
                errors.push(FieldError::new(
                    format!("{field}[{i}]"),
                    format!("'{uri}' is listed twice"),
                ));
            }
        }
    }
}

/// Longest scope value (the CRD's maxLength).
pub const MAX_SCOPE_LENGTH: usize = 256;

/// Validates a Scope spec.
pub fn validate_scope(namespace: &str, spec: &ScopeSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = crate::schema_bounds::check_spec("Scope", spec);
    if !errors.is_empty() {
        return Err(errors);
    }
    if spec.value.len() > MAX_SCOPE_LENGTH {
        errors.push(FieldError::new(
            "spec.value",
            format!("is longer than {MAX_SCOPE_LENGTH} characters"),
        ));
    } else if !is_scope_token(&spec.value) {
        errors.push(FieldError::new(
            "spec.value",
            format!("'{}' is not an RFC 6749 scope-token", spec.value),
        ));
    } else if RESERVED_SCOPES.contains(&spec.value.as_str()) {
        errors.push(FieldError::new(
            "spec.value",
            format!("'{}' is reserved for OpenID Connect", spec.value),
        ));
    }
    if let Some(aud) = &spec.audience
        && !is_resource_uri(aud)
        && !is_client_of(namespace, aud)
    {
        errors.push(FieldError::new(
            "spec.audience",
            format!(
                "'{aud}' is neither an absolute URI without a fragment (RFC 8707) nor the client id of a client in this namespace ({namespace}.<name>)"
            ),
        ));
    }
    for (i, ns) in spec.granted_to.namespaces.iter().enumerate() {
        if ns != "*" && !is_dns_label(ns) {
            errors.push(FieldError::new(
                format!("spec.grantedTo.namespaces[{i}]"),
                format!("'{ns}' is not a namespace name or '*'"),
            ));
        }
    }
    if let Some(selector) = &spec.granted_to.namespace_selector {
        let empty = selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
            && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        if empty {
            errors.push(FieldError::new(
                "spec.grantedTo.namespaceSelector",
                "an empty selector would match every namespace; say namespaces: [\"*\"] to mean that",
            ));
        } else if let Err(e) = kube::core::Selector::try_from(selector.clone()) {
            errors.push(FieldError::new("spec.grantedTo.namespaceSelector", e.to_string()));
        }
    }
    for (i, c) in spec.granted_to.clients.iter().enumerate() {
        if !is_dns_label(&c.namespace) {
            errors.push(FieldError::new(
                format!("spec.grantedTo.clients[{i}].namespace"),
                format!("'{}' is not a namespace name", c.namespace),
            ));
        }
        if !is_dns_subdomain(&c.name) {
            errors.push(FieldError::new(
                format!("spec.grantedTo.clients[{i}].name"),
                format!("'{}' is not an object name", c.name),
            ));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// A SigningKey's rotation schedule after validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySchedule {
    /// Signing period of each key; `None` never rotates.
    pub every: Option<Duration>,
    /// How long a new key is published before it signs.
    pub publish_ahead: Duration,
    /// How long a retired key stays published.
    pub retain_after: Duration,
    /// A new value rotates once.
    pub trigger: Option<String>,
    /// With a new trigger, earlier keys leave the JWKS at once.
    pub retire_immediately: bool,
}

/// Validates a SigningKey spec.
pub fn validate_signing_key(spec: &SigningKeySpec) -> Result<(KeyAlgorithm, KeySchedule), Vec<FieldError>> {
    let mut errors = crate::schema_bounds::check_spec("SigningKey", spec);
    if !errors.is_empty() {
        return Err(errors);
    }
    let rotation = spec.rotation.clone();
    let every = rotation.as_ref().and_then(|r| r.every.as_deref()).map(|every| {
        duration_in(
            &mut errors,
            "spec.rotation.every",
            Some(every),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            None,
        )
    });
    let trigger = rotation.as_ref().and_then(|r| r.trigger.clone());
    let retire_immediately = rotation.as_ref().is_some_and(|r| r.retire_immediately);
    if retire_immediately && trigger.is_none() {
        errors.push(FieldError::new(
            "spec.rotation.retireImmediately",
            "needs spec.rotation.trigger: set a new trigger value to rotate (and retire) once",
        ));
    }
    let publish_ahead = duration_in(
        &mut errors,
        "spec.rotation.publishAhead",
        rotation.as_ref().and_then(|r| r.publish_ahead.as_deref()),
        Duration::from_secs(24 * 3600),
        Duration::ZERO,
        None,
    );
    let retain_after = duration_in(
        &mut errors,
        "spec.rotation.retainAfter",
        rotation.as_ref().and_then(|r| r.retain_after.as_deref()),
        MAX_TOKEN_LIFETIME + Duration::from_secs(3600),
        MAX_TOKEN_LIFETIME,
        None,
    );
    let publish_ahead = match every {
        // A period shorter than the default publish-ahead publishes half a period ahead.
        Some(every) if rotation.as_ref().is_some_and(|r| r.publish_ahead.is_none()) => publish_ahead.min(every / 2),
        Some(every) if publish_ahead >= every => {
            errors.push(FieldError::new(
                "spec.rotation.publishAhead",
                "must be shorter than spec.rotation.every",
            ));
            publish_ahead
        }
        _ => publish_ahead,
    };
    if errors.is_empty() {
        Ok((
            spec.algorithm,
            KeySchedule {
                every,
                publish_ahead,
                retain_after,
                trigger,
                retire_immediately,
            },
        ))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClientRef, ScopeGrants, SecretKeys, SecretRotation, SecretSpec};

    #[test]
    fn defaults_apply_to_an_empty_client() {
        let s = validate_client(
            "app",
            &OAuthClientSpec {
                grant_types: vec![crate::crd::GrantType::ClientCredentials],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.access_token_lifetime, DEFAULT_TOKEN_LIFETIME);
        match s.secret {
            CredentialSource::Generated(GeneratedSecret {
                name,
                contents,
                rotation,
                ..
            }) => {
                assert_eq!(name, "app-oauth");
                assert_eq!(contents.keys.client_secret, "CLIENT_SECRET");
                assert_eq!(rotation.overlap, DEFAULT_SECRET_OVERLAP);
                assert_eq!(rotation.every, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn redirect_uris_follow_rfc_8252() {
        for ok in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?tenant=a",
            "http://127.0.0.1:8400/cb",
            "http://localhost/cb",
            "http://[::1]:9000/",
        ] {
            assert_eq!(redirect_uri_problem(ok, false), None, "{ok}");
        }
        assert_eq!(redirect_uri_problem("com.example.app:/cb", true), None);
        for (bad, why) in [
            ("/cb", "absolute"),
            ("https://app.example.com/cb#x", "fragment"),
            ("https://user@app.example.com/cb", "user info"),
            ("http://app.example.com/cb", "http"),
            ("com.example.app:/cb", "scheme"),
            ("javascript:alert(1)", "scheme"),
            ("HTTPS://App.example.com/cb", "normal form"),
        ] {
            let problem = redirect_uri_problem(bad, false).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(problem.contains(why), "{bad}: {problem}");
        }
    }

    #[test]
    fn public_and_sign_in_clients() {
        use crate::crd::{ClientType, GrantType::*};
        let public = OAuthClientSpec {
            client_type: ClientType::Public,
            grant_types: vec![AuthorizationCode, RefreshToken],
            redirect_uris: vec!["http://127.0.0.1:9000/cb".into()],
            ..Default::default()
        };
        let s = validate_client("spa", &public).unwrap();
        assert_eq!(s.secret, CredentialSource::Public);
        assert_eq!(s.auth_method, TokenEndpointAuthMethod::None);
        assert_eq!(s.id_token_alg, KeyAlgorithm::RS256);
        assert_eq!(s.refresh_token_lifetime, DEFAULT_REFRESH_LIFETIME);

        let wrong = OAuthClientSpec {
            grant_types: vec![ClientCredentials, RefreshToken],
            token_endpoint_auth_method: Some(TokenEndpointAuthMethod::ClientSecretPost),
            secret: Some(Default::default()),
            ..public.clone()
        };
        let fields: Vec<String> = validate_client("spa", &wrong)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.grantTypes",
                "spec.tokenEndpointAuthMethod",
                "spec.redirectUris",
                "spec.grantTypes",
                "spec.clientType"
            ]
        );

        let confidential = OAuthClientSpec {
            grant_types: vec![AuthorizationCode],
            token_endpoint_auth_method: Some(TokenEndpointAuthMethod::None),
            ..Default::default()
        };
        let errors = describe(&validate_client("web", &confidential).unwrap_err());
        assert!(errors.contains("none is only for public clients"), "{errors}");
        assert!(errors.contains("at least one redirect URI"), "{errors}");
    }

    #[test]
    fn every_bad_field_is_named() {
        let spec = OAuthClientSpec {
            client_id: Some("team-b.app".into()),
            grant_types: vec![],
            scopes: vec!["ok".into(), "bad scope".into(), "ok".into()],
            audiences: vec!["https://api.example.com".into(), "not a uri".into()],
            access_token_lifetime: Some("3 fortnights".into()),
            secret: Some(SecretSpec {
                name: Some("Bad_Name".into()),
                keys: Some(SecretKeys {
                    client_id: "same".into(),
                    client_secret: "same".into(),
                    ..Default::default()
                }),
                rotation: Some(SecretRotation {
                    every: Some("1h".into()),
                    overlap: Some("2h".into()),
                    ..Default::default()
                }),
                labels: Some([("kauth.dev/credentials".to_string(), "external".to_string())].into()),
                annotations: Some([("bad key!".to_string(), String::new())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let errors = validate_client("app", &spec).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.clientId",
                "spec.grantTypes",
                "spec.scopes[1]",
                "spec.scopes[2]",
                "spec.audiences[1]",
                "spec.accessTokenLifetime",
                "spec.secret.name",
                "spec.secret.keys.clientSecret",
                "spec.secret.labels.kauth.dev/credentials",
                "spec.secret.annotations.bad key!",
                "spec.secret.rotation.overlap",
            ]
        );
        assert!(describe(&errors).contains("spec.scopes[1]: 'bad scope' is not an RFC 6749 scope-token"));
    }

    #[test]
    fn service_account_clients() {
        use crate::crd::GrantType;
        let spec = OAuthClientSpec {
            grant_types: vec![GrantType::ClientCredentials, GrantType::TokenExchange],
            service_account: Some("backend".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_client("a", &spec).unwrap().secret,
            CredentialSource::ServiceAccount("backend".into())
        );
        let with_secret = OAuthClientSpec {
            secret: Some(SecretSpec::default()),
            ..spec.clone()
        };
        assert_eq!(
            validate_client("a", &with_secret).unwrap_err()[0].field,
            "spec.serviceAccount"
        );
        let no_sa = OAuthClientSpec {
            service_account: None,
            ..spec
        };
        assert_eq!(validate_client("a", &no_sa).unwrap_err()[0].field, "spec.grantTypes");
    }

    #[test]
    fn lifetime_bounds() {
        let mut spec = OAuthClientSpec {
            grant_types: vec![crate::crd::GrantType::ClientCredentials],
            ..Default::default()
        };
        spec.access_token_lifetime = Some("30s".into());
        assert!(
            validate_client("a", &spec).unwrap_err()[0]
                .message
                .contains("shorter than 1m")
        );
        spec.access_token_lifetime = Some("25h".into());
        assert!(
            validate_client("a", &spec).unwrap_err()[0]
                .message
                .contains("longer than 1day")
        );
        spec.access_token_lifetime = Some("15m".into());
        assert_eq!(
            validate_client("a", &spec).unwrap().access_token_lifetime,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn scope_rules() {
        let mut spec = ScopeSpec {
            value: "orders.read".into(),
            audience: Some("https://orders".into()),
            ..Default::default()
        };
        assert!(validate_scope("orders", &spec).is_ok());
        spec.value = "openid".into();
        assert_eq!(validate_scope("orders", &spec).unwrap_err()[0].field, "spec.value");
        spec.value = "a\"b".into();
        assert!(validate_scope("orders", &spec).is_err());
        spec.value = "x".repeat(MAX_SCOPE_LENGTH + 1);
        assert!(
            validate_scope("orders", &spec).unwrap_err()[0]
                .message
                .contains("longer than 256")
        );
        spec.value = "ok".into();
        spec.audience = Some("https://x#frag".into());
        spec.granted_to = ScopeGrants {
            namespace_selector: None,
            namespaces: vec!["*".into(), "Team".into()],
            clients: vec![ClientRef {
                namespace: "a".into(),
                name: "b".into(),
            }],
        };
        let fields: Vec<_> = validate_scope("orders", &spec)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.audience", "spec.grantedTo.namespaces[1]"]);
    }

    #[test]
    fn a_scope_may_name_a_client_of_its_own_namespace_as_its_audience_and_no_other() {
        let spec = |aud: &str| ScopeSpec {
            value: "kubernetes".into(),
            audience: Some(aud.into()),
            ..Default::default()
        };
        assert!(validate_scope("kauth", &spec("kauth.kubectl")).is_ok());
        for (namespace, aud) in [
            ("shop", "kauth.kubectl"),
            ("kauth", "kauth-x.kubectl"),
            ("kauth", "kauth."),
            ("kauth", "kauth.Kubectl"),
            ("kauth", "kauth.kube.ctl"),
            ("kau", "kauth.kubectl"),
        ] {
            let errors = validate_scope(namespace, &spec(aud)).unwrap_err();
            assert_eq!(errors[0].field, "spec.audience", "{namespace} {aud}");
            assert!(
                errors[0].message.contains(&format!("({namespace}.<name>)")),
                "{}",
                errors[0].message
            );
        }
    }

    #[test]
    fn empty_and_malformed_selectors_are_refused() {
        let mut spec = ScopeSpec {
            value: "x".into(),
            ..Default::default()
        };
        spec.granted_to.namespace_selector = Some(Default::default());
        assert!(
            validate_scope("orders", &spec).unwrap_err()[0]
                .message
                .contains("every namespace")
        );
        spec.granted_to.namespace_selector = Some(
            serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Sometimes"}]}))
                .unwrap(),
        );
        assert_eq!(
            validate_scope("orders", &spec).unwrap_err()[0].field,
            "spec.grantedTo.namespaceSelector"
        );
    }

    #[test]
    fn syntax_helpers() {
        assert!(is_resource_uri("https://api.example.com/v1"));
        assert!(is_resource_uri("urn:kauth:orders"));
        assert!(!is_resource_uri("orders"));
        assert!(!is_resource_uri("1http://x"));
        assert!(is_client_id_override("legacy-client_01"));
        assert!(!is_client_id_override("a.b"));
        assert!(!is_client_id_override("a:b"));
        assert!(is_dns_subdomain("app-oauth.v2"));
        assert!(!is_dns_subdomain("App"));
    }

    #[test]
    fn key_schedule_defaults_and_bounds() {
        use crate::crd::KeyRotation;
        let (_, s) = validate_signing_key(&SigningKeySpec::default()).unwrap();
        assert_eq!(s.every, None);
        let spec = SigningKeySpec {
            rotation: Some(KeyRotation {
                every: Some("2h".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (_, s) = validate_signing_key(&spec).unwrap();
        assert_eq!(s.publish_ahead, Duration::from_secs(3600));
        let spec = SigningKeySpec {
            rotation: Some(KeyRotation {
                every: Some("2h".into()),
                publish_ahead: Some("3h".into()),
                retain_after: Some("1h".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields: Vec<_> = validate_signing_key(&spec)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.rotation.retainAfter", "spec.rotation.publishAhead"]);
    }
}
