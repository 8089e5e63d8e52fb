//! Config: `proxy.toml` is parsed (raw), validated once into typed settings
//! (model), and only then handed to the server. Every problem found is
//! reported with file:line:column and the route/client/header it concerns.

mod client;
mod diag;
mod egress;
mod env;
mod grant;
mod key;
pub mod model;
mod parse;
pub mod raw;
mod routes;
mod store;
mod telemetry;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use diag::ConfigError;
pub use egress::UPSTREAM_PROXY_ENV;
pub(crate) use key::hex;
pub use key::ClientKey;
pub use model::*;

/// Every problem found in one config file, rendered as `file:line:col: message`.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub source: String,
    pub errors: Vec<ConfigError>,
}

impl std::error::Error for ConfigErrors {}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &e.span {
                Some(span) if !(span.start == 0 && span.end == 0) => {
                    let (line, col) = line_col(&self.source, span.start);
                    write!(f, "{}:{line}:{col}: {}", self.path.display(), e.message)?;
                }
                _ => write!(f, "{}: {}", self.path.display(), e.message)?,
            }
        }
        Ok(())
    }
}

/// serde quotes the offending value in type errors ("invalid type: integer
/// `12345`, expected a string"); that value may be a secret written without
/// quotes, so only its kind is kept. The position still points at it.
fn hide_value(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let kind = rest.split([' ', ',']).next().unwrap_or_default();
    let expected = rest.find(", expected").map_or("", |i| &rest[i..]);
    format!("invalid type: {kind}{expected}")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Reads and validates a config file, resolving `<<env.*>>` from the process environment.
pub fn load(path: &Path) -> Result<ValidConfig, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        path: path.to_path_buf(),
        source: String::new(),
        errors: vec![ConfigError {
            span: None,
            message: format!("cannot read config: {e}"),
        }],
    })?;
    load_str(path, &source, &|name| std::env::var(name).ok())
}

/// Validates config text; `env` resolves `<<env.*>>` (tests pass their own).
pub fn load_str(
    path: &Path,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ValidConfig, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        path: path.to_path_buf(),
        source: source.to_string(),
        errors,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let partial = match parse::parse(source) {
        Ok(raw) => return validate::validate(raw, path, base, env, &[]).map_err(fail),
        Err(partial) => partial,
    };
    // Parse errors, then what validation finds in the part that parsed:
    // every problem in one run, in the order of the file.
    let mut errors = partial.errors;
    if let Some(rest) = partial.rest {
        if let Err(more) = validate::validate(*rest, path, base, env, &partial.broken_clients) {
            errors.extend(more);
        }
    }
    errors.sort_by_key(|e| e.span.as_ref().map_or(usize::MAX, |s| s.start));
    Err(fail(errors))
}

#[cfg(test)]
mod tests;
