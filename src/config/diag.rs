//! Config diagnostics shared by every validation stage: one problem with
//! its source span, the collector that gathers them all, and how paths in
//! the config are resolved. A leaf: it imports no other config stage.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

/// Collects errors with their spans.
pub(crate) struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.0.push(ConfigError {
            span: Some(span),
            message: message.into(),
        });
    }
}

/// Relative paths in the config are relative to the config file's folder.
pub(crate) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
