//! kauth's HTTP server loop, for the provider and the operations listener alike: every
//! connection gets a header-read timeout (which also ends idle keep-alive connections), every
//! request a time limit, and the number of open connections is capped, so slow or idle
//! clients cannot hold what others need. The client address for throttling comes from the
//! peer, or from `X-Forwarded-For` / `Forwarded` when the peer is a trusted proxy.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Limits and trust settings of the listeners and the grant store (the same flags in both
/// modes).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeOptions {
    /// How long a client has to send a request's headers; a keep-alive connection idle this
    /// long is closed too.
    #[arg(long, env = "KAUTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = crate::validation::parse_duration)]
    pub header_read_timeout: Duration,
    /// How long one request may take, its body included (a slow upload is cut off).
    #[arg(long, env = "KAUTH_REQUEST_TIMEOUT", default_value = "30s", value_parser = crate::validation::parse_duration)]
    pub request_timeout: Duration,
    /// Most connections open at once per listener; more wait in the kernel's backlog.
    #[arg(long, env = "KAUTH_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A proxy (CIDR, e.g. 10.0.0.0/8) whose forwarding header (`--forwarded-header`) names
    /// the client; repeatable or comma-separated. None by default: the peer is the client.
    #[arg(long = "trusted-proxy", env = "KAUTH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// The one header the trusted proxies manage: `x-forwarded-for` (what most ingress
    /// controllers append to) or `forwarded` (RFC 7239). The other is never read: a client
    /// could write it and pick its own address.
    #[arg(long, env = "KAUTH_FORWARDED_HEADER", value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub forwarded_header: ForwardedHeader,
    /// Networks (CIDR) that addresses teams write, such as a client's `jwksUri`, may reach
    /// besides public addresses; repeatable or comma-separated. None by default: no team can
    /// make kauth call into the cluster.
    #[arg(
        long = "outbound-allow-network",
        env = "KAUTH_OUTBOUND_ALLOWED_NETWORKS",
        value_delimiter = ','
    )]
    pub outbound_allowed_networks: Vec<IpNet>,
    /// A client assertion's `aud` must be the issuer itself (RFC 7523bis); by default an
    /// endpoint's URL is accepted too, as older client libraries send it.
    #[arg(long, env = "KAUTH_STRICT_ASSERTION_AUDIENCE")]
    pub strict_assertion_audience: bool,
    /// Accept authorization requests only as pushed first to /par (RFC 9126), from every
    /// client; discovery says so (`require_pushed_authorization_requests`).
    #[arg(long, env = "KAUTH_REQUIRE_PUSHED_AUTHORIZATION_REQUESTS")]
    pub require_pushed_authorization_requests: bool,
    /// DPoP proofs must carry a nonce kauth handed out (RFC 9449 §8, `DPoP-Nonce`), so a proof
    /// made in advance is useless minutes later; clients retry once on `use_dpop_nonce`.
    #[arg(long, env = "KAUTH_DPOP_NONCE")]
    pub dpop_nonce: bool,
    /// The key people's second-factor secrets are sealed with at rest (32 bytes, raw or
    /// base64; chart: a Secret). Without it second factors cannot be enrolled or checked
    /// (standalone keeps one in its state folder).
    #[arg(long, env = "KAUTH_SECOND_FACTOR_KEY_FILE")]
    pub second_factor_key_file: Option<std::path::PathBuf>,
    /// Every local person proves a second factor (a code from an authenticator app) at each
    /// sign-in, enrolling one at the first.
    #[arg(long, env = "KAUTH_REQUIRE_SECOND_FACTOR")]
    pub require_second_factor: bool,
    /// Local people in these groups (of `users.yaml`) prove a second factor at each sign-in,
    /// enrolling one at the first (repeat, or comma-separated).
    #[arg(
        long = "require-second-factor-for-group",
        env = "KAUTH_REQUIRE_SECOND_FACTOR_GROUPS",
        value_delimiter = ','
    )]
    pub require_second_factor_groups: Vec<String>,
    /// Most password checks at once (each holds ~19 MiB); default: sized from the memory limit.
    #[arg(long, env = "KAUTH_MAX_PASSWORD_CHECKS")]
    pub max_password_checks: Option<usize>,
    /// Longest a grant-store operation may take (waiting for a connection included) before the
    /// request fails fast with 503.
    #[arg(long, env = "KAUTH_STORE_TIMEOUT", default_value = "2s", value_parser = crate::validation::parse_duration)]
    pub store_timeout: Duration,
    /// SQLite: concurrent writes share one commit (one fsync). `false` commits each on its
    /// own, which is slower and only there to compare.
    #[arg(long, env = "KAUTH_STORE_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub store_group_commit: bool,
    /// The audit trail: `stdout` (its lines carry `"audit": "kauth/v1"`), `off`, or a file
    /// appended to. Default: stdout for `kauth run`, off for standalone.
    #[arg(long, env = "KAUTH_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// How often this replica reports which client secrets were used to the grant store
    /// (status `secretUsage`, `retirePrevious: WhenUnused`).
    #[arg(long, env = "KAUTH_SECRET_USE_REPORT_INTERVAL", default_value = "30s", value_parser = crate::validation::parse_duration)]
    pub secret_use_report_interval: Duration,
}

