//! Logging and tracing setup. Logs: human-readable text by default, JSON lines for log
//! pipelines. Traces: OpenTelemetry over OTLP/HTTP, off unless the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) names a collector; the other
//! `OTEL_*` variables (protocol `http/protobuf` or `http/json`, headers, timeout, service name,
//! resource attributes, sampler) are read by the OpenTelemetry SDK. Spans come from the
//! `tracing` crate: one per HTTP request (joining a caller's W3C `traceparent`), per
//! grant-store operation and per reconcile.

use std::future::Future;
use std::pin::Pin;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::outbound::{Outbound, Reach};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the trace exporter; dropping it sends the spans still buffered.
#[must_use]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("kauth: could not send the last traces: {e}");
        }
    }
}

/// True when the environment names an OTLP endpoint for traces.
fn traces_wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber; `RUST_LOG` overrides the default level (info) of the logs.
/// Call it inside the Tokio runtime: the exporter sends its batches there.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The log takes events only: spans are for traces, and a span the log records costs a
    // formatted copy of its fields on every request. With traces off, no layer wants spans, so
    // they cost next to nothing.
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }
    .with_filter(filter.and(filter_fn(|meta| meta.is_event())));
    let (traces, problem) = if traces_wanted() {
        match tracer_provider() {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    // kauth's own spans at info and above; dependencies' spans stay out of the traces.
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("kauth"))
            .with_filter(EnvFilter::new("kauth=info"))
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    if let Some(problem) = problem {
        tracing::error!(error = %problem, "OpenTelemetry traces are off");
    }
    if traces.is_some() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        tracing::info!("sending OpenTelemetry traces over OTLP");
    }
    Telemetry { traces }
}

fn tracer_provider() -> Result<SdkTracerProvider, String> {
    let http = OtlpHttp {
        client: Outbound::new(None, Reach::Anywhere, Default::default()).map_err(|e| e.to_string())?,
        runtime: tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "kauth".into()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: kauth's hyper + rustls client. The SDK exports from a thread
/// of its own, outside Tokio, so each request runs as a task on kauth's runtime.
#[derive(Debug)]
struct OtlpHttp {
    client: Outbound,
    runtime: tokio::runtime::Handle,
}

type Sent = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>;

impl opentelemetry_http::HttpClient for OtlpHttp {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<bytes::Bytes>,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let response = client
                .send("otlp", http::Request::from_parts(parts, body.to_vec()))
                .await?;
            let (parts, body) = response.into_parts();
            Ok::<_, crate::outbound::HttpError>(http::Response::from_parts(parts, bytes::Bytes::from(body)))
        });
        Box::pin(async move {
            match task.await {
                Ok(sent) => sent.map_err(|e| e.into()),
                Err(e) => Err(e.into()),
            }
        })
    }
}
