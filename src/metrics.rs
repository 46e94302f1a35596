//! Prometheus metrics of the provider and the controller.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of an issued token.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Client id.
    pub client_id: String,
    /// Grant type.
    pub grant_type: String,
}

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Resource kind.
    pub kind: String,
}

/// Labels of a reconcile error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    /// Resource kind.
    pub kind: String,
    /// Error class.
    pub error: String,
}

/// All kauth metrics, registered once.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP latency by route.
    pub http_latency: Family<RouteLabels, Histogram>,
    /// Tokens issued by client and grant.
    pub tokens_issued: Family<TokenLabels, Counter>,
    /// Reconciles by kind.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile errors by kind and class.
    pub reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    /// Clients the provider currently serves.
    pub registered_clients: Gauge,
    /// 1 while the grant store answers, 0 while it does not (checked every second).
    pub store_up: Gauge,
    /// Watches failing now (they retry at least every second).
    pub watches_failing: Gauge,
    /// Requests authenticated with a rotated-out client secret, by client.
    pub previous_secret_uses: Family<ClientLabels, Counter>,
    /// Grant-store operation latency (waiting for a connection included).
    pub store_latency: Histogram,
    /// When each SigningKey's next key change (activation, rotation, retirement) is due.
    pub signing_key_next_step: Family<SigningKeyLabels, Gauge>,
    /// Claims this replica's catalog holds back until the claims record holds them.
    pub claims_pending: Gauge,
    /// Claims in the record (as this replica read it last).
    pub claims_recorded: Gauge,
    /// Writes of a claims record shard that failed (the leader's).
    pub claims_record_failures: Counter,
    /// Calls to other servers.
    pub outbound: OutboundMetrics,
}

/// Labels of an outbound call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    /// What it was for (`openid`, `otlp`, ...).
    pub purpose: &'static str,
    /// `ok`, `client_error`, `server_error`, `too_many_requests`, `timeout`, `connect_error`,
    /// `refused` (not a permitted address), `read_error` or `unavailable`.
    pub outcome: &'static str,
}

/// Labels naming an outbound call's purpose.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurposeLabels {
    /// What it was for.
    pub purpose: &'static str,
}

/// Metrics of calls to other servers, each attempt counted (cheap to clone: they share
/// their values).
#[derive(Clone, Debug)]
pub struct OutboundMetrics {
    /// Attempts by purpose and outcome.
    pub calls: Family<OutboundLabels, Counter>,
    /// Attempt duration by purpose.
    pub duration: Family<PurposeLabels, Histogram>,
}

impl Default for OutboundMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
        }
    }
}

impl OutboundMetrics {
    /// Counts one attempt.
    pub fn observe(&self, purpose: &'static str, outcome: &'static str, took: std::time::Duration) {
        self.calls.get_or_create(&OutboundLabels { purpose, outcome }).inc();
        self.duration
            .get_or_create(&PurposeLabels { purpose })
            .observe(took.as_secs_f64());
    }
}

/// Labels naming a SigningKey.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SigningKeyLabels {
    /// `namespace/name`.
    pub signing_key: String,
}

/// Labels naming a client.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// Client id.
    pub client_id: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kauth");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        let tokens_issued = Family::<TokenLabels, Counter>::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        let registered_clients = Gauge::default();
        let store_up = Gauge::default();
        let watches_failing = Gauge::default();
        let previous_secret_uses = Family::<ClientLabels, Counter>::default();
        let store_latency = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let signing_key_next_step = Family::<SigningKeyLabels, Gauge>::default();
        let claims_pending = Gauge::default();
        let claims_recorded = Gauge::default();
        let claims_record_failures = Counter::default();
        registry.register(
            "claims_pending",
            "Scope values, audiences and client ids claimed but not yet in the claims record: nothing is served under them",
            claims_pending.clone(),
        );
        registry.register(
            "claims_recorded",
            "Claims in the claims record, as this replica read it last",
            claims_recorded.clone(),
        );
        registry.register(
            "claims_record_write_failures",
            "Failed writes of a claims record shard (by the leader)",
            claims_record_failures.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Grant-store operation latency, waiting for a connection included",
            store_latency.clone(),
        );
        registry.register(
            "signing_key_next_step_timestamp_seconds",
            "When each SigningKey's next key change is due (unix seconds; set by the leader)",
            signing_key_next_step.clone(),
        );
        registry.register(
            "previous_secret_uses",
            "Requests authenticated with a client's rotated-out secret: workloads that have not picked up the new one",
            previous_secret_uses.clone(),
        );
        registry.register(
            "watches_failing",
            "Kubernetes watches failing now; past 10 s /readyz turns not ready",
            watches_failing.clone(),
        );
        registry.register(
            "store_up",
            "1 while the grant store answers within its deadline, else 0",
            store_up.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_latency.clone(),
        );
        registry.register(
            "tokens_issued",
            "Access tokens issued by client and grant type",
            tokens_issued.clone(),
        );
        registry.register("reconciles", "Reconciles by resource kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by resource kind and class",
            reconcile_errors.clone(),
        );
        registry.register(
            "registered_clients",
            "OAuth clients the provider serves",
            registered_clients.clone(),
        );
        let outbound = OutboundMetrics::default();
        registry.register(
            "outbound_calls",
            "Calls to other servers (upstream providers, collectors, relying parties) by purpose and outcome, each attempt counted",
            outbound.calls.clone(),
        );
        registry.register(
            "outbound_call_duration_seconds",
            "Duration of calls to other servers by purpose",
            outbound.duration.clone(),
        );
        Self {
            registry,
            outbound,
            http_requests,
            http_latency,
            tokens_issued,
            reconciles,
            reconcile_errors,
            registered_clients,
            store_up,
            watches_failing,
            previous_secret_uses,
            store_latency,
            signing_key_next_step,
            claims_pending,
            claims_recorded,
            claims_record_failures,
        }
    }

    /// Counts a request authenticated with a client's rotated-out secret.
    pub fn previous_secret_used(&self, client_id: &str) {
        self.previous_secret_uses
            .get_or_create(&ClientLabels {
                client_id: client_id.to_string(),
            })
            .inc();
    }

    /// Counts a token issued to `client_id` with `grant_type`.
    pub fn token_issued(&self, client_id: &str, grant_type: &str) {
        self.tokens_issued
            .get_or_create(&TokenLabels {
                client_id: client_id.to_string(),
                grant_type: grant_type.to_string(),
            })
            .inc();
    }

    /// Records a reconcile of `kind`, and its error class if it failed.
    pub fn reconciled(&self, kind: &str, error: Option<&str>) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind: kind.to_string() })
            .inc();
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ReconcileErrorLabels {
                    kind: kind.to_string(),
                    error: error.to_string(),
                })
                .inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
