//! sidekey: a forward HTTP proxy sidecar that injects OAuth tokens into
//! outgoing requests. `start` runs it in-process (tests do exactly that);
//! `main.rs` wraps it in a CLI.

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod connect;
pub mod error;
pub mod inbound;
pub mod listener;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod rewrite;
pub mod route;
pub mod runtime;
pub mod secret;
pub mod template;
pub mod tls;
pub mod token;
pub mod upstream;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use config::ValidConfig;
pub use runtime::Shared;

/// A running sidekey.
pub struct Server {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Installs rustls' ring provider as the process default (reqwest and
/// hyper-rustls pick it up); harmless if one is installed already.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Binds the proxy and admin listeners and serves until `shutdown`.
/// Port 0 in the config binds an ephemeral port (see `proxy_addr`).
pub async fn start(config: ValidConfig) -> anyhow::Result<Server> {
    init_crypto();
    let listen = config.proxy.listen;
    let admin = config.proxy.admin;
    let path = config.path.clone();
    let shared = Shared::new(config)?;
    let proxy_listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let (tx, rx) = signal::channel(false);
    let mut tasks = vec![tokio::spawn(listener::serve(
        proxy_listener,
        Arc::clone(&shared),
        true,
        rx.clone(),
        proxy::handle,
    ))];
    let admin_addr = match admin {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on admin {addr}: {e}"))?;
            let a = l.local_addr()?;
            tasks.push(tokio::spawn(listener::serve(
                l,
                Arc::clone(&shared),
                false,
                rx,
                admin::handle,
            )));
            Some(a)
        }
        None => None,
    };
    let watcher = if path.is_file() {
        match watch::spawn(&path, Arc::clone(&shared)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
                None
            }
        }
    } else {
        None
    };
    tracing::info!(%proxy_addr, admin = ?admin_addr, routes = shared.runtime().routes.routes().len(), "sidekey listening");
    Ok(Server {
        proxy_addr,
        admin_addr,
        shared,
        shutdown: tx,
        tasks,
        _watcher: watcher,
    })
}

impl Server {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file (as SIGHUP does); false if it was rejected.
    pub fn reload(&self) -> bool {
        self.shared.reload()
    }

    /// Stops accepting, finishes in-flight requests (up to 30 s), returns.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
