//! `OAuthClient`: an application team's OAuth client.
// Each printcolumn(...) repeats `type_ = "string"`, which clippy mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::limits as limit;

/// Desired state of an OAuth client. The controller derives a stable client id and writes the
/// generated credentials into a Secret in the client's own namespace.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kauth.dev",
    version = "v1alpha1",
    kind = "OAuthClient",
    namespaced,
    status = "OAuthClientStatus",
    shortname = "oac",
    category = "kauth",
    doc = "An OAuth 2.0 client. kauth writes its credentials into a Secret in the same namespace.",
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!(has(self.spec.existingSecret) && has(self.spec.secret))").message("spec.existingSecret and spec.secret are mutually exclusive"),
    validation = Rule::new("!has(self.spec.serviceAccount) || !(has(self.spec.existingSecret) || has(self.spec.secret))").message("a client with spec.serviceAccount has no secret")
)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientSpec {
    /// Explicit client id. Default: `<namespace>.<name>`, stable across delete and re-create.
    /// An explicit id may not contain '.', so it can never take another namespace's default id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // maxLength bounds the CEL cost estimate, which modern apiservers check.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_~-]{1,128}$')").message("clientId may only contain letters, digits, '_', '~' and '-' (at most 128)"))]
    pub client_id: Option<String>,

    /// `confidential` (default: it holds a secret) or `public` (a browser, native app or CLI:
    /// no secret, PKCE required; authorization_code, the device grant and refresh_token only).
    #[serde(default)]
    pub client_type: ClientType,

    /// Grant types the client may use. Default: `[client_credentials]`.
    #[serde(default = "default_grant_types")]
    #[schemars(length(max = limit::GRANT_TYPES))]
    pub grant_types: Vec<GrantType>,

    /// How the client authenticates at the token endpoint. Default: `client_secret_basic`, or
    /// `none` for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<TokenEndpointAuthMethod>,

    /// Where /authorize may send people back, compared exactly (authorization_code clients).
    /// https, http only to a loopback host, or a private-use scheme such as
    /// `com.example.app:/callback` for public native apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::REDIRECT_URIS), inner(length(max = limit::URI)))]
    pub redirect_uris: Vec<String>,

    /// Where RP-initiated logout may send people afterwards, compared exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::REDIRECT_URIS), inner(length(max = limit::URI)))]
    pub post_logout_redirect_uris: Vec<String>,

    /// `FAPI2`: the FAPI 2.0 Security Profile for this client: pushed requests only, PKCE S256,
    /// DPoP-bound tokens, `private_key_jwt` only, no public client, ID tokens ES256 or EdDSA
    /// (default ES256). kauth refuses a spec or a request that breaks a rule, naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ClientProfile>,

    /// The authentication context people must reach to sign in to this client:
    /// `urn:kauth:acr:mfa` asks for a second factor (a code from an authenticator app) besides
    /// the password, stepping up a session that has none. Default: whatever the request asks
    /// for (`acr_values`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_acr: Option<RequiredAcr>,

    /// `Required`: every token this client gets is DPoP-bound (RFC 9449): a token request
    /// without a proof is refused. Default `Optional`: bound when the client sends a proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop: Option<DpopPolicy>,

    /// `true`: this client pushes its requests to /par only as request objects signed with one
    /// of its keys (RFC 9101; needs `jwks` or `jwksUri`). Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signed_request_object: bool,

    /// `true`: /authorize accepts this client's requests only as pushed first to /par (RFC
    /// 9126), so no authorization parameter travels through the browser. Default `false`
    /// (the platform may require it of every client).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_pushed_authorization_requests: bool,

    /// OIDC Back-Channel Logout: kauth POSTs a logout token here when a session this client
    /// signed a person in with ends (https; http only to a loopback host). Only public
    /// addresses are called unless the platform allows a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::URI))]
    pub backchannel_logout_uri: Option<String>,

    /// `true`: the client needs `sid` in logout tokens (kauth always sends it with a session).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backchannel_logout_session_required: bool,

    /// Algorithm of the ID tokens this client receives. Default: `RS256`, which every OpenID
    /// relying party supports; otherwise the algorithm of an active SigningKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signing_alg: Option<crate::crd::KeyAlgorithm>,

    /// How long an unused refresh token stays valid, e.g. `720h` (1h to 90 days). Default
    /// `720h`. Every use rotates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub refresh_token_lifetime: Option<String>,

    /// OAuth scope values the client may request. Each must be offered by a Scope resource that
    /// grants it to this client's namespace (or to this client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::SCOPES), inner(length(max = limit::SCOPE_VALUE)))]
    pub scopes: Vec<String>,

    /// Resource indicators (RFC 8707) the client may request as token audiences, besides the
    /// audiences of its granted scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::AUDIENCES), inner(length(max = limit::URI)))]
    pub audiences: Vec<String>,

    /// Lifetime of issued access tokens, e.g. `15m` (1m to 24h). Default: `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub access_token_lifetime: Option<String>,

    /// The generated Secret: its name, key names and rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSpec>,

    /// Bring your own client secret (for example from External Secrets). kauth only reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret: Option<ExistingSecret>,

    /// `private_key_jwt` (RFC 7523): the client's public keys; it signs its client assertions
    /// with the private ones. No Secret is written. Or `jwksUri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<ClientJwks>,

    /// `private_key_jwt` with the client's keys published at this https URL (fetched by kauth,
    /// cached, fetched again for an unknown `kid`; only public addresses unless the platform
    /// allows a network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::URI))]
    pub jwks_uri: Option<String>,

    /// Secretless: a ServiceAccount in this namespace whose projected token is the client's
    /// credential (client assertion, or token exchange). No Secret is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::OBJECT_NAME))]
    pub service_account: Option<String>,
}

