//! What a generated credentials Secret holds: the standard keys, the presets a client asks for
//! and its own templated keys. Pure: the controller writes the result into a Secret and
//! standalone into files of the same names, so both modes share one layout.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::crd::{SecretKeys, SecretPreset, SecretSpec, limits};
use crate::fields::FieldError;
use crate::secret_templates::{self, MAX_RENDERED_TOTAL, Size, ValueBounds};

/// Most templated keys per client.
const MAX_TEMPLATES: usize = limits::TEMPLATES;
/// Spring Boot's registration id in the preset's variable names.
const SPRING_PREFIX: &str = "SPRING_SECURITY_OAUTH2_CLIENT_";

/// The values a Secret is made of. Field names are the names templates use.
#[derive(Serialize, Clone, Debug)]
pub struct SecretValues<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub issuer: &'a str,
    pub token_url: &'a str,
    pub token_endpoint_auth_method: &'a str,
    pub scopes: &'a [String],
    pub audiences: &'a [String],
    pub grant_types: &'a [String],
}

/// What kauth knows about a client that its Secret may show, owned; `with_secret` lends it
/// to templates with the secret of the moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientValues {
    pub client_id: String,
    pub issuer: String,
    pub token_url: String,
    pub token_endpoint_auth_method: &'static str,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub grant_types: Vec<String>,
}

impl ClientValues {
    /// The values with `client_secret`.
    pub fn with_secret<'a>(&'a self, client_secret: &'a str) -> SecretValues<'a> {
        SecretValues {
            client_id: &self.client_id,
            client_secret,
            issuer: &self.issuer,
            token_url: &self.token_url,
            token_endpoint_auth_method: self.token_endpoint_auth_method,
            scopes: &self.scopes,
            audiences: &self.audiences,
            grant_types: &self.grant_types,
        }
    }
}

/// A client's validated Secret layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretContents {
    /// Names of the standard keys.
    pub keys: SecretKeys,
    /// Presets, in a fixed order.
    pub presets: Vec<SecretPreset>,
    /// Templated keys: key name → template source.
    pub templates: BTreeMap<String, String>,
}

/// True for a name Kubernetes accepts as a Secret key that is also a plain file name (no `.`
/// or `..`, which standalone would resolve as directories) and not one of kauth's own (see
/// [`is_kauth_key`]).
pub fn is_secret_key(s: &str) -> bool {
    // Kubernetes refuses `.`, `..` and keys starting with `..`.
    !s.is_empty()
        && s != "."
        && !s.starts_with("..")
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && !is_kauth_key(s)
}

/// Names starting with `.kauth` are kauth's own files beside a client's keys in standalone's
/// state (its secret's rotation state, a write in progress): no team's key may take one.
pub fn is_kauth_key(s: &str) -> bool {
    s.starts_with(".kauth")
}

