//! Upstream OpenID Connect providers people may sign in with (corporate IdP federation).
//! kauth is their relying party and maps their claims into its own ID tokens.
//!
//! Configured in `connectors.yaml` (the chart renders it from values into a ConfigMap;
//! standalone reads the `kauth-connectors` ConfigMap manifest). Client secrets are referenced,
//! never inlined: `clientSecretRef` names a Secret in kauth's namespace.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

/// The ConfigMap key holding the document.
pub const CONNECTORS_KEY: &str = "connectors.yaml";
/// The ConfigMap (in kauth's namespace) the chart renders and standalone reads.
pub const CONNECTORS_CONFIG_MAP: &str = "kauth-connectors";

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretRef {
    name: String,
    key: String,
}

/// Which upstream claim fills each of kauth's claims.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub username: String,
    pub name: String,
    pub email: String,
    pub email_verified: String,
    pub groups: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            username: "preferred_username".into(),
            name: "name".into(),
            email: "email".into(),
            email_verified: "email_verified".into(),
            groups: "groups".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
    client_secret_ref: SecretRef,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: ClaimMapping,
    #[serde(default)]
    auth_context: AuthContext,
}

/// Whether kauth takes the upstream's word for how a person signed in (`amr`, `acr` of its ID
/// token): only for an upstream the platform trusts to check a second factor. Off by default:
/// kauth then vouches for no factor of an upstream's people.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthContext {
    /// Take the upstream's `amr` (and `acr`) as the person's sign-in.
    pub trust: bool,
    /// Upstream `acr` values that mean a second factor was used (besides `mfa` in `amr`).
    pub mfa_acr_values: Vec<String>,
}

/// The RFC 8176 methods kauth passes on from a trusted upstream (others are dropped: a value
/// kauth does not know means nothing it can vouch for).
const KNOWN_AMR: [&str; 15] = [
    "face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "otp", "pin", "pwd", "rba", "sc", "sms", "swk",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    connectors: Vec<Entry>,
}

/// One upstream provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connector {
    /// Short id: in URLs and as the prefix of subjects (`<id>:<upstream sub>`).
    pub id: String,
    /// What the sign-in button says.
    pub name: String,
    /// The upstream issuer (its discovery document says the rest).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked upstream (`openid` is always among them).
    pub scopes: Vec<String>,
    pub claims: ClaimMapping,
    pub auth_context: AuthContext,
}

impl Connector {
    /// How the upstream says the person signed in (its ID token's verified claims), as kauth
    /// will record it: nothing unless the platform trusts this upstream's word; then its
    /// known `amr` values, with `mfa` when its `acr` is one that means a second factor.
    pub fn auth_methods(&self, upstream: &Value) -> Vec<String> {
        if !self.auth_context.trust {
            return Vec::new();
        }
        let mut amr: Vec<String> = upstream["amr"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|m| KNOWN_AMR.contains(m))
            .take(KNOWN_AMR.len())
            .map(str::to_owned)
            .collect();
        amr.sort();
        amr.dedup();
        let acr_means_mfa = upstream["acr"]
            .as_str()
            .is_some_and(|acr| self.auth_context.mfa_acr_values.iter().any(|v| v == acr));
        if acr_means_mfa && !amr.iter().any(|m| m == "mfa") {
            amr.push("mfa".into());
        }
        amr
    }

    /// kauth's subject for an upstream subject: never equal to a local username (no ':').
    pub fn subject(&self, upstream_sub: &str) -> String {
        format!("{}:{upstream_sub}", self.id)
    }

    /// kauth's claims for a person from the upstream ID token's (verified) claims.
    pub fn map_claims(&self, upstream: &Value) -> Value {
        let get = |name: &str| upstream.get(name).filter(|v| !v.is_null()).cloned();
        let groups = match get(&self.claims.groups) {
            Some(Value::Array(a)) => a.into_iter().filter(|g| g.is_string()).collect(),
            Some(Value::String(one)) => vec![Value::String(one)],
            _ => Vec::new(),
        };
        json!({
            "preferred_username": get(&self.claims.username).filter(Value::is_string),
            "name": get(&self.claims.name).filter(Value::is_string),
            "email": get(&self.claims.email).filter(Value::is_string),
            "email_verified": get(&self.claims.email_verified).filter(Value::is_boolean),
            "groups": groups,
        })
    }
}

/// Every configured connector.
#[derive(Clone, Debug, Default)]
pub struct Connectors {
    pub list: Vec<Arc<Connector>>,
    /// Read from a file (not the empty stand-in before the first read): only then does a
    /// missing connector mean that its people left.
    pub loaded: bool,
}

/// The one connector id refused: subjects `client:...` belong to clients
/// ([`crate::tokens::CLIENT_SUBJECT_PREFIX`]).
const RESERVED_CONNECTOR_ID: &str = "client";

