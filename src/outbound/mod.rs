//! Every call kauth makes to another server goes through here: upstream identity providers'
//! discovery and token endpoints, the OTLP collector, `kauth login`'s issuer, and (next) a
//! client's `jwksUri` and relying parties' back-channel logout URIs. One HTTP client (hyper
//! with rustls on aws-lc-rs, the system's trust roots plus an optional CA), and for every call
//! a connect timeout, an overall timeout, a response size cap, retries with backoff where the
//! caller asks for them, a [`Reach`] that keeps tenant-supplied targets off private addresses,
//! and metrics by purpose and outcome. Plain http only where the URL says so (loopback issuers
//! in tests and local development); no redirects are followed: an exchange must hit exactly
//! the URL it was given.

mod oidc;
pub mod reach;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub use oidc::Discovered;
use reach::GuardedResolver;
pub use reach::Reach;

use crate::metrics::OutboundMetrics;

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A request: its body is bytes in memory, so a retry can send it again.
pub type Request = http::Request<Vec<u8>>;
/// A response, its body read whole (at most the size cap).
pub type Response = http::Response<Vec<u8>>;

/// An outbound call failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// Largest response read (discovery, keys, tokens are a few KiB).
const RESPONSE_LIMIT: usize = 1 << 20;
/// Longest one attempt may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often, and how patiently, a call is retried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each further one.
    pub first_delay: Duration,
}

impl Retry {
    /// One attempt.
    pub const ONCE: Self = Self {
        attempts: 1,
        first_delay: Duration::ZERO,
    };
}

/// The outbound HTTP client (cheap to clone).
#[derive(Clone)]
pub struct Outbound {
    client: Option<HttpsClient>,
    reach: Reach,
    metrics: OutboundMetrics,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("reach", &self.reach)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// A client trusting the system's roots and, if given, the CA certificates in `extra_ca`
    /// (PEM), calling only where `reach` permits, counting into `metrics`.
    pub fn new(extra_ca: Option<&[u8]>, reach: Reach, metrics: OutboundMetrics) -> Result<Self, HttpError> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_ca {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| HttpError(format!("the CA file is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| HttpError(format!("unusable CA certificate: {e}")))?;
            }
        }
        if roots.is_empty() {
            // Plain-http targets (loopback, tests) still work; https ones fail per request.
            tracing::warn!("no TLS trust roots on this system: https servers cannot be verified");
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { reach: reach.clone() });
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Self {
            client: Some(client),
            reach,
            metrics,
        })
    }

    /// A client for targets the platform configured (anywhere), or, when this system has no
    /// usable TLS setup, one whose every call fails saying so.
    pub fn for_platform(metrics: OutboundMetrics) -> Self {
        Self::new(None, Reach::Anywhere, metrics.clone())
            .inspect_err(|e| tracing::warn!(error = %e, "outbound calls are unavailable"))
            .unwrap_or(Self {
                client: None,
                reach: Reach::Anywhere,
                metrics,
            })
    }

    /// Sends one request, once (see [`Outbound::send_with_retry`]); `purpose` labels its metrics.
    pub async fn send(&self, purpose: &'static str, request: Request) -> Result<Response, HttpError> {
        self.send_with_retry(purpose, request, Retry::ONCE).await
    }

    /// Sends a request, again after a connection failure, a timeout, a 429 or a 5xx answer,
    /// up to `retry.attempts` in all; the last answer or failure is returned.
    pub async fn send_with_retry(
        &self,
        purpose: &'static str,
        request: Request,
        retry: Retry,
    ) -> Result<Response, HttpError> {
        let mut delay = retry.first_delay;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let (result, outcome) = match self.attempt(clone_request(&request)).await {
                Ok(response) => {
                    let outcome = answered(response.status());
                    (Ok(response), outcome)
                }
                Err((failure, e)) => (Err(e), failure),
            };
            self.metrics.observe(purpose, outcome, started.elapsed());
            let retriable = matches!(
                outcome,
                "timeout" | "connect_error" | "server_error" | "too_many_requests"
            );
            if !retriable || attempt >= retry.attempts {
                return result;
            }
            tracing::debug!(purpose, outcome, attempt, "outbound call failed; trying again");
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
            attempt += 1;
        }
    }

    /// One attempt; a failure comes with its metric label.
    async fn attempt(&self, request: Request) -> Result<Response, (&'static str, HttpError)> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| ("unavailable", HttpError("no TLS trust roots on this system".into())))?;
        // An address written as the host is never resolved, so the resolver cannot judge it.
        if let Some(ip) = request.uri().host().and_then(literal_ip)
            && !self.reach.permits(ip)
        {
            return Err(("refused", HttpError(reach::refusal(ip))));
        }
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, http_body_util::Full::new(bytes::Bytes::from(body)));
        // One deadline for the whole attempt: answer and body together.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let response = tokio::time::timeout_at(deadline, client.request(request))
            .await
            .map_err(|_| ("timeout", HttpError(TIMED_OUT.into())))?
            .map_err(|e| {
                if is_refused(&e) {
                    ("refused", HttpError(reach::REFUSED.into()))
                } else {
                    ("connect_error", HttpError(describe(&e)))
                }
            })?;
        let (parts, body) = response.into_parts();
        let bytes = tokio::time::timeout_at(deadline, http_body_util::Limited::new(body, RESPONSE_LIMIT).collect())
            .await
            .map_err(|_| ("timeout", HttpError(TIMED_OUT.into())))?
            .map_err(|e| ("read_error", HttpError(e.to_string())))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, bytes.to_vec()))
    }
}