impl SecretContents {
    /// The layout `spec` asks for, with every problem named by field. Templates are compiled
    /// and tried on sample values here, so a typo is an invalid spec rather than a failed write.
    pub fn from_spec(spec: &SecretSpec, errors: &mut Vec<FieldError>) -> Self {
        let keys = spec.keys.clone().unwrap_or_default();
        let mut presets = spec.presets.clone();
        presets.sort();
        presets.dedup();
        let contents = Self {
            keys,
            presets,
            templates: spec.template.clone().unwrap_or_default(),
        };
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        let mut claim = |key: &str, field: String, errors: &mut Vec<FieldError>| {
            if is_kauth_key(key) {
                errors.push(FieldError::new(
                    field,
                    format!("'{key}' is reserved: kauth keeps its own state under .kauth names"),
                ));
            } else if !is_secret_key(key) {
                errors.push(FieldError::new(field, format!("'{key}' is not a valid Secret key")));
            } else if let Some(first) = taken.get(key) {
                errors.push(FieldError::new(field, format!("'{key}' is already the key of {first}")));
            } else {
                taken.insert(key.to_string(), field);
            }
        };
        let k = &contents.keys;
        for (field, key) in [
            ("clientId", &k.client_id),
            ("clientSecret", &k.client_secret),
            ("issuer", &k.issuer),
            ("tokenEndpoint", &k.token_endpoint),
        ] {
            claim(key, format!("spec.secret.keys.{field}"), errors);
        }
        let sample = sample_values();
        for preset in &contents.presets {
            for (key, _) in preset_entries(*preset, &contents.keys, &sample) {
                claim(&key, format!("spec.secret.presets ({preset:?})"), errors);
            }
        }
        if contents.templates.len() > MAX_TEMPLATES {
            errors.push(FieldError::new(
                "spec.secret.template",
                format!("at most {MAX_TEMPLATES} keys"),
            ));
        }
        // Each template is bounded before it is tried (secret_templates.rs), and all of them
        // together must fit a Secret.
        let bounds = value_bounds();
        let mut total: u64 = 0;
        for (key, source) in &contents.templates {
            let field = format!("spec.secret.template.{key}");
            claim(key, field.clone(), errors);
            if source.len() > limits::TEMPLATE_SOURCE {
                errors.push(FieldError::new(
                    field,
                    format!("is {} bytes long; at most {}", source.len(), limits::TEMPLATE_SOURCE),
                ));
                continue;
            }
            match secret_templates::check(source, &bounds)
                .and_then(|bound| secret_templates::render(source, &sample).map(|_| bound))
            {
                Ok(bound) => total = total.saturating_add(bound),
                Err(e) => errors.push(FieldError::new(field, e)),
            }
        }
        if total > MAX_RENDERED_TOTAL {
            errors.push(FieldError::new(
                "spec.secret.template",
                format!("all templates together may render up to {total} bytes; at most {MAX_RENDERED_TOTAL}"),
            ));
        }
        contents
    }

    /// Every key and value of the Secret: standard keys, presets, then templates.
    pub fn render(&self, values: &SecretValues) -> Result<BTreeMap<String, String>, String> {
        let k = &self.keys;
        let mut out = BTreeMap::from([
            (k.client_id.clone(), values.client_id.to_string()),
            (k.client_secret.clone(), values.client_secret.to_string()),
            (k.issuer.clone(), values.issuer.to_string()),
            (k.token_endpoint.clone(), values.token_url.to_string()),
        ]);
        for preset in &self.presets {
            out.extend(preset_entries(*preset, k, values));
        }
        for (key, source) in &self.templates {
            let value =
                secret_templates::render(source, values).map_err(|e| format!("spec.secret.template.{key}: {e}"))?;
            out.insert(key.clone(), value);
        }
        Ok(out)
    }
}

/// The largest value of each name a template may use, from the schema's limits.
fn value_bounds() -> ValueBounds {
    let id = (limits::NAMESPACE + 1 + limits::OBJECT_NAME) as u64;
    let issuer = crate::issuer::MAX_LENGTH as u64;
    ValueBounds(vec![
        ("client_id", Size::string(id)),
        ("client_secret", Size::string(64)),
        ("issuer", Size::string(issuer)),
        ("token_url", Size::string(issuer + 16)),
        ("token_endpoint_auth_method", Size::string(32)),
        // `openid` and the granted scopes: scope-tokens are shown as they are in a list (no
        // quotes, backslashes or control characters); a URI's `"` or `\` doubles.
        (
            "scopes",
            Size::list(limits::SCOPES as u64 + 1, limits::SCOPE_VALUE as u64, 1),
        ),
        ("audiences", Size::list(limits::AUDIENCES as u64, limits::URI as u64, 2)),
        ("grant_types", Size::list(limits::GRANT_TYPES as u64, 64, 1)),
    ])
}

