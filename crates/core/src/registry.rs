//! The registry: an immutable snapshot of everything the provider serves, swapped atomically
//! whenever a watched resource changes. Request handlers read it without locks and never see
//! Kubernetes types.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::catalog::{Catalog, ClientVerdict};
use crate::client_keys::ClientKeys;
use crate::crd::{GrantType, KeyAlgorithm, TokenEndpointAuthMethod};
use crate::credentials::SecretVerifier;
use crate::keys::KeyRing;
use crate::service_account::ServiceAccountRef;
use crate::validation::{ClientSettings, NoSecret, SecretHandling};

/// What a client presents to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCredential {
    /// A client secret, checked against its digests.
    Secret(SecretVerifier),
    /// A projected token of this ServiceAccount.
    ServiceAccount(ServiceAccountRef),
    /// Nothing: a public client (PKCE protects its codes).
    None,
    /// A JWT assertion signed with one of these keys (`private_key_jwt`).
    Keys(ClientKeys),
}

/// A client the provider accepts.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    /// OAuth client id.
    pub client_id: String,
    /// Namespace of the OAuthClient (the trust boundary).
    pub namespace: String,
    /// Name of the OAuthClient.
    pub name: String,
    /// The OAuthClient object's uid: codes, refresh families and consents belong to it, so a
    /// client id that changes hands (or a re-created object) inherits none of them.
    pub uid: String,
    /// Registered authentication method for secret clients.
    pub auth_method: TokenEndpointAuthMethod,
    /// How the client authenticates.
    pub credential: ClientCredential,
    /// Grant types it may use.
    pub grant_types: Vec<GrantType>,
    /// Scopes it may request and was granted, with their audiences.
    pub scopes: HashMap<String, Option<String>>,
    /// Its default token audiences when no granted scope names one (`spec.audiences`, only
    /// those a granted scope covers).
    pub audiences: Vec<String>,
    /// Access token lifetime.
    pub access_token_lifetime: Duration,
    /// Redirect URIs, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Post-logout redirect URIs, compared exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// Algorithm of its ID tokens.
    pub id_token_alg: KeyAlgorithm,
    /// Idle lifetime of its refresh tokens.
    pub refresh_token_lifetime: Duration,
    /// Its authorization requests must be pushed first (`spec.requirePushedAuthorizationRequests`).
    pub require_par: bool,
    /// Its tokens must be DPoP-bound (`spec.dpop: Required`).
    pub require_dpop: bool,
    /// The `acr` its sign-ins must reach (`spec.requiredAcr`).
    pub required_acr: Option<&'static str>,
    /// Held to the FAPI 2.0 Security Profile (`spec.profile: FAPI2`).
    pub fapi2: bool,
    /// Pushes only signed request objects (`spec.requireSignedRequestObject`).
    pub require_signed_request_object: bool,
    /// Where its logout tokens go (`spec.backchannelLogoutUri`).
    pub backchannel_logout_uri: Option<String>,
    /// What it was built from: the next snapshot keeps this very client while the catalog
    /// keeps that verdict and the credential stays the same.
    pub built_from: Option<BuiltFrom>,
}

/// The sources of a registered client, compared by identity when the next snapshot is built
/// (opaque outside the registry: a client made by hand has none).
#[derive(Clone, Debug)]
pub struct BuiltFrom {
    /// The catalog's verdict (the same shared one, not an equal one).
    verdict: Arc<ClientVerdict>,
    /// The version of the Secret its credential was read from, when the source has versions.
    secret: Option<SecretVersion>,
}

/// Which version of a Secret a credential was read from: the object's uid and resourceVersion,
/// one of which changes whenever its content may have (a re-created Secret has a new uid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    /// The Secret object's uid.
    pub uid: String,
    /// Its resourceVersion.
    pub resource_version: String,
}

/// What a secret client's credential source answers.
#[derive(Clone, Debug)]
pub enum SecretRead {
    /// The Secret is still at the version the previous snapshot's client was read from: keep
    /// that client's credential, without reading (parsing, hashing) the Secret again.
    Unchanged,
    /// Read now: the verifier, and the version it was read from when the source has versions.
    Read(SecretVerifier, Option<SecretVersion>),
}

