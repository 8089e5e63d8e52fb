//! The OTLP exporter, watched: a collector that stops (or starts again)
//! answering is logged once per change of state, not once per batch, and
//! its batches are dropped rather than retried, so it costs requests nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

#[derive(Debug)]
pub(super) struct Exporter {
    inner: opentelemetry_otlp::SpanExporter,
    url: String,
    failing: AtomicBool,
}

impl Exporter {
    pub(super) fn new(inner: opentelemetry_otlp::SpanExporter, url: String) -> Self {
        Self {
            inner,
            url,
            failing: AtomicBool::new(false),
        }
    }

    /// Logs only when the outcome differs from the previous export's.
    fn observe(&self, result: &OTelSdkResult, spans: usize) {
        let failed = result.is_err();
        if self.failing.swap(failed, Ordering::Relaxed) == failed {
            return;
        }
        match result {
            Err(e) => tracing::warn!(
                collector = %self.url,
                error = %e,
                dropped_spans = spans,
                "OTLP collector unreachable: spans are dropped until it answers"
            ),
            Ok(()) => tracing::info!(collector = %self.url, "OTLP collector reachable again"),
        }
    }
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.observe(&result, spans);
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
