//! What a kube-apiserver needs to accept kauth's ID tokens: the OIDC flags (every version)
//! and the structured `AuthenticationConfiguration` (Kubernetes 1.30 and later). Usernames and
//! groups get a prefix, so a person can never be taken for a ServiceAccount
//! (`system:serviceaccount:...`), a node or a built-in group (`system:...`).

use serde_json::json;

/// The settings the output is made from.
#[derive(Clone, Debug)]
pub struct ClusterAuth {
    /// kauth's issuer URL (https: the apiserver refuses anything else).
    pub issuer: String,
    /// The client id kubectl signs in with: the ID token's audience.
    pub client_id: String,
    /// PEM of the CA that signed kauth's certificate, when the apiserver does not trust it
    /// already.
    pub ca_pem: Option<String>,
    /// Where that CA is on the apiserver's host (for `--oidc-ca-file`).
    pub ca_file: Option<String>,
    /// Put before every username and group, e.g. `kauth:`.
    pub prefix: String,
}

impl ClusterAuth {
    /// Why these settings cannot work, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if !self.issuer.starts_with("https://") {
            return Some(format!(
                "the apiserver only trusts an https issuer, not {}",
                self.issuer
            ));
        }
        if self.prefix.is_empty() || self.prefix.starts_with("system:") {
            return Some(format!(
                "prefix '{}' would let a person's name or group pass for a built-in one: use e.g. kauth:",
                self.prefix
            ));
        }
        None
    }

    /// The kube-apiserver flags, one per line.
    pub fn flags(&self) -> String {
        let mut flags = vec![
            format!("--oidc-issuer-url={}", self.issuer),
            format!("--oidc-client-id={}", self.client_id),
            "--oidc-username-claim=sub".to_string(),
            format!("--oidc-username-prefix={}", self.prefix),
            "--oidc-groups-claim=groups".to_string(),
            format!("--oidc-groups-prefix={}", self.prefix),
            // ID tokens are RS256; a client's own tokens for the cluster (CI) are signed with
            // the access-token key, ES256 by default.
            "--oidc-signing-algs=RS256,ES256".to_string(),
        ];
        if let Some(file) = &self.ca_file {
            flags.push(format!("--oidc-ca-file={file}"));
        }
        flags.join("\n") + "\n"
    }

    /// The `AuthenticationConfiguration` (the `--authentication-config` file), as YAML.
    pub fn authentication_configuration(&self) -> String {
        let mut issuer = json!({
            "url": self.issuer,
            "audiences": [self.client_id],
        });
        if let Some(pem) = &self.ca_pem {
            issuer["certificateAuthority"] = json!(pem);
        }
        let config = json!({
            "apiVersion": "apiserver.config.k8s.io/v1beta1",
            "kind": "AuthenticationConfiguration",
            "jwt": [{
                "issuer": issuer,
                "claimMappings": {
                    "username": {"claim": "sub", "prefix": self.prefix},
                    "groups": {"claim": "groups", "prefix": self.prefix},
                },
                // A person who was never verified cannot claim an email-based identity.
                "claimValidationRules": [{
                    "expression": "!has(claims.email) || claims.email_verified == true",
                    "message": "the email of an ID token must be verified",
                }],
            }],
        });
        serde_saphyr::to_string(&config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClusterAuth {
        ClusterAuth {
            issuer: "https://auth.example.com".into(),
            client_id: "kauth.kubectl".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            ca_file: Some("/etc/kubernetes/kauth-ca.crt".into()),
            prefix: "kauth:".into(),
        }
    }

    #[test]
    fn flags_and_configuration_name_the_issuer_audience_claims_and_prefixes() {
        let s = settings();
        assert_eq!(s.problem(), None);
        let flags = s.flags();
        for line in [
            "--oidc-issuer-url=https://auth.example.com",
            "--oidc-client-id=kauth.kubectl",
            "--oidc-username-prefix=kauth:",
            "--oidc-groups-claim=groups",
            "--oidc-ca-file=/etc/kubernetes/kauth-ca.crt",
        ] {
            assert!(flags.lines().any(|l| l == line), "{line} in {flags}");
        }
        let yaml = s.authentication_configuration();
        let config: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let jwt = &config["jwt"][0];
        assert_eq!(jwt["issuer"]["url"], "https://auth.example.com");
        assert_eq!(jwt["issuer"]["audiences"][0], "kauth.kubectl");
        assert!(
            jwt["issuer"]["certificateAuthority"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert_eq!(jwt["claimMappings"]["username"]["prefix"], "kauth:");
        assert_eq!(jwt["claimMappings"]["groups"]["claim"], "groups");
    }

    #[test]
    fn an_http_issuer_or_a_missing_or_system_prefix_is_refused() {
        let mut s = settings();
        s.issuer = "http://auth.example.com".into();
        assert!(s.problem().unwrap().contains("https"));
        let mut s = settings();
        s.prefix = String::new();
        assert!(s.problem().is_some());
        s.prefix = "system:".into();
        assert!(s.problem().is_some());
    }
}