impl RegisteredClient {
    /// Builds a registered client from a servable verdict and its credential (read from that
    /// version of a Secret, if any).
    pub fn new(
        verdict: &Arc<ClientVerdict>,
        settings: &ClientSettings,
        credential: ClientCredential,
        secret: Option<SecretVersion>,
    ) -> Self {
        Self {
            client_id: verdict.client_id.clone(),
            namespace: verdict.key.namespace.clone(),
            name: verdict.key.name.clone(),
            uid: verdict.uid.clone(),
            auth_method: settings.auth_method,
            credential,
            grant_types: verdict.grant_types.clone(),
            scopes: verdict
                .granted
                .iter()
                .map(|g| (g.value.clone(), g.audience.clone()))
                .collect(),
            audiences: verdict.audiences.clone(),
            access_token_lifetime: settings.access_token_lifetime,
            redirect_uris: settings.redirect_uris.clone(),
            post_logout_redirect_uris: settings.post_logout_redirect_uris.clone(),
            id_token_alg: settings.id_token_alg,
            refresh_token_lifetime: settings.refresh_token_lifetime,
            require_par: settings.require_par,
            require_dpop: settings.require_dpop,
            required_acr: settings.required_acr,
            fapi2: settings.fapi2,
            require_signed_request_object: settings.require_signed_request_object,
            backchannel_logout_uri: settings.backchannel_logout_uri.clone(),
            built_from: Some(BuiltFrom {
                verdict: verdict.clone(),
                secret,
            }),
        }
    }

    /// What this client was built from, when that was `verdict` (the same shared one).
    fn sources_if_built_from(&self, verdict: &Arc<ClientVerdict>) -> Option<&BuiltFrom> {
        self.built_from
            .as_ref()
            .filter(|from| Arc::ptr_eq(&from.verdict, verdict))
    }

    /// True for a public client (no credential; PKCE required).
    pub fn is_public(&self) -> bool {
        self.credential == ClientCredential::None
    }

    /// True when this client may ask for `resource` as a token audience: only the audience of
    /// a Scope granted to it (audiences belong to the API teams that declare them).
    pub fn may_target(&self, resource: &str) -> bool {
        self.scopes.values().any(|a| a.as_deref() == Some(resource))
    }

    /// True when `uri` is one of the client's redirect URIs: compared exactly, except that a
    /// public client's `http://127.0.0.1` or `http://[::1]` URI matches on any port (RFC 8252
    /// §7.3: a native app listens on whichever port the system gave it).
    pub fn accepts_redirect(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| registered == uri || (self.is_public() && same_loopback_but_port(registered, uri)))
    }

    /// True when the client registered this grant type.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

/// True when `registered` is an http URI to a loopback IP literal and `requested` is the same
/// URI on another port. `requested` must be written in normal form, so what the browser is
/// sent to is exactly what was compared.
fn same_loopback_but_port(registered: &str, requested: &str) -> bool {
    let (Ok(mut registered), Ok(mut requested_url)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    let loopback_ip = matches!(
        registered.host(),
        Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST)) | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    if !loopback_ip || registered.scheme() != "http" || requested_url.as_str() != requested {
        return false;
    }
    let ports_dropped = registered.set_port(None).is_ok() && requested_url.set_port(None).is_ok();
    ports_dropped && registered == requested_url
}

/// What people are told about a scope, and whether they must agree to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeInfo {
    /// The Scope's description (its value when it has none).
    pub description: Option<String>,
    /// Whether the consent page must ask for it.
    pub consent_required: bool,
}

/// One consistent view of clients, scopes and keys.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Clients by client id.
    pub clients: HashMap<String, Arc<RegisteredClient>>,
    /// Client ids bound to each ServiceAccount.
    pub by_service_account: HashMap<ServiceAccountRef, Vec<String>>,
    /// For each claimed audience (by [`claim_key`](crate::claims::claim_key)), the namespace
    /// that owns it: clients there act as that API's resource servers and may introspect its
    /// tokens.
    pub audience_owners: HashMap<crate::claims::ClaimKey, String>,
    /// Since when some claim has waited for the claims record (see `/readyz/claims`).
    pub claims_pending_since: Option<jiff::Timestamp>,
    /// The uid of every OAuthClient object that exists (served or not): grants held for any
    /// other uid belong to a deleted client.
    pub client_uids: HashSet<String>,
    /// Accepted scopes by value: what the consent page shows.
    pub scopes: HashMap<String, ScopeInfo>,
    /// Web origins of public clients' redirect URIs: the browser apps that may call the token
    /// and userinfo endpoints cross-origin.
    pub browser_origins: HashSet<String>,
    /// Signing and verification keys.
    pub keys: KeyRing,
    /// True once every source has been read at least once.
    pub complete: bool,
    /// The versions of the Secrets `keys` was read from, when its source has versions: a
    /// rebuild that finds the same ones keeps `keys` instead of parsing them again.
    pub keys_read_from: Option<Vec<SecretVersion>>,
}

