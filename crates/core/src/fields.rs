//! The words every judgement of a resource uses, below all of them: an error naming a field,
//! durations, DNS labels, and the longest token lifetime (claims and keys both keep things
//! that long).

use std::fmt;
use std::time::Duration;

/// One invalid field, named by its path (`spec.scopes[1]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins field errors into one status message.
pub fn describe(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Parses a duration such as `15m`, `1h30m` or `720h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("'{value}' is not a duration like 90s, 15m or 24h ({e})"))
}

/// Kubernetes DNS-1123 label (namespace names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Longest access token lifetime; retired keys must stay published at least this long.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