impl ServeOptions {
    /// The audit trail these options ask for, `default` when they name none.
    pub fn audit(&self, default: &str) -> std::io::Result<crate::audit::Audit> {
        crate::audit::Audit::open(self.audit_log.as_deref().unwrap_or(default))
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            require_pushed_authorization_requests: false,
            outbound_allowed_networks: Vec::new(),
            strict_assertion_audience: false,
            dpop_nonce: false,
            second_factor_key_file: None,
            require_second_factor: false,
            require_second_factor_groups: Vec::new(),
            max_password_checks: None,
            store_timeout: crate::store::DEFAULT_DEADLINE,
            store_group_commit: true,
            audit_log: None,
            secret_use_report_interval: crate::secret_usage::REPORT_EVERY,
        }
    }
}

/// The header trusted proxies write the client's address into.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...`.
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    #[value(name = "forwarded")]
    Forwarded,
}

/// The address a request came from, as throttling and logs see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (for at most ten seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: &ServeOptions,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let trusted = Arc::new(Proxies {
        trusted: opts.trusted_proxies.clone(),
        header: opts.forwarded_header,
    });
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let request_timeout = opts.request_timeout;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(per_request(app.clone(), peer, trusted.clone(), request_timeout));
        let Some(tls) = tls.clone() else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = connection.await;
                drop(slot);
            });
            continue;
        };
        // The handshake gets the header-read timeout too: a client that never finishes it
        // holds a slot no longer than one that never sends headers.
        let (http, watcher) = (http.clone(), graceful.watcher());
        let handshake_timeout = opts.header_read_timeout;
        tokio::spawn(async move {
            if let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                let _ = watcher
                    .watch(http.serve_connection(TokioIo::new(stream), service))
                    .await;
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN:?}");
    }
    Ok(())
}

/// The service of one connection: records where each request came from and bounds its time.
fn per_request(
    app: Router,
    peer: SocketAddr,
    proxies: Arc<Proxies>,
    timeout: Duration,
) -> impl tower::Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(move |mut request: Request<Incoming>| {
        let client = proxies.client_address(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddress(client));
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            match tokio::time::timeout(timeout, app.oneshot(request.map(Body::new))).await {
                Ok(response) => response,
                Err(_) => Ok((StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response()),
            }
        }
    })
}

/// The proxies whose word on the client's address counts, and the header they write it in.
#[derive(Clone, Debug)]
pub struct Proxies {
    /// Their addresses.
    pub trusted: Vec<IpNet>,
    /// The one header they manage.
    pub header: ForwardedHeader,
}

