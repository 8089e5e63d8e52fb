//! The command line (SPEC "Command line"): run, check, token, ca, login.

mod commands;
pub mod kube;
pub mod login;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use commands::{ca_bundle, ca_bundle_from, ca_generate, check, token};

#[derive(Debug, Parser)]
#[command(
    name = "sidekey",
    version,
    about = "A forward proxy sidecar that injects OAuth tokens into outgoing requests"
)]
pub struct Cli {
    /// Log format: json or text. Default is text on a terminal, json otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<crate::log::Format>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file. Default is $SIDEKEY_CONFIG, else ./proxy.toml.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| {
                std::env::var_os("SIDEKEY_CONFIG")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("proxy.toml"))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the proxy.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config: print `ok`, or every error with file:line:column.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Fetch a token for CLIENT once and print its type, expiry and scopes.
    Token {
        client: String,
        /// Also print the token itself.
        #[arg(long)]
        show: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage the interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Authorization code + PKCE bootstrap for a refresh_token client.
    Login {
        client: String,
        /// Do not try to open a browser; just print the URL.
        #[arg(long)]
        no_browser: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Add sidekey to every pod template of Kubernetes manifests (stdin or -f) and print them.
    Inject(kube::InjectArgs),
    /// Serve the mutating admission webhook (POST /mutate, AdmissionReview v1) over TLS.
    Webhook(kube::WebhookArgs),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Write a new CA (ca.crt, ca.key with mode 0600) to DIR.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing ca.crt / ca.key. Default is to refuse.
        #[arg(long)]
        force: bool,
    },
    /// Write the system's trusted roots plus sidekey's CA certificate
    /// (`[tls] ca_cert` of the config) as one PEM file, for apps that take
    /// a single bundle (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS).
    Bundle {
        #[arg(long)]
        out: PathBuf,
        /// The CA certificate to add, instead of the config's `[tls] ca_cert`: no config (and no
        /// secret) is read.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}