/// OAuth grant types kauth implements for machine clients.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum GrantType {
    /// RFC 6749 §4.4.
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// RFC 8693, with the client's ServiceAccount token as the subject token.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
    /// RFC 6749 §4.1: people sign in through /authorize.
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    /// RFC 6749 §6, with rotation on every use.
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// RFC 8628: a device without a browser shows a code; the person signs in on another.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
}

impl GrantType {
    /// Every grant type kauth implements, in the order discovery lists them.
    pub const ALL: [GrantType; 5] = [
        Self::ClientCredentials,
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::DeviceCode,
        Self::TokenExchange,
    ];

    /// The grant type a token request names in `grant_type`, if kauth implements it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }

    /// True when people sign in for it (it may come with refresh tokens and ID tokens).
    pub fn signs_people_in(self) -> bool {
        matches!(self, Self::AuthorizationCode | Self::DeviceCode)
    }

    /// True when the grant identifies (and authenticates) its client itself instead of the
    /// token endpoint: a token exchange by its subject token, the client's ServiceAccount token.
    pub fn identifies_its_client(self) -> bool {
        matches!(self, Self::TokenExchange)
    }

    /// True when the grant works only in a cluster (it verifies ServiceAccount tokens).
    pub fn needs_cluster(self) -> bool {
        matches!(self, Self::TokenExchange)
    }

    /// The registered name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
        }
    }
}

/// Whether a client can keep a secret (RFC 6749 §2.1).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// A server-side application with a secret.
    #[default]
    Confidential,
    /// A browser or native application: no secret, PKCE required.
    Public,
}

fn default_grant_types() -> Vec<GrantType> {
    vec![GrantType::ClientCredentials]
}

/// Token endpoint authentication methods (RFC 7591 §2).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum TokenEndpointAuthMethod {
    /// HTTP Basic with the client id and secret.
    #[default]
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// No authentication: public clients, which send only `client_id` (and prove possession of
    /// the code with PKCE).
    #[serde(rename = "none")]
    None,
    /// A JWT assertion signed with one of the client's keys (RFC 7523 §2.2; `spec.jwks` or
    /// `spec.jwksUri`).
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

impl TokenEndpointAuthMethod {
    /// The registered name, as discovery and errors spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// A security profile a client is held to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ClientProfile {
    /// The FAPI 2.0 Security Profile.
    FAPI2,
}

/// An authentication context (`acr`) a client may require.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RequiredAcr {
    /// One factor: a password, or an upstream provider's sign-in.
    #[serde(rename = "urn:kauth:acr:1fa")]
    OneFactor,
    /// A password and a second factor.
    #[serde(rename = "urn:kauth:acr:mfa")]
    Mfa,
}

