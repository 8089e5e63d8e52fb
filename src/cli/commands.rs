//! `check`, `token` and `ca generate`: short commands that print results
//! to stdout and diagnostics to stderr.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::config;
use crate::metrics::Metrics;
use crate::token::{Registry, TokenSource};

/// Prints `ok` to `out`, or every error to `diag` (stderr); returns the
/// exit code (0 / 1).
pub fn check(path: &Path, out: &mut dyn Write, diag: &mut dyn Write) -> i32 {
    match config::load(path) {
        Ok(cfg) => {
            // The CA is read only to serve, but a CA that cannot serve is
            // a config error the operator wants to see before deploying.
            if let Some((cert, key)) = &cfg.tls.ca {
                if let Err(e) = crate::tls::ca::Ca::load(cert, key) {
                    let _ = writeln!(diag, "{}: {e:#}", path.display());
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
            let _ = writeln!(diag, "{e}");
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
    let store = Registry::new(Arc::new(Metrics::new()));
    let slot = match store
        .source(settings, &cfg.token_egress())
        .map_err(|e| anyhow::anyhow!("client {client:?}: {e}"))?
    {
        TokenSource::Client(slot) => slot,
        TokenSource::PerUser(_) => anyhow::bail!(
            "client {client:?} exchanges each user's own token (on-behalf-of): there is no token to fetch without a user"
        ),
        TokenSource::Account(_) => anyhow::bail!(
            "client {client:?} holds one token per end user (per-user accounts): there is no token to fetch without a user"
        ),
    };
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

/// Refuses to replace an existing CA without `force`: every app that
/// trusts the old certificate would stop trusting sidekey, and the old key
/// would be gone for good.
pub fn ca_generate(dir: &Path, force: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if !force {
        for name in ["ca.key", "ca.crt"] {
            let path = dir.join(name);
            // symlink_metadata: a dangling symlink is "existing" too.
            if std::fs::symlink_metadata(&path).is_ok() {
                anyhow::bail!(
                    "{} already exists: not overwriting it (pass --force to replace the CA)",
                    path.display()
                );
            }
        }
    }
    crate::tls::ca::generate(dir)?;
    writeln!(
        out,
        "wrote {} and {} (mode 0600)",
        dir.join("ca.crt").display(),
        dir.join("ca.key").display()
    )?;
    Ok(())
}

/// `ca bundle`: the system's trusted roots (as rustls-native-certs finds
/// them, honouring SSL_CERT_FILE / SSL_CERT_DIR) followed by sidekey's CA
/// certificate, written atomically so an app never reads half a bundle.
pub fn ca_bundle(config_path: &Path, out_path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let cfg = config::load(config_path)?;
    let (cert, _) = cfg.tls.ca.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: [tls] ca_cert is not set, so there is no sidekey CA to add",
            config_path.display()
        )
    })?;
    ca_bundle_from("tls.ca_cert", cert, out_path, out)
}

/// `ca bundle --ca-cert PATH`: the same bundle from the CA certificate alone, so the init step that
/// writes it mounts neither the config nor any secret (`key` names the source in errors).
pub fn ca_bundle_from(
    key: &str,
    cert: &Path,
    out_path: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(cert)
        .map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", cert.display()))?;
    {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
            anyhow::anyhow!("{key}: {} is not a PEM certificate: {e}", cert.display())
        })?;
    }
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "no system trusted roots found ({}): install the ca-certificates package or set SSL_CERT_FILE",
            why.join("; ")
        );
    }
    let mut bundle = String::new();
    for der in &found.certs {
        bundle.push_str(&pem("CERTIFICATE", der.as_ref()));
    }
    bundle.push_str("# sidekey interception CA\n");
    bundle.push_str(ca_pem.trim_end());
    bundle.push('\n');
    let dir = out_path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = out_path.with_extension("tmp");
    std::fs::write(&tmp, bundle)
        .and_then(|()| world_readable(&tmp))
        .and_then(|()| std::fs::rename(&tmp, out_path))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out_path.display()))?;
    writeln!(
        out,
        "wrote {} ({} system roots + the sidekey CA)",
        out_path.display(),
        found.certs.len()
    )?;
    Ok(())
}

/// A CA bundle is public, and the app reading it runs as another user:
/// 0644 whatever the umask.
fn world_readable(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// PEM armour: base64 in 64-character lines (RFC 7468).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}
