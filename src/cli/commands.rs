//! `check`, `token` and `ca generate`: short commands that print to stdout.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::config;
use crate::metrics::Metrics;
use crate::token::TokenStore;

/// Prints `ok` or every error; returns the exit code (0 / 1).
pub fn check(path: &Path, out: &mut dyn Write) -> i32 {
    match config::load(path) {
        Ok(cfg) => {
            // The CA is read only to serve, but a CA that cannot serve is
            // a config error the operator wants to see before deploying.
            if let Some((cert, key)) = &cfg.tls.ca {
                if let Err(e) = crate::tls::ca::Ca::load(cert, key) {
                    let _ = writeln!(out, "{}: {e:#}", path.display());
                    return 1;
                }
            }
            let _ = writeln!(out, "ok");
            tracing::info!(
                routes = cfg.routes.len(),
                clients = cfg.clients.len(),
                listen = %cfg.proxy.listen,
                "config is valid"
            );
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
            1
        }
    }
}

/// Fetches one token; prints type, expiry, scopes (and the token with `show`).
pub async fn token(
    path: &Path,
    client: &str,
    show: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::init_crypto();
    let cfg = config::load(path)?;
    let settings = cfg.clients.get(client).ok_or_else(|| {
        let known: Vec<&str> = cfg.clients.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "client {client:?} is not defined (defined: {})",
            known.join(", ")
        )
    })?;
    let store = TokenStore::new(Arc::new(Metrics::new()));
    let slot = store
        .slot(settings, &cfg.tls.extra_roots)
        .map_err(|e| anyhow::anyhow!("client {client:?}: {e}"))?;
    let token = slot
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("client {client:?}: {e}"))?;
    use crate::template::TokenView;
    writeln!(out, "type: {}", token.token_type())?;
    writeln!(out, "expires_in: {}s", token.expires_in().as_secs())?;
    // RFC 6749 §5.1: no `scope` in the answer means the requested ones.
    let scopes = if token.scopes.is_empty() {
        &settings.scopes
    } else {
        &token.scopes
    };
    writeln!(out, "scopes: {}", scopes.join(" "))?;
    if show {
        writeln!(out, "token: {}", token.access_token())?;
    }
    Ok(())
}

pub fn ca_generate(dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    crate::tls::ca::generate(dir)?;
    writeln!(
        out,
        "wrote {} and {} (mode 0600)",
        dir.join("ca.crt").display(),
        dir.join("ca.key").display()
    )?;
    Ok(())
}
