//! `sidekey inject` and `sidekey webhook`: the command-line ends of [`crate::kube`].

use std::io::{Read as _, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::kube::manifest::inject_manifests;
use crate::kube::Defaults;

/// Defaults for templates whose annotations do not say otherwise.
#[derive(Debug, clap::Args)]
pub struct InjectDefaults {
    /// sidekey image (annotation sidekey.io/image). Default is sidekey:VERSION.
    #[arg(long)]
    pub image: Option<String>,
    /// ConfigMap holding proxy.toml (annotation sidekey.io/config). Default is sidekey-config.
    #[arg(long, default_value = "sidekey-config")]
    pub config_map: String,
    /// Secret holding ca.crt and ca.key; "" or "none" for a config without [tls] (annotation
    /// sidekey.io/ca-secret). Default is sidekey-ca.
    #[arg(long, default_value = "sidekey-ca")]
    pub ca_secret: String,
}

impl InjectDefaults {
    fn defaults(&self, require_opt_in: bool) -> Defaults {
        let base = Defaults::default();
        let ca = self.ca_secret.trim();
        Defaults {
            image: self.image.clone().unwrap_or(base.image),
            config_map: self.config_map.clone(),
            ca_secret: (!ca.is_empty() && !ca.eq_ignore_ascii_case("none")).then(|| ca.to_owned()),
            require_opt_in,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifests to read; "-" or none: stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub defaults: InjectDefaults,
}

#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// Serving key (PEM); re-read when it changes.
    #[arg(long)]
    pub tls_key: PathBuf,
    #[command(flatten)]
    pub defaults: InjectDefaults,
}

/// Reads the manifests, writes them injected to `out`, and says on stderr how many templates changed.
pub fn inject(args: &InjectArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut input = String::new();
    match args.file.as_deref() {
        None => std::io::stdin().read_to_string(&mut input),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_string(&mut input),
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut input)),
    }
    .map_err(|e| match &args.file {
        Some(p) => anyhow::anyhow!("cannot read {}: {e}", p.display()),
        None => anyhow::anyhow!("cannot read stdin: {e}"),
    })?;
    let (text, injected) = inject_manifests(&input, &args.defaults.defaults(false))?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    tracing::info!(templates = injected, "sidekey injected");
    Ok(())
}

/// Serves until SIGTERM or SIGINT.
pub async fn webhook(args: WebhookArgs) -> anyhow::Result<()> {
    let defaults = args.defaults.defaults(true);
    crate::kube::webhook::serve(
        args.listen,
        args.tls_cert,
        args.tls_key,
        defaults,
        stopped(),
    )
    .await
}

async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