/// Connector ids appear in URLs and subjects.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Connectors {
    /// Parses `connectors.yaml`; `secret(name, key)` reads a referenced Secret's value.
    pub fn parse(text: &str, secret: impl Fn(&str, &str) -> Option<String>) -> Result<Self, String> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| format!("{CONNECTORS_KEY}: {e}"))?;
        let mut list: Vec<Arc<Connector>> = Vec::new();
        let mut problems = Vec::new();
        for (i, e) in file.connectors.into_iter().enumerate() {
            let at = format!("connectors[{i}]");
            if !valid_id(&e.id) {
                problems.push(format!(
                    "{at}.id '{}': lower-case letters, digits and '-' (1 to 32)",
                    e.id
                ));
                continue;
            }
            if e.id == RESERVED_CONNECTOR_ID {
                problems.push(format!(
                    "{at}.id '{}' is reserved: clients' own tokens have subjects 'client:<client id>'",
                    e.id
                ));
                continue;
            }
            if list.iter().any(|c| c.id == e.id) {
                problems.push(format!("{at}.id '{}' is used twice", e.id));
                continue;
            }
            match url::Url::parse(&e.issuer) {
                Ok(u)
                    if u.scheme() == "https"
                        || u.host_str() == Some("127.0.0.1")
                        || u.host_str() == Some("localhost") => {}
                _ => {
                    problems.push(format!("{at}.issuer '{}' must be an https URL", e.issuer));
                    continue;
                }
            }
            let Some(client_secret) = secret(&e.client_secret_ref.name, &e.client_secret_ref.key) else {
                problems.push(format!(
                    "{at}.clientSecretRef: Secret {} has no key {}",
                    e.client_secret_ref.name, e.client_secret_ref.key
                ));
                continue;
            };
            let mut scopes = vec!["openid".to_string()];
            scopes.extend(e.scopes.into_iter().filter(|s| s != "openid"));
            list.push(Arc::new(Connector {
                id: e.id,
                name: e.name,
                issuer: e.issuer,
                client_id: e.client_id,
                client_secret: client_secret.trim_end_matches(['\r', '\n']).to_string(),
                scopes,
                claims: e.claims,
                auth_context: e.auth_context,
            }));
        }
        if problems.is_empty() {
            Ok(Self { list, loaded: true })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The connector `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Connector>> {
        self.list.iter().find(|c| c.id == id)
    }
}

/// Reads `<dir>/<name>/<key>`: the Secret referenced as the chart mounts it.
pub fn mounted_secret(dir: &std::path::Path, name: &str, key: &str) -> Option<String> {
    let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
    if !safe(name) || !safe(key) {
        return None;
    }
    std::fs::read_to_string(dir.join(name).join(key)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
connectors:
  - id: corp
    name: Corporate SSO
    issuer: https://login.corp.example.com
    clientId: kauth
    clientSecretRef: {name: corp-oidc, key: client-secret}
    scopes: [profile, email]
    claims: {username: upn, groups: roles}
"#;

    #[test]
    fn parses_resolves_secrets_and_maps_claims() {
        let c = Connectors::parse(DOC, |n, k| {
            (n == "corp-oidc" && k == "client-secret").then(|| "s3cret\n".into())
        })
        .unwrap();
        let corp = c.get("corp").unwrap();
        assert_eq!(corp.client_secret, "s3cret");
        assert_eq!(corp.scopes, ["openid", "profile", "email"]);
        assert_eq!(corp.subject("00u1"), "corp:00u1");
        let mapped = corp.map_claims(
            &json!({"upn": "alice@corp", "roles": ["admins", 3], "email": "a@corp", "email_verified": "yes"}),
        );
        assert_eq!(mapped["preferred_username"], "alice@corp");
        assert_eq!(mapped["groups"], json!(["admins"]), "non-strings dropped");
        assert_eq!(mapped["email_verified"], Value::Null, "only a boolean counts");

        let missing = Connectors::parse(DOC, |_, _| None).unwrap_err();
        assert!(missing.contains("connectors[0].clientSecretRef"), "{missing}");
        let bad = DOC
            .replace("id: corp", "id: Corp!")
            .replace("https://login", "http://login");
        assert!(
            Connectors::parse(&bad, |_, _| Some("x".into()))
                .unwrap_err()
                .contains("connectors[0].id")
        );
        // A connector called `client` would give people the subjects of clients' own tokens.
        let posing = DOC.replace("id: corp", "id: client");
        assert!(
            Connectors::parse(&posing, |_, _| Some("x".into()))
                .unwrap_err()
                .contains("'client' is reserved")
        );
        let insecure = DOC.replace("https://login", "http://login");
        assert!(
            Connectors::parse(&insecure, |_, _| Some("x".into()))
                .unwrap_err()
                .contains("https")
        );
    }

    #[test]
    fn an_upstreams_word_on_factors_counts_only_when_trusted() {
        let parse = |doc: &str| Connectors::parse(doc, |_, _| Some("x".into())).unwrap();
        let upstream = json!({"amr": ["pwd", "otp", "mfa", "made-up", "pwd"], "acr": "gold"});
        let untrusted = parse(DOC);
        assert!(untrusted.get("corp").unwrap().auth_methods(&upstream).is_empty());
        let trusted = parse(&format!(
            "{DOC}    authContext: {{trust: true, mfaAcrValues: [gold]}}\n"
        ));
        let corp = trusted.get("corp").unwrap();
        assert_eq!(
            corp.auth_methods(&upstream),
            ["mfa", "otp", "pwd"],
            "known values, once"
        );
        assert_eq!(
            corp.auth_methods(&json!({"amr": ["pwd"], "acr": "gold"})),
            ["pwd", "mfa"]
        );
        assert_eq!(corp.auth_methods(&json!({"amr": ["pwd"], "acr": "silver"})), ["pwd"]);
        assert_eq!(
            corp.auth_methods(&json!({"amr": "mfa"})),
            Vec::<String>::new(),
            "amr is a list"
        );
    }

    #[test]
    fn mounted_secrets_stay_inside_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("corp")).unwrap();
        std::fs::write(dir.path().join("corp/client-secret"), "x").unwrap();
        assert_eq!(
            mounted_secret(dir.path(), "corp", "client-secret").as_deref(),
            Some("x")
        );
        assert_eq!(mounted_secret(dir.path(), "..", "etc"), None);
        assert_eq!(mounted_secret(dir.path(), "corp", "../corp/client-secret"), None);
    }
}
