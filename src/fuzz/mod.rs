//! Entry points for the fuzz targets in `fuzz/` and for their regression
//! tests (`tests/fuzz_regressions.rs`, stable): thin wrappers around the
//! parsers an operator, an IdP or an application can feed, each checking
//! invariants from SPEC.md. A wrapper never panics itself: a broken
//! invariant is an `Err("class: what")`, so any panic found is the parser's
//! and any `Err` is a finding the harness decides to report. Not an API:
//! compiled only with `--cfg fuzzing` (cargo fuzz) or the `fuzzing`
//! feature (the regression tests), never into the serving binary.

// One file per fuzz target in `fuzz/fuzz_targets/`; `token_oracle` is the
// reference `token_response` is checked against.
mod config;
mod inbound;
mod route_match;
mod template;
mod token_oracle;
mod token_response;

pub use config::config;
pub use inbound::inbound;
pub use route_match::route_match;
pub use template::template;
pub use token_oracle::token_from_response;
pub use token_response::{Fetched, Grant, TokenEndpoint};

/// A broken invariant: `class: details`. The class names the kind of
/// finding, so a fuzzing run can skip ones already reported (see
/// `is_known`).
pub type Finding = String;

fn finding(class: &str, what: impl std::fmt::Display) -> Result<(), Finding> {
    Err(format!("{class}: {what}"))
}

/// Whether `f`'s class is listed in `SIDEKEY_FUZZ_KNOWN` (comma-separated):
/// lets a fuzzing run go past a finding that is reported and awaits a fix.
pub fn is_known(f: &str) -> bool {
    let class = f.split(':').next().unwrap_or_default();
    std::env::var("SIDEKEY_FUZZ_KNOWN")
        .is_ok_and(|known| known.split(',').any(|k| k.trim() == class))
}

/// Paths a fuzzed config or template must not make sidekey read: device
/// files never end (`/dev/zero`), and no real secret belongs in a corpus.
fn touches_system_files(text: &str) -> bool {
    // TOML's \u escapes could spell any of these.
    [
        "/dev", "/proc", "/sys", "..", "/etc", "/root", "/home", "~", "\\u", "\\U",
    ]
    .iter()
    .any(|p| text.contains(p))
}

fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value".into()),
        "EMPTY" => Some(String::new()),
        "QUOTE" => Some("a\"b\\c\nd".into()),
        _ => None,
    }
}

fn toml_str(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    serde_json::Value::String(s.to_string()).to_string()
}
