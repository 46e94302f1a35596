//! The audit trail: one JSON line per security-relevant event (a token issued or refused, a
//! sign-in, a consent, a logout, a revocation, a device answered; and from the controller a
//! secret created, rotated or retired, a claim lost to another resource), on a stream of its own:
//! standard output, where the `"audit": "kauth/v1"` field tells the lines apart, or a file.
//! A record names the client, its namespace, the person, the source address and the reason;
//! never a secret, a token or a code.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// Marks every audit line (and its format's version).
pub const MARKER: &str = "kauth/v1";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    TokenIssued,
    TokenRefused,
    SignIn,
    SignInFailed,
    ConsentGiven,
    ConsentDenied,
    Logout,
    Revocation,
    DeviceApproved,
    DeviceDenied,
    /// The controller generated a client's first secret, or a new one for a Secret that was
    /// deleted or unreadable.
    SecretCreated,
    /// The controller rotated a client secret.
    SecretRotated,
    /// A rotated-out client secret stopped working.
    PreviousSecretRetired,
    /// A resource lost a client id, Scope value or audience to another claimant.
    ClaimConflict,
    /// A logout token was sent to a client (the reason says how it went).
    BackchannelLogout,
    /// A person enrolled a second factor (a TOTP app, with fresh recovery codes).
    SecondFactorEnrolled,
    /// A person proved a second factor (the reason says which: a code or a recovery code).
    SecondFactorUsed,
    /// A second factor was refused (a wrong, reused or throttled code), or its removal.
    SecondFactorFailed,
    /// A person removed their second factor on their account page.
    SecondFactorRemoved,
    /// A person took an app back on their account page (the reason names the client object).
    AppRevoked,
    /// A person ended all their sessions on their account page.
    SignedOutEverywhere,
}

/// One audit record; empty fields are left out.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Record<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<&'a str>,
    /// The resource an event of the controller is about (`OAuthClient/name`, `Scope/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    /// Why it was refused (an OAuth error code and its description), or what was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    audit: &'static str,
    time: String,
    event: Event,
    /// The namespace of `client_id`'s OAuthClient, when it is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(flatten)]
    record: &'a Record<'a>,
}

/// Where audit lines go (none: off).
#[derive(Default)]
pub struct Audit {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("on", &self.sink.is_some()).finish()
    }
}

impl Audit {
    /// `--audit-log`: `stdout`, `off`, or a file appended to.
    pub fn open(to: &str) -> std::io::Result<Self> {
        Ok(match to {
            "off" => Self::default(),
            "stdout" | "-" => Self::to(Box::new(std::io::stdout())),
            path => Self::to(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(path))?,
            )),
        })
    }

    fn to(sink: Box<dyn Write + Send>) -> Self {
        Self {
            sink: Some(Mutex::new(sink)),
        }
    }

    /// Writes one record, whole, as one line. A sink that fails is reported in the log and
    /// the request goes on (the trail is for after the fact; it never blocks a sign-in).
    pub fn record(&self, event: Event, record: &Record<'_>, namespace: Option<&str>) {
        let Some(sink) = &self.sink else { return };
        let line = Line {
            audit: MARKER,
            time: jiff::Timestamp::now().to_string(),
            event,
            namespace,
            record,
        };
        let mut text = serde_json::to_vec(&line).expect("an audit record serialises");
        text.push(b'\n');
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.write_all(&text).and_then(|_| sink.flush()) {
            tracing::error!(error = %e, "cannot write the audit trail");
        }
    }
}

/// `text` with every `'quoted'` word that `known` does not vouch for replaced by `'…'`: a
/// refusal's description quotes what the caller asked for, which may be anything they typed.
pub fn redact_quoted(text: &str, known: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('\'');
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('\'');
        let quoted = i % 2 == 0;
        out.push_str(if quoted && !known(part) { "…" } else { part });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_nobody_vouches_for_are_redacted() {
        let known = |w: &str| w == "orders.read";
        assert_eq!(
            redact_quoted("scope 'orders.read' is fine, scope 'hunter2' is not", known),
            "scope 'orders.read' is fine, scope '…' is not"
        );
        assert_eq!(redact_quoted("no quotes", known), "no quotes");
        assert_eq!(redact_quoted("dangling 'quote", known), "dangling '…");
    }

    #[test]
    fn a_record_is_one_marked_line_without_empty_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(path.to_str().unwrap()).unwrap();
        audit.record(
            Event::TokenRefused,
            &Record {
                client_id: Some("shop.web"),
                source: Some("10.0.0.7".parse().unwrap()),
                reason: Some("invalid_client: client authentication failed"),
                ..Default::default()
            },
            Some("shop"),
        );
        audit.record(Event::Logout, &Record::default(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["audit"], MARKER);
        assert_eq!(lines[0]["event"], "token_refused");
        assert_eq!(lines[0]["source"], "10.0.0.7");
        assert_eq!(lines[0]["namespace"], "shop");
        assert!(lines[0].get("subject").is_none());
        assert_eq!(lines[1]["event"], "logout");
        Audit::open("off")
            .unwrap()
            .record(Event::Logout, &Record::default(), None);
    }
}
