//! The `sidekey` binary: parse arguments, set up logging, run a command.
//! Exit codes: 0 ok, 1 command failed (and `check` on a config with
//! errors), 78 (EX_CONFIG) when any other command cannot load its config.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sidekey::cli::{self, CaCommand, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` exports traces when its config (or the environment) names a
    // collector, and serves on as many threads as it asks for; a config
    // that does not load is reported by `run` itself.
    let config = match &cli.command {
        Command::Run { config } => sidekey::config::load(&config.path()).ok(),
        _ => None,
    };
    let _log = sidekey::log::init_with(cli.log_format, config.as_ref().map(|c| &c.telemetry));
    let workers = config.as_ref().map_or(1, |c| c.proxy.workers);
    let rt = match runtime(workers) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    rt.block_on(dispatch(cli.command))
}

/// One worker: a current-thread runtime, where a request's tasks (client
/// connection, pooled upstream connection, token fetch) wake each other
/// without crossing threads. On two cores under load that costs 0.6x the
/// CPU per request and half the added latency of a two-worker runtime
/// (bench/README.md); more workers are for more than one core of traffic.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

async fn dispatch(cmd: Command) -> ExitCode {
    let mut stdout = std::io::stdout();
    let result = match cmd {
        Command::Run { config } => return run(&config.path()).await,
        Command::Check { config } => {
            let code = cli::check(&config.path(), &mut stdout, &mut std::io::stderr());
            return ExitCode::from(code as u8);
        }
        Command::Token {
            client,
            show,
            config,
        } => cli::token(&config.path(), &client, show, &mut stdout).await,
        Command::Ca {
            command: CaCommand::Generate { out, force },
        } => cli::ca_generate(&out, force, &mut stdout),
        Command::Ca {
            command:
                CaCommand::Bundle {
                    out,
                    ca_cert: Some(cert),
                    ..
                },
        } => cli::ca_bundle_from("--ca-cert", &cert, &out, &mut stdout),
        Command::Ca {
            command: CaCommand::Bundle { out, config, .. },
        } => cli::ca_bundle(&config.path(), &out, &mut stdout),
        Command::Inject(args) => cli::kube::inject(&args, &mut stdout),
        Command::Webhook(args) => cli::kube::webhook(args).await,
        Command::Login {
            client,
            no_browser,
            config,
        } => cli::login::login(&config.path(), &client, no_browser, &mut stdout).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A config that cannot be loaded prints as `file:line:col: ...`
        // lines of its own, and is EX_CONFIG whichever command met it.
        Err(e) => match e.downcast_ref::<sidekey::config::ConfigErrors>() {
            Some(config) => {
                let _ = writeln!(std::io::stderr(), "{config}");
                ExitCode::from(EX_CONFIG)
            }
            None => {
                let _ = writeln!(std::io::stderr(), "error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;

async fn run(path: &std::path::Path) -> ExitCode {
    let config = match sidekey::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            tracing::error!(config = %path.display(), "invalid config");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Handlers first: the proxy serves as soon as `start` binds, and a
    // SIGTERM that arrived before them would kill the process undrained.
    let signals = Signals::install();
    let server = match sidekey::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start");
            return ExitCode::from(1);
        }
    };
    signals.wait(&server).await;
    tracing::info!("shutting down: /readyz now answers 503");
    server.shutdown().await;
    tracing::info!("bye");
    ExitCode::SUCCESS
}

/// SIGTERM/SIGINT end the process (drained); SIGHUP reloads.
#[cfg(unix)]
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Self(Some((term, int, hup))),
            _ => {
                tracing::error!("cannot install signal handlers");
                Self(None)
            }
        }
    }

    async fn wait(self, server: &sidekey::Server) {
        let Some((mut term, mut int, mut hup)) = self.0 else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => { server.reload(); }
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Self
    }

    async fn wait(self, _server: &sidekey::Server) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
