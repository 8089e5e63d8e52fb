//! The `config_load` target: `config::load_str` on arbitrary text.

use std::path::Path;

use super::{finding, fuzz_env, touches_system_files, Finding};
use crate::route::{Route, RouteTable};

/// `config::load_str` on arbitrary text. Errors must render (with their
/// positions) and name the file; a valid config's derived values must be
/// computable.
pub fn config(text: &str) -> Result<(), Finding> {
    if touches_system_files(text) {
        return Ok(());
    }
    let path = Path::new("/nonexistent-fuzz-dir/proxy.toml");
    match crate::config::load_str(path, text, &fuzz_env) {
        Ok(cfg) => {
            for c in cfg.clients.values() {
                let _ = c.cache_key();
                let _ = c.files();
            }
            let _ = format!("{cfg:?}");
            let routes = cfg
                .routes
                .iter()
                .map(|settings| Route::new(settings.clone(), None))
                .collect();
            let _ = RouteTable::new(routes);
            Ok(())
        }
        Err(e) => {
            let shown = e.to_string();
            if e.errors.is_empty() {
                return finding("config_no_errors", "load_str failed without an error");
            }
            if !shown.starts_with("/nonexistent-fuzz-dir/proxy.toml") {
                return finding("config_error_unnamed", format!("{shown:?}"));
            }
            Ok(())
        }
    }
}
