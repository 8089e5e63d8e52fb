//! The access line: one per request, so it is written without going
//! through tracing's generic JSON formatter (a map built per event, about
//! 2 µs of a ~28 µs request in `bench/profile.sh`). The line is the same
//! object tracing-subscriber writes (`timestamp`, `level`, `message`,
//! fields, `target`), appended to the batch buffer. It still obeys
//! `RUST_LOG` for the `sidekey::access` target. Text output (a terminal),
//! or no `log::init` (the library in tests), goes through tracing.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use http::Method;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use super::batch::Batch;

/// Where JSON access lines go, once `log::init` chose JSON.
static JSON: OnceLock<Batch> = OnceLock::new();

pub(super) fn write_json_to(batch: Batch) {
    let _ = JSON.set(batch);
}

/// What the access line says of a request. No header value is in it.
pub struct Access<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    pub route: Option<&'a str>,
    pub client: Option<&'a str>,
    pub status: u16,
    pub elapsed: Duration,
    /// The `X-Sidekey-Error` code when sidekey produced the response itself.
    pub code: Option<&'static str>,
    /// The request's trace (`[telemetry]` only).
    pub trace_id: Option<&'a str>,
}

/// Logs the access line at INFO, target `sidekey::access`.
pub fn request(a: &Access<'_>) {
    let duration_ms = a.elapsed.as_secs_f64() * 1000.0;
    let Some(batch) = JSON.get() else {
        let (method, host, route, client, status) = (a.method, a.host, a.route, a.client, a.status);
        let (code, trace_id) = (a.code, a.trace_id);
        tracing::info!(target: "sidekey::access", %method, host, route, client, status, code, trace_id, duration_ms, "request");
        return;
    };
    if !tracing::enabled!(target: "sidekey::access", tracing::Level::INFO) {
        return;
    }
    // tracing-subscriber's own clock format (RFC 3339, µs, UTC): the same
    // text as every other line, and no panic on a clock before 1970.
    let mut timestamp = String::with_capacity(32);
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"timestamp\":");
    string(&mut line, &timestamp);
    line.extend_from_slice(b",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    string(&mut line, a.method.as_str());
    line.extend_from_slice(b",\"host\":");
    string(&mut line, a.host);
    if let Some(route) = a.route {
        line.extend_from_slice(b",\"route\":");
        string(&mut line, route);
    }
    if let Some(client) = a.client {
        line.extend_from_slice(b",\"client\":");
        string(&mut line, client);
    }
    if let Some(code) = a.code {
        line.extend_from_slice(b",\"code\":");
        string(&mut line, code);
    }
    if let Some(trace_id) = a.trace_id {
        line.extend_from_slice(b",\"trace_id\":");
        string(&mut line, trace_id);
    }
    let _ = writeln!(
        line,
        ",\"status\":{},\"duration_ms\":{duration_ms},\"target\":\"sidekey::access\"}}",
        a.status
    );
    let _ = batch.line(&line);
}

/// A JSON string, quoted and escaped.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_quotes_stay_valid_json() {
        let mut out = Vec::new();
        string(&mut out, "a\"b\\c\nd");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd");
    }
}