impl RequiredAcr {
    /// Its `acr` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneFactor => crate::second_factors::ACR_ONE_FACTOR,
            Self::Mfa => crate::second_factors::ACR_MFA,
        }
    }
}

/// Whether a client's tokens must be DPoP-bound.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DpopPolicy {
    /// Bound when the client sends a proof.
    #[default]
    Optional,
    /// Always bound: a token request without a proof is refused.
    Required,
}

/// Where and how kauth writes the generated credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSpec {
    /// Secret name. Default: `<client name>-oauth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::OBJECT_NAME))]
    pub name: Option<String>,
    /// Key names inside the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<SecretKeys>,
    /// Secret rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<SecretRotation>,
    /// Ready-made key sets for common consumers, added beside the standard keys: `springBoot`
    /// (`SPRING_SECURITY_OAUTH2_CLIENT_*`, registration id `kauth`), `oauth2Proxy`
    /// (`OAUTH2_PROXY_*`) and `dotenv` (one `.env` key with the standard keys as lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limit::PRESETS))]
    pub presets: Vec<SecretPreset>,
    /// More keys, each rendered from a MiniJinja template. Values: `client_id`,
    /// `client_secret`, `issuer`, `token_url`, `token_endpoint_auth_method`, and the lists
    /// `scopes` (granted), `audiences` (usable) and `grant_types`. Example:
    /// `AUTH_SCOPE: "{{ scopes | join(' ') }}"`. An undefined name is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = |s: &mut schemars::Schema| limit::bound_map(s, limit::TEMPLATES, limit::TEMPLATE_SOURCE))]
    pub template: Option<std::collections::BTreeMap<String, String>>,
    /// Labels added to the Secret (for example for Argo CD or a reloader). Keys under
    /// `kauth.dev/` and `app.kubernetes.io/managed-by` are kauth's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = |s: &mut schemars::Schema| limit::bound_map(s, limit::SECRET_METADATA, limit::LABEL_VALUE))]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Annotations added to the Secret. Keys under `kauth.dev/` are kauth's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = |s: &mut schemars::Schema| limit::bound_map(s, limit::SECRET_METADATA, limit::ANNOTATION_VALUE))]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// `Delete` (default): the Secret is garbage-collected with the OAuthClient. `Orphan`: the
    /// Secret has no owner and stays when the OAuthClient is deleted; an OAuthClient of the
    /// same name created again in the namespace adopts it and keeps its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<SecretDeletionPolicy>,
}

/// A ready-made key set in the generated Secret.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SecretPreset {
    /// Spring Boot's OAuth2 client properties as environment variables.
    SpringBoot,
    /// oauth2-proxy's OIDC provider settings as environment variables.
    #[serde(rename = "oauth2Proxy")]
    OAuth2Proxy,
    /// One `.env` file holding the standard keys.
    Dotenv,
}

/// What happens to the generated Secret when its OAuthClient is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum SecretDeletionPolicy {
    /// Deleted with the OAuthClient (owner reference).
    #[default]
    Delete,
    /// Left behind, unowned; adopted by an OAuthClient of the same name.
    Orphan,
}

/// Key names in the generated Secret. Defaults suit `envFrom`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeys {
    /// Default `CLIENT_ID`.
    #[serde(default = "default_key_client_id")]
    #[schemars(length(max = limit::SECRET_KEY))]
    pub client_id: String,
    /// Default `CLIENT_SECRET`.
    #[serde(default = "default_key_client_secret")]
    #[schemars(length(max = limit::SECRET_KEY))]
    pub client_secret: String,
    /// Default `ISSUER_URL`.
    #[serde(default = "default_key_issuer")]
    #[schemars(length(max = limit::SECRET_KEY))]
    pub issuer: String,
    /// Default `TOKEN_URL`.
    #[serde(default = "default_key_token_endpoint")]
    #[schemars(length(max = limit::SECRET_KEY))]
    pub token_endpoint: String,
}

impl Default for SecretKeys {
    fn default() -> Self {
        Self {
            client_id: default_key_client_id(),
            client_secret: default_key_client_secret(),
            issuer: default_key_issuer(),
            token_endpoint: default_key_token_endpoint(),
        }
    }
}

