//! OpenTelemetry traces (SPEC "Telemetry", `[telemetry]`): a `sidekey.request`
//! span per proxied request continuing the app's W3C `traceparent`, the
//! forwarded request naming that span as its parent, and `sidekey.token_fetch`
//! spans. Off unless an endpoint is configured: then no layer is installed,
//! `enabled()` is false, and the pipeline creates no span at all.

mod export;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::TelemetrySettings;

/// Set once the OpenTelemetry layer is installed; read per request.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long one export may take; the batch thread waits, never a request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether spans are exported: false means the hot path skips them all.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The installed layer, boxed: its type depends on the subscriber's.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// Flushes the spans still queued when dropped (at exit).
pub struct Guard(SdkTracerProvider);

/// How long exit waits for the last spans: a collector that does not
/// answer must not keep a terminating pod alive.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.shutdown_with_timeout(FLUSH_AT_EXIT);
    }
}

/// The layer that turns `sidekey.*` spans (and only those: no event, no
/// library's span, so nothing a span does not name reaches the collector)
/// into OTLP spans, or `None` when no endpoint is configured.
pub fn layer<S>(settings: &TelemetrySettings) -> anyhow::Result<Option<(BoxedLayer<S>, Guard)>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(None);
    };
    let url = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
    // The collector is reached directly: HTTP_PROXY and the like in
    // sidekey's environment are the app's. Built on its own thread, as a
    // blocking client may not be made or dropped inside an async runtime.
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(EXPORT_TIMEOUT)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("telemetry: cannot build the OTLP HTTP client"))??;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(client)
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {url:?}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        // The SDK's batch processor: a queue (spans beyond it are dropped,
        // never waited for) drained by its own thread.
        .with_batch_exporter(export::Exporter::new(exporter, url))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("sidekey");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|m| {
            m.is_span() && m.name().starts_with("sidekey.")
        }));
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((Box::new(layer), Guard(provider))))
}

/// The `sidekey.request` span of a request, continuing its `traceparent`.
/// Only called when `enabled()`.
pub fn request_span(method: &Method, host: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        "sidekey.request",
        otel.kind = "server",
        method = method.as_str(),
        host,
        route = tracing::field::Empty,
        client = tracing::field::Empty,
        status = tracing::field::Empty,
        code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    span.set_parent(parent);
    span
}

/// What the request came to, on its span.
pub fn record(
    span: &Span,
    route: Option<&str>,
    client: Option<&str>,
    status: u16,
    code: Option<&str>,
) {
    if let Some(route) = route {
        span.record("route", route);
    }
    if let Some(client) = client {
        span.record("client", client);
    }
    span.record("status", status);
    if let Some(code) = code {
        span.record("code", code);
        span.record("otel.status_code", "ERROR");
    }
}

/// The trace id of `span`, for the access line; `None` without one.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Sets the forwarded request's `traceparent` (and `tracestate`) to the
/// current span, so the upstream's span is its child.
pub fn inject(headers: &mut HeaderMap) {
    let cx = Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
}

/// The span of a token fetch: a child of the request that waited for it,
/// or a root span for a background refresh. `Span::none()` when off.
pub fn fetch_span(client: &str, grant: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "sidekey.token_fetch",
        client,
        grant,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The outcome of a token fetch, on its span.
pub fn fetch_done(span: &Span, ok: bool) {
    if span.is_none() {
        return;
    }
    span.record("outcome", if ok { "ok" } else { "error" });
    if !ok {
        span.record("otel.status_code", "ERROR");
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
