//! Reading an OAuth form body: size limit, content type, and RFC 6749 §3.1's rule that a
//! parameter appears at most once (RFC 8707's `resource` and RFC 8693's `audience` may repeat).

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, header};

use super::error::OAuthError;

/// Largest accepted body. OAuth requests are a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Parameters of a form body.
#[derive(Debug, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Reads and checks the body.
    pub async fn read(headers: &HeaderMap, body: Body) -> Result<Self, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|_| OAuthError::too_large(BODY_LIMIT))?;
        Self::parse(&bytes)
    }

    /// Parses an urlencoded body, refusing repeated parameters.
    pub fn parse(bytes: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(bytes) {
            let repeatable = k == "resource" || k == "audience";
            if !repeatable && pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(OAuthError::invalid_request(format!("parameter '{k}' is repeated")));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self { pairs })
    }

    /// The value of `name`; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_except_resource() {
        assert!(Form::parse(b"scope=a&scope=b").is_err());
        let f = Form::parse(b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&scope=x+y").unwrap();
        assert_eq!(f.all("resource"), ["https://a", "https://b"]);
        assert_eq!(f.get("scope"), Some("x y"));
        assert_eq!(Form::parse(b"scope=").unwrap().get("scope"), None);
    }
}