impl Snapshot {
    /// Builds the serving view from a catalog; `secret_of` reads each servable secret client's
    /// secret (None: not yet available, the client is left out), and is told the version the
    /// previous snapshot's client was read from when that client was built from this very
    /// verdict. A client whose verdict and credential are the ones `previous` was built with is
    /// `previous`'s, shared: a rebuild after one change allocates (and later frees) that change,
    /// and reads only the Secrets that changed, not every client again.
    pub fn build(
        catalog: &Catalog,
        previous: &Snapshot,
        secret_of: impl Fn(&ClientVerdict, &ClientSettings, Option<&SecretVersion>) -> Option<SecretRead>,
        keys: KeyRing,
    ) -> Self {
        let mut clients = HashMap::with_capacity(catalog.clients.len());
        let mut by_service_account: HashMap<ServiceAccountRef, Vec<String>> = HashMap::new();
        for verdict in catalog.clients.iter().filter(|v| v.servable()) {
            let Ok(settings) = &*verdict.settings else { continue };
            let kept = previous
                .clients
                .get(&verdict.client_id)
                .and_then(|c| Some((c, c.sources_if_built_from(verdict)?)));
            let (credential, secret) = match settings.secret.secret_handling() {
                SecretHandling::None(NoSecret::ServiceAccount(name)) => {
                    let sa = ServiceAccountRef {
                        namespace: verdict.key.namespace.clone(),
                        name: name.to_string(),
                    };
                    by_service_account
                        .entry(sa.clone())
                        .or_default()
                        .push(verdict.client_id.clone());
                    (ClientCredential::ServiceAccount(sa), None)
                }
                SecretHandling::None(NoSecret::Public) => (ClientCredential::None, None),
                SecretHandling::None(NoSecret::Keys(keys)) => (ClientCredential::Keys(keys.clone()), None),
                SecretHandling::Generate(_) | SecretHandling::Read(_) => {
                    match secret_of(verdict, settings, kept.and_then(|(_, from)| from.secret.as_ref())) {
                        Some(SecretRead::Read(verifier, version)) => (ClientCredential::Secret(verifier), version),
                        Some(SecretRead::Unchanged) => {
                            // Only ever the answer to a version told, which only a kept client has.
                            if let Some((same, _)) = kept {
                                clients.insert(same.client_id.clone(), same.clone());
                            }
                            continue;
                        }
                        None => continue,
                    }
                }
            };
            let client = match kept {
                Some((same, from)) if same.credential == credential && from.secret == secret => same.clone(),
                _ => Arc::new(RegisteredClient::new(verdict, settings, credential, secret)),
            };
            clients.insert(client.client_id.clone(), client);
        }
        let audience_owners = catalog.audience_owners.clone();
        let claims_pending_since =
            (catalog.pending_claims() > 0).then(|| previous.claims_pending_since.unwrap_or_else(jiff::Timestamp::now));
        let client_uids = catalog.clients.iter().map(|v| v.uid.clone()).collect();
        let scopes = catalog
            .scope_values
            .iter()
            .map(|(value, s)| {
                let info = ScopeInfo {
                    description: s.description.clone(),
                    consent_required: s.consent_required,
                };
                (value.clone(), info)
            })
            .collect();
        let browser_origins = clients
            .values()
            .filter(|c| c.is_public())
            .flat_map(|c| &c.redirect_uris)
            .filter_map(|uri| web_origin(uri))
            .collect();
        Self {
            clients,
            by_service_account,
            audience_owners,
            claims_pending_since,
            client_uids,
            scopes,
            browser_origins,
            keys,
            complete: true,
            keys_read_from: None,
        }
    }
}

