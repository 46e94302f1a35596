//! The issuer URL: what every token names as `iss`, and the base of every endpoint URL. Both
//! the provider and the controller (which writes the token URL into Secrets) use it.

/// Longest issuer URL: it is in every token, and templates budget for it.
pub const MAX_LENGTH: usize = 512;

/// The issuer URL and the endpoint URLs derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    /// Issuer URL without a trailing slash.
    pub url: String,
    /// Path part of the issuer ("" or "/prefix"): the routes are served under it.
    pub path: String,
}

impl Issuer {
    /// Parses an issuer URL: http(s), a host, no query or fragment.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim_end_matches('/');
        if url.len() > MAX_LENGTH {
            return Err(format!("issuer is {} characters long; at most {MAX_LENGTH}", url.len()));
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("issuer '{url}' must start with https:// (or http:// for local use)"))?;
        if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace()) {
            return Err(format!("issuer '{url}' may not contain a query, fragment or spaces"));
        }
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, String::new()));
        if host.is_empty() {
            return Err(format!("issuer '{url}' has no host"));
        }
        Ok(Self {
            url: url.to_string(),
            path,
        })
    }

    /// The host of the issuer URL, without port or IPv6 brackets (what a certificate names).
    pub fn host(&self) -> String {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .unwrap_or_default()
    }

    /// Absolute URL of an endpoint path such as `/token`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::Issuer;

    #[test]
    fn issuer_paths() {
        assert_eq!(Issuer::parse("https://auth.example.com/").unwrap().path, "");
        let i = Issuer::parse("https://example.com/kauth").unwrap();
        assert_eq!(i.path, "/kauth");
        assert_eq!(i.endpoint("/token"), "https://example.com/kauth/token");
        assert!(Issuer::parse("ftp://x").is_err());
        assert!(Issuer::parse("https://x/?a=b").is_err());
        assert!(Issuer::parse("https:///path").is_err());
    }
}
