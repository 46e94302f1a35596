//! The HTTP client kauth's OpenID exchanges go through when kauth is the client: upstream
//! identity providers (federation) and `kauth login`. hyper with rustls (aws-lc-rs), the
//! system's trust roots plus an optional CA; plain http only where the URL says so (loopback
//! issuers in tests and local development). No redirects are followed: the OAuth exchanges
//! must hit exactly the endpoints discovery named.

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// An OpenID client configured from its issuer's discovery document (authorization and token
/// endpoints known; userinfo maybe).
pub type Discovered = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// An HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// Largest response read (discovery, keys, tokens are a few KiB).
const RESPONSE_LIMIT: usize = 1 << 20;
/// Longest one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The client `openidconnect` sends its requests with (None: no trust roots on this system).
#[derive(Clone, Debug)]
pub struct OidcHttp(Option<HttpsClient>);

impl OidcHttp {
    /// A client trusting the system's roots and, if given, the CA certificates in `extra_ca`
    /// (PEM).
    pub fn new(extra_ca: Option<&[u8]>) -> Result<Self, HttpError> {
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
            // Plain-http issuers (loopback, tests) still work; https ones fail per request.
            tracing::warn!("no TLS trust roots on this system: https issuers cannot be verified");
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self(Some(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
        )))
    }

    /// A client whose every exchange fails (no trust roots): upstream sign-in reports it.
    pub fn unavailable() -> Self {
        Self(None)
    }

    /// Sends one request, with a timeout and a size limit.
    pub async fn send(&self, request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, HttpError> {
        use http_body_util::BodyExt;
        let client = self
            .0
            .as_ref()
            .ok_or_else(|| HttpError("no TLS trust roots on this system".into()))?;
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, http_body_util::Full::new(bytes::Bytes::from(body)));
        let response = tokio::time::timeout(TIMEOUT, client.request(request))
            .await
            .map_err(|_| HttpError("timed out".into()))?
            .map_err(|e| HttpError(format!("{e:?}")))?;
        let (parts, body) = response.into_parts();
        let bytes = http_body_util::Limited::new(body, RESPONSE_LIMIT)
            .collect()
            .await
            .map_err(|e| HttpError(e.to_string()))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, bytes.to_vec()))
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
