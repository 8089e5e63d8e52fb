//! Logging: `RUST_LOG` (default `info`), text on a terminal, one JSON
//! object per line otherwise. Nothing logged carries a header value: the
//! access line names method, host, route, client, status and duration.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// Installs the subscriber. Lines go to stderr through a background
/// writer, so the access line never makes a request wait on stderr's lock
/// or a slow pipe; keep the returned guard alive until exit (dropping it
/// flushes what is queued). If the queue is ever full, lines are dropped
/// rather than requests delayed.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: Option<Format>) -> tracing_appender::non_blocking::WorkerGuard {
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        Format::Text
    } else {
        Format::Json
    });
    // The writer thread drains whatever lines are queued, then flushes: a
    // buffer turns a burst of lines into one write instead of one each.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(stderr);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        Format::Text => builder.try_init(),
    };
    guard
}