impl Proxies {
    /// The client of a request from `peer`: the peer itself unless it is a trusted proxy; then
    /// the nearest address in the proxies' header that is not a trusted proxy, read from the
    /// right (the left part is whatever the client claimed). An entry that cannot be read
    /// where a trusted proxy wrote (`unknown`, an obfuscated name, garbage) ends the walk at
    /// the proxy that wrote it: shared, but never forged, and what a client writes to the left
    /// of it changes nothing.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let is_trusted = |ip: &IpAddr| self.trusted.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return peer;
        }
        let header = self.header;
        let name = match header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let entries: Vec<&str> = headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let hop = match header {
                ForwardedHeader::XForwardedFor => x_forwarded_for(entry),
                ForwardedHeader::Forwarded => forwarded_for(entry),
            };
            let Some(hop) = hop else { break };
            client = hop;
            if !is_trusted(&hop) {
                break;
            }
        }
        client
    }
}

/// The address of one `X-Forwarded-For` entry: an address, or (as some proxies write it) an
/// address with a port, `a.b.c.d:port` or `[v6]:port`.
fn x_forwarded_for(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// The address in one `Forwarded` element's `for=` (`[v6]:port`, `[v6]`, `v4:port` or `v4`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim().trim_matches('"'))
    })?;
    let host = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => value.split(':').next()?,
    };
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
        let header = if headers.contains_key("forwarded") {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::XForwardedFor
        };
        Proxies {
            trusted: trusted.to_vec(),
            header,
        }
        .client_address(peer, headers)
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let ingress: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            client_address(ingress, &xff, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_address(stranger, &xff, &trusted),
            stranger,
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_address(ingress, &xff, &[]),
            ingress,
            "no proxy is trusted by default"
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let ingress: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        // The client claims 1.1.1.1; the edge proxy saw it come from 203.0.113.7.
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(
            client_address(ingress, &spoofed, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let rfc7239 = headers(&[("forwarded", r#"for=1.1.1.1, for="[2001:db8::1]:4711";proto=https"#)]);
        assert_eq!(
            client_address(ingress, &rfc7239, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let with_port = headers(&[("x-forwarded-for", "203.0.113.8:4711")]);
        assert_eq!(
            client_address(ingress, &with_port, &trusted),
            "203.0.113.8".parse::<IpAddr>().unwrap()
        );
        let garbage = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(
            client_address(ingress, &garbage, &trusted),
            ingress,
            "unreadable: the proxy itself"
        );
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.7")]);
        assert_eq!(
            client_address(ingress, &all_trusted, &trusted),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
        // Garbage the client wrote left of what the proxy appended changes nothing.
        let prefixed = headers(&[("x-forwarded-for", "not-an-address, 203.0.113.7")]);
        assert_eq!(
            client_address(ingress, &prefixed, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
    }

    /// T12: the proxy appends to X-Forwarded-For; a `Forwarded` header the client sent itself
    /// is never read, whatever it says (it used to win over the proxy's header).
    #[test]
    fn only_the_header_the_proxy_manages_is_read() {
        let ingress: IpAddr = "10.0.0.5".parse().unwrap();
        let proxies = Proxies {
            trusted: vec!["10.0.0.0/24".parse().unwrap()],
            header: ForwardedHeader::XForwardedFor,
        };
        let spoofed = headers(&[("forwarded", "for=1.1.1.1"), ("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            proxies.client_address(ingress, &spoofed),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let rfc7239 = Proxies {
            header: ForwardedHeader::Forwarded,
            ..proxies
        };
        assert_eq!(
            rfc7239.client_address(ingress, &spoofed),
            "1.1.1.1".parse::<IpAddr>().unwrap(),
            "and the other way round"
        );
        let unknown = headers(&[("forwarded", "for=198.51.100.9, for=unknown")]);
        assert_eq!(rfc7239.client_address(ingress, &unknown), ingress);
    }
}