/// The origin (`scheme://host[:port]`) of a URL as browsers send it; None for schemes without
/// one (a native app's `com.example.app:/cb`).
pub fn web_origin(uri: &str) -> Option<String> {
    let origin = url::Url::parse(uri).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Whether the sources behind the snapshot are in step (in a cluster: the watches). A replica
/// whose sources fail too long may serve stale grants, so readiness reports it.
pub trait Freshness: Send + Sync {
    /// How many sources are failing now.
    fn failing(&self) -> usize;
    /// Why the snapshot may be stale, once a source has failed for too long.
    fn stale(&self) -> Option<String>;
}

/// Holds the current snapshot; cheap to clone and share.
#[derive(Clone)]
pub struct Registry {
    current: Arc<ArcSwap<Snapshot>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty, not yet complete registry.
    pub fn new() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Replaces the snapshot and hands the previous one back, for its caller to free where
    /// freeing tens of megabytes does not hold up anything.
    pub fn replace(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::same_loopback_but_port;

    #[test]
    fn a_loopback_ip_redirect_matches_on_any_port_and_nothing_else_changes() {
        for (registered, requested) in [
            ("http://127.0.0.1/cb", "http://127.0.0.1:53127/cb"),
            ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9/cb"),
            ("http://[::1]/cb?x=1", "http://[::1]:4000/cb?x=1"),
        ] {
            assert!(
                same_loopback_but_port(registered, requested),
                "{registered} {requested}"
            );
        }
        for (registered, requested, why) in [
            ("http://127.0.0.1/cb", "http://127.0.0.1:53127/other", "path"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:53127/cb?x=1", "query"),
            ("http://127.0.0.1/cb", "http://127.0.0.2:53127/cb", "host"),
            ("http://127.0.0.1/cb", "https://127.0.0.1:53127/cb", "scheme"),
            (
                "http://localhost/cb",
                "http://localhost:53127/cb",
                "a name, not an IP literal",
            ),
            (
                "https://127.0.0.1/cb",
                "https://127.0.0.1:53127/cb",
                "https is not a native app's listener",
            ),
            (
                "http://127.0.0.1/cb",
                "http://127.0.0.1:53127/x/../cb",
                "not in normal form",
            ),
            ("http://127.0.0.1/cb", "http://user@127.0.0.1:53127/cb", "user info"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:53127/cb#f", "fragment"),
        ] {
            assert!(!same_loopback_but_port(registered, requested), "{why}: {requested}");
        }
    }
}

#[cfg(test)]
mod sharing_tests {
    use super::*;
    use crate::catalog::{ClientInput, NamespaceLabels};
    use crate::crd::OAuthClientSpec;

    #[test]
    fn a_client_is_shared_with_the_last_snapshot_only_while_its_verdict_and_secret_stay() {
        let spec = OAuthClientSpec {
            grant_types: vec![GrantType::ClientCredentials],
            ..Default::default()
        };
        let input = ClientInput {
            uid: "u1",
            generation: Some(1),
            ..ClientInput::of("shop", "web", &spec)
        };
        let judge = |earlier: &Catalog| {
            Catalog::evaluate_after(
                earlier,
                &[input],
                &[],
                &NamespaceLabels::new(),
                &Default::default(),
                Default::default(),
            )
        };
        let build = |catalog: &Catalog, previous: &Snapshot, secret: &str| {
            let verifier = SecretVerifier::for_secret(secret);
            Snapshot::build(
                catalog,
                previous,
                |_, _, _| Some(SecretRead::Read(verifier.clone(), None)),
                KeyRing::default(),
            )
        };
        let now = jiff::Timestamp::now();
        let catalog = judge(&Catalog::default());
        let first = build(&catalog, &Snapshot::default(), "old-secret");
        let same = build(&judge(&catalog), &first, "old-secret");
        assert!(Arc::ptr_eq(&first.clients["shop.web"], &same.clients["shop.web"]));

        // The Secret rotated, the verdict did not: the new secret is served, not the kept one.
        let rotated = build(&judge(&catalog), &same, "new-secret");
        let ClientCredential::Secret(served) = &rotated.clients["shop.web"].credential else {
            panic!("a secret client");
        };
        assert!(served.verify("new-secret", now) && !served.verify("old-secret", now));

        // A verdict judged again (a fresh catalog) is not the one the client was built from.
        let rejudged = build(&judge(&Catalog::default()), &rotated, "new-secret");
        assert!(!Arc::ptr_eq(
            &rotated.clients["shop.web"],
            &rejudged.clients["shop.web"]
        ));
    }
}
