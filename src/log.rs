//! Logging: `RUST_LOG` (default `info`), text on a terminal, one JSON
//! object per line otherwise. Nothing logged carries a header value: the
//! access line names method, host, route, client, status and duration.

pub mod access;
mod batch;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::TelemetrySettings;

pub use batch::Guard;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// Installs the subscriber. Lines go to stderr through `batch`: a request
/// only appends its line to a buffer, and a writer thread writes what has
/// gathered every few milliseconds, so logging costs neither a syscall nor
/// a thread wake-up per request, and a slow stderr never delays one. Keep
/// the returned guard alive until exit: dropping it writes what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: Option<Format>) -> Guard {
    init_with(format, None).log
}

/// What `init_with` installed; dropping it flushes queued spans, then the
/// last log lines.
#[must_use = "dropping the guard stops the log writer and the span exporter"]
pub struct Logging {
    // Declared first so it drops first: the exporter may log at shutdown.
    _traces: Option<crate::telemetry::Guard>,
    log: Guard,
}

/// `init`, plus the OpenTelemetry layer when `[telemetry]` (or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) names a collector. Without one, the
/// subscriber is exactly `init`'s: the hot path pays nothing for tracing.
pub fn init_with(format: Option<Format>, telemetry: Option<&TelemetrySettings>) -> Logging {
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        Format::Text
    } else {
        Format::Json
    });
    let otel = telemetry.map(crate::telemetry::layer::<Registry>);
    let (otel, otel_error) = match otel {
        Some(Ok(Some(pair))) => (Some(pair), None),
        Some(Err(e)) => (None, Some(e)),
        _ => (None, None),
    };
    let Some((layer, traces)) = otel else {
        let log = init_plain(format);
        if let Some(e) = otel_error {
            tracing::error!(error = %format!("{e:#}"), "telemetry: traces are off");
        }
        return Logging { _traces: None, log };
    };
    let (writer, log) = batch::stderr();
    let json_access = (format == Format::Json).then(|| writer.clone());
    // Per-layer filters: RUST_LOG governs the log lines only, so spans are
    // exported whatever the log level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        Format::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        Format::Text => fmt.with_filter(filter).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init();
    if let (Ok(()), Some(batch)) = (installed, json_access) {
        access::write_json_to(batch);
    }
    Logging {
        _traces: Some(traces),
        log,
    }
}

fn init_plain(format: Format) -> Guard {
    let (writer, guard) = batch::stderr();
    let json_access = (format == Format::Json).then(|| writer.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        Format::Text => builder.try_init(),
    };
    // Access lines bypass the subscriber only when it is this one.
    if let (Ok(()), Some(batch)) = (installed, json_access) {
        access::write_json_to(batch);
    }
    guard
}