const TIMED_OUT: &str = "timed out";

fn clone_request(request: &Request) -> Request {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

fn literal_ip(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// A connection failure in words, its causes included (hyper's Display names only the last).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut words = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        words.push_str(": ");
        words.push_str(&cause.to_string());
        source = cause.source();
    }
    words
}

/// True when the guarded resolver refused every address of the target.
fn is_refused(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error;
    let mut source = e.source();
    while let Some(cause) = source {
        // The resolver's error comes back boxed by the connectors in between: its words are
        // what stays the same.
        if cause.to_string() == reach::REFUSED {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The metric label of an answer.
fn answered(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "too_many_requests",
        500.. => "server_error",
        400.. => "client_error",
        _ => "ok",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A server on 127.0.0.1 answering 503 to the first `failures` requests, then 200.
    async fn flaky_server(failures: u32) -> (String, Arc<AtomicU32>) {
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < failures {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "later")
                    } else {
                        (http::StatusCode::OK, "fine")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://127.0.0.1:{port}/"), seen)
    }

    fn get(url: &str) -> Request {
        http::Request::get(url).body(Vec::new()).unwrap()
    }

    fn calls(metrics: &OutboundMetrics, outcome: &'static str) -> u64 {
        metrics
            .calls
            .get_or_create(&crate::metrics::OutboundLabels {
                purpose: "test",
                outcome,
            })
            .get()
    }

    #[tokio::test]
    async fn tenant_targets_on_private_addresses_are_refused_by_address_and_by_name() {
        let (url, seen) = flaky_server(0).await;
        let metrics = OutboundMetrics::default();
        let guarded = Outbound::new(None, Reach::Public { allowed: vec![] }, metrics.clone()).unwrap();
        let err = guarded.send("test", get(&url)).await.unwrap_err();
        assert_eq!(err.0, reach::REFUSED);
        let by_name = url.replace("127.0.0.1", "localhost");
        let err = guarded.send("test", get(&by_name)).await.unwrap_err();
        assert_eq!(err.0, reach::REFUSED, "the same words, naming no address");
        let nowhere = guarded
            .send("test", get("http://no-such-name.invalid/"))
            .await
            .unwrap_err();
        assert_eq!(nowhere.0, reach::REFUSED, "a name without addresses reads the same");
        assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing reached the server");
        assert_eq!(calls(&metrics, "refused"), 3);

        let allowed = Reach::Public {
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
        };
        let permitted = Outbound::new(None, allowed, metrics.clone()).unwrap();
        let response = permitted.send("test", get(&url)).await.unwrap();
        assert_eq!(response.body(), b"fine");
        assert_eq!(calls(&metrics, "ok"), 1);
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_with_backoff_up_to_the_limit() {
        let (url, seen) = flaky_server(2).await;
        let metrics = OutboundMetrics::default();
        let client = Outbound::new(None, Reach::Anywhere, metrics.clone()).unwrap();
        let retry = Retry {
            attempts: 2,
            first_delay: Duration::from_millis(10),
        };
        let response = client.send_with_retry("test", get(&url), retry).await.unwrap();
        assert_eq!(response.status(), 503, "two attempts, both failed: the last answer");
        let retry = Retry { attempts: 3, ..retry };
        let response = client.send_with_retry("test", get(&url), retry).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        assert_eq!(calls(&metrics, "server_error"), 2);
        assert_eq!(calls(&metrics, "ok"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_has_one_deadline_for_its_answer_and_its_body() {
        // Headers at 6 s, the body 6 s later: each within TIMEOUT, together over it.
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(6)).await;
                let body = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"late"))
                });
                axum::body::Body::from_stream(body)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Outbound::new(None, Reach::Anywhere, OutboundMetrics::default()).unwrap();
        let err = client
            .send("test", get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert_eq!(err.0, TIMED_OUT);
    }

    #[tokio::test]
    async fn a_response_over_the_size_cap_is_not_read() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { vec![b'x'; RESPONSE_LIMIT + 1] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Outbound::new(None, Reach::Anywhere, OutboundMetrics::default()).unwrap();
        let err = client
            .send("test", get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert!(err.0.contains("length limit"), "{err}");
    }
}
