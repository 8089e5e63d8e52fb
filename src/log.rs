//! Logging: `RUST_LOG` (default `info`), text on a terminal, one JSON
//! object per line otherwise. Nothing logged carries a header value: the
//! access line names method, host, route, client, status and duration.

pub mod access;
mod batch;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        Format::Text
    } else {
        Format::Json
    });
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