fn sample_values() -> SecretValues<'static> {
    const SCOPES: &[String] = &[];
    SecretValues {
        client_id: "ns.client",
        client_secret: "secret",
        issuer: "https://kauth.example",
        token_url: "https://kauth.example/token",
        token_endpoint_auth_method: "client_secret_basic",
        scopes: SCOPES,
        audiences: SCOPES,
        grant_types: SCOPES,
    }
}

/// The keys and values a preset adds.
fn preset_entries(preset: SecretPreset, keys: &SecretKeys, v: &SecretValues) -> Vec<(String, String)> {
    match preset {
        SecretPreset::SpringBoot => {
            // Spring picks the flow from the registration; a client that signs people in uses
            // the code flow, otherwise its own tokens.
            let grant = ["authorization_code", "client_credentials"]
                .into_iter()
                .find(|g| v.grant_types.iter().any(|have| have == g))
                .or(v.grant_types.first().map(String::as_str))
                .unwrap_or("client_credentials");
            let registration = |name: &str| format!("{SPRING_PREFIX}REGISTRATION_KAUTH_{name}");
            let provider = |name: &str| format!("{SPRING_PREFIX}PROVIDER_KAUTH_{name}");
            vec![
                (registration("CLIENT_ID"), v.client_id.to_string()),
                (registration("CLIENT_SECRET"), v.client_secret.to_string()),
                (
                    registration("CLIENT_AUTHENTICATION_METHOD"),
                    v.token_endpoint_auth_method.to_string(),
                ),
                (registration("AUTHORIZATION_GRANT_TYPE"), grant.to_string()),
                (registration("SCOPE"), v.scopes.join(",")),
                (registration("PROVIDER"), "kauth".to_string()),
                (provider("ISSUER_URI"), v.issuer.to_string()),
                (provider("TOKEN_URI"), v.token_url.to_string()),
            ]
        }
        SecretPreset::OAuth2Proxy => vec![
            ("OAUTH2_PROXY_PROVIDER".into(), "oidc".into()),
            ("OAUTH2_PROXY_OIDC_ISSUER_URL".into(), v.issuer.to_string()),
            ("OAUTH2_PROXY_CLIENT_ID".into(), v.client_id.to_string()),
            ("OAUTH2_PROXY_CLIENT_SECRET".into(), v.client_secret.to_string()),
            ("OAUTH2_PROXY_SCOPE".into(), v.scopes.join(" ")),
        ],
        SecretPreset::Dotenv => {
            // Values are URLs, ids and URL-safe secrets: no quoting needed, and none is added
            // so every .env reader sees the same bytes.
            let lines = [
                (&keys.client_id, v.client_id),
                (&keys.client_secret, v.client_secret),
                (&keys.issuer, v.issuer),
                (&keys.token_endpoint, v.token_url),
            ]
            .iter()
            .map(|(k, val)| format!("{k}={val}\n"))
            .collect::<String>();
            vec![(".env".into(), lines)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(scopes: &'a [String], grants: &'a [String]) -> SecretValues<'a> {
        SecretValues {
            client_id: "shop.web",
            client_secret: "s3cr3t",
            issuer: "https://id.example",
            token_url: "https://id.example/token",
            token_endpoint_auth_method: "client_secret_post",
            scopes,
            audiences: &[],
            grant_types: grants,
        }
    }

    fn contents(spec: SecretSpec) -> Result<SecretContents, Vec<FieldError>> {
        let mut errors = Vec::new();
        let c = SecretContents::from_spec(&spec, &mut errors);
        if errors.is_empty() { Ok(c) } else { Err(errors) }
    }

    #[test]
    fn presets_produce_their_documented_keys() {
        let c = contents(SecretSpec {
            presets: vec![
                SecretPreset::Dotenv,
                SecretPreset::SpringBoot,
                SecretPreset::OAuth2Proxy,
            ],
            ..Default::default()
        })
        .unwrap();
        let scopes = ["openid".to_string(), "orders.read".to_string()];
        let grants = ["client_credentials".to_string(), "authorization_code".to_string()];
        let out = c.render(&values(&scopes, &grants)).unwrap();
        let get = |k: &str| out.get(k).unwrap_or_else(|| panic!("no {k} in {out:?}")).as_str();
        assert_eq!(get("CLIENT_SECRET"), "s3cr3t");
        assert_eq!(
            get("SPRING_SECURITY_OAUTH2_CLIENT_REGISTRATION_KAUTH_CLIENT_ID"),
            "shop.web"
        );
        assert_eq!(
            get("SPRING_SECURITY_OAUTH2_CLIENT_REGISTRATION_KAUTH_SCOPE"),
            "openid,orders.read"
        );
        assert_eq!(
            get("SPRING_SECURITY_OAUTH2_CLIENT_REGISTRATION_KAUTH_AUTHORIZATION_GRANT_TYPE"),
            "authorization_code"
        );
        assert_eq!(
            get("SPRING_SECURITY_OAUTH2_CLIENT_REGISTRATION_KAUTH_CLIENT_AUTHENTICATION_METHOD"),
            "client_secret_post"
        );
        assert_eq!(
            get("SPRING_SECURITY_OAUTH2_CLIENT_PROVIDER_KAUTH_ISSUER_URI"),
            "https://id.example"
        );
        assert_eq!(get("OAUTH2_PROXY_CLIENT_SECRET"), "s3cr3t");
        assert_eq!(get("OAUTH2_PROXY_SCOPE"), "openid orders.read");
        assert_eq!(
            get(".env"),
            "CLIENT_ID=shop.web\nCLIENT_SECRET=s3cr3t\nISSUER_URL=https://id.example\nTOKEN_URL=https://id.example/token\n"
        );
    }

    #[test]
    fn templates_render_values_and_refuse_typos_loops_and_clashes() {
        let c = contents(SecretSpec {
            template: Some(BTreeMap::from([
                ("AUTH".into(), "{{ client_id }}:{{ client_secret }}".into()),
                ("SCOPES".into(), "{{ scopes | join(' ') }}".into()),
            ])),
            ..Default::default()
        })
        .unwrap();
        let scopes = ["a".to_string(), "b".to_string()];
        let out = c.render(&values(&scopes, &[])).unwrap();
        assert_eq!(out["AUTH"], "shop.web:s3cr3t");
        assert_eq!(out["SCOPES"], "a b");

        for (key, source, why) in [
            ("TYPO", "{{ client_secert }}", "undefined"),
            ("SYNTAX", "{{ client_id ", "syntax"),
            ("LOOP", "{% for i in range(100000) %}{{ i }}{% endfor %}", "{% for %}"),
            (
                "BOMB",
                "{{ (\"x\" * 100000000 ~ \"x\" * 100000000) | length }}",
                "arithmetic",
            ),
            (
                "CLIENT_ID",
                "{{ client_id }}",
                "already the key of spec.secret.keys.clientId",
            ),
            ("..", "x", "not a valid Secret key"),
        ] {
            let errors = contents(SecretSpec {
                template: Some(BTreeMap::from([(key.to_string(), source.to_string())])),
                ..Default::default()
            })
            .expect_err(key);
            let text = crate::fields::describe(&errors);
            assert!(text.contains(&format!("spec.secret.template.{key}")), "{text}");
            assert!(text.to_lowercase().contains(&why.to_lowercase()), "{key}: {text}");
        }
        let clash = contents(SecretSpec {
            presets: vec![SecretPreset::OAuth2Proxy],
            template: Some(BTreeMap::from([("OAUTH2_PROXY_SCOPE".into(), "x".into())])),
            ..Default::default()
        })
        .expect_err("a template may not replace a preset's key");
        assert!(crate::fields::describe(&clash).contains("OAuth2Proxy"));
    }
}