fn default_key_client_id() -> String {
    "CLIENT_ID".into()
}
fn default_key_client_secret() -> String {
    "CLIENT_SECRET".into()
}
fn default_key_issuer() -> String {
    "ISSUER_URL".into()
}
fn default_key_token_endpoint() -> String {
    "TOKEN_URL".into()
}

/// Secret rotation: on demand (change `trigger`) and optionally on a schedule. The previous
/// secret keeps working for `overlap`, so workloads can pick up the new one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotation {
    /// Any new value rotates the secret once (for example a timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::TRIGGER))]
    pub trigger: Option<String>,
    /// Rotate automatically this long after the last rotation, e.g. `2160h`. At least `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub every: Option<String>,
    /// How long the previous secret stays valid after a rotation. Default `24h`; `0s` ends it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub overlap: Option<String>,
    /// What ends the previous secret: `AfterOverlap` (default), or `WhenUnused`: after the
    /// overlap it stays valid until no one has used it for `quietPeriod`, so workloads that
    /// have not reloaded keep working. A new rotation always ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_previous: Option<RetirePreviousSecret>,
    /// With `WhenUnused`: how long the previous secret must go unused before it is retired.
    /// Default `1h`, at least `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::DURATION))]
    pub quiet_period: Option<String>,
}

/// What ends a rotated-out client secret.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RetirePreviousSecret {
    /// The end of `overlap`.
    #[default]
    AfterOverlap,
    /// The end of `overlap`, or later, once unused for `quietPeriod`.
    WhenUnused,
}

/// A client's public keys (a JWK Set, RFC 7517 §5).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct ClientJwks {
    /// The keys: EC P-256, Ed25519 or RSA (2048 bits or more), public members only.
    #[schemars(length(max = limit::CLIENT_KEYS))]
    pub keys: Vec<ClientJwk>,
}

/// One public key (RFC 7517), as a client registers it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct ClientJwk {
    /// `EC`, `OKP` or `RSA`.
    #[schemars(length(max = limit::JWK_NAME))]
    pub kty: String,
    /// Curve: `P-256` (EC) or `Ed25519` (OKP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_NAME))]
    pub crv: Option<String>,
    /// EC or OKP public point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_MEMBER))]
    pub x: Option<String>,
    /// EC public point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_MEMBER))]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_MEMBER))]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_NAME))]
    pub e: Option<String>,
    /// Key id, matched against an assertion's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::OBJECT_NAME))]
    pub kid: Option<String>,
    /// Algorithm: `PS256`, `ES256` or `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_NAME))]
    pub alg: Option<String>,
    /// `sig` when given.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limit::JWK_NAME))]
    pub use_: Option<String>,
}

/// A Secret the user manages that holds the client secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExistingSecret {
    /// Secret name in the client's namespace. It must carry the label `kauth.dev/credentials=external`.
    #[schemars(length(max = limit::OBJECT_NAME))]
    pub name: String,
    /// Key holding the client secret. Default `CLIENT_SECRET`.
    #[serde(default = "default_key_client_secret")]
    #[schemars(length(max = limit::SECRET_KEY))]
    pub key: String,
}

/// Observed state of an OAuthClient.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The client id to use at the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The Secret holding the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Incremented on every secret rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<i64>,
    /// When each live secret was last used (to the minute, across replicas), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_usage: Vec<SecretUsage>,
    /// When the secret was last generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotated_at: Option<Time>,
    /// Scopes the client asked for and was granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,
    /// Ready, SecretReady and ScopesGranted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod grant_type_tests {
    use super::GrantType;

    #[test]
    fn each_grant_type_has_one_spelling() {
        for grant in GrantType::ALL {
            let serde_name = serde_json::to_value(grant).unwrap();
            assert_eq!(
                serde_name,
                grant.as_str(),
                "the CRD and the token endpoint spell it alike"
            );
            assert_eq!(GrantType::parse(grant.as_str()), Some(grant));
        }
        assert_eq!(GrantType::parse("password"), None);
    }
}

/// The use of one client secret version.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretUsage {
    /// Secret version (`secretVersion` is the current one).
    pub version: i64,
    /// When a request last authenticated with it; absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// For the previous secret: when it stops working, as things stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
}
