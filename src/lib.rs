//! sidekey: a forward HTTP proxy sidecar that injects OAuth tokens into
//! outgoing requests. `start` runs it in-process (tests do exactly that);
//! `main.rs` wraps it in a CLI.

pub(crate) mod admin;
pub mod bench;
pub(crate) mod body;
pub mod cli;
pub mod config;
pub(crate) mod connect;
pub(crate) mod credential;
pub(crate) mod drain;
pub(crate) mod egress;
pub(crate) mod error;
// The fuzz harness (a loopback token server, reference oracles) stays out
// of the serving library: cargo fuzz sets `--cfg fuzzing`, the regression
// tests enable the `fuzzing` feature.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzz;
pub(crate) mod inbound;
mod io;
mod ip_literal;
pub mod kube;
pub mod log;
pub(crate) mod login;
pub(crate) mod metrics;
pub(crate) mod parent_proxy;
pub(crate) mod private_file;
pub(crate) mod proxy;
pub(crate) mod rewrite;
pub(crate) mod roots;
pub(crate) mod route;
pub(crate) mod runtime;
// A leaf: config validates keys with it and token/store seals with it,
// so config never has to import the token stage.
mod seal;
pub(crate) mod secret;
mod server;
mod service;
pub mod telemetry;
pub(crate) mod template;
pub(crate) mod tls;
pub(crate) mod token;
mod tunnel;
pub(crate) mod upstream;
pub(crate) mod values;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ValidConfig;
pub use runtime::Shared;

/// A running sidekey.
pub struct Server {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    /// `[login]`: where end users connect per-user accounts.
    pub login_addr: Option<SocketAddr>,
    login: Option<(CancellationToken, JoinHandle<()>)>,
    shared: Arc<Shared>,
    proxy_stop: CancellationToken,
    proxy_task: JoinHandle<()>,
    admin: Option<(CancellationToken, Arc<drain::Drain>, JoinHandle<()>)>,
    _watcher: Option<watch::Watcher>,
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
    let limits = config.proxy.limits;
    let path = config.path.clone();
    let shared = Shared::new(config)?;
    let proxy_listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let proxy_stop = CancellationToken::new();
    let s = Arc::clone(&shared);
    let proxy_task = tokio::spawn(server::accept_loop(
        proxy_listener,
        limits,
        Arc::clone(&shared.drain),
        proxy_stop.clone(),
        move |conn, req| service::request(Arc::clone(&s), service::Origin::Forward(conn), req),
    ));
    let (admin_addr, admin) = match admin {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on admin {addr}: {e}"))?;
            let a = l.local_addr()?;
            // The admin port has its own drain: it keeps answering (503 on
            // /readyz) until the proxy's drain is over.
            let stop = CancellationToken::new();
            let drain = Arc::new(drain::Drain::new());
            let s = Arc::clone(&shared);
            let task = tokio::spawn(server::accept_loop(
                l,
                admin_limits(limits),
                Arc::clone(&drain),
                stop.clone(),
                move |conn, req| admin::handle(Arc::clone(&s), conn.peer, req),
            ));
            (Some(a), Some((stop, drain, task)))
        }
        None => (None, None),
    };
    // Only when some client is per-user: `[login]` alone opens no port.
    let login_at = shared
        .runtime()
        .config
        .login
        .as_ref()
        .filter(|_| {
            let rt = shared.runtime();
            rt.config.clients.values().any(|c| c.user.is_some())
        })
        .map(|l| l.listen);
    let (login_addr, login) = match login_at {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on login {addr}: {e}"))?;
            let a = l.local_addr()?;
            let stop = CancellationToken::new();
            let s = Arc::clone(&shared);
            let task = tokio::spawn(server::accept_loop(
                l,
                limits,
                Arc::new(drain::Drain::new()),
                stop.clone(),
                move |_conn, req| login::handle(Arc::clone(&s), req),
            ));
            (Some(a), Some((stop, task)))
        }
        None => (None, None),
    };
    let watcher = match watch::spawn(&path, Arc::clone(&shared)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
            None
        }
    };
    let admin_text = admin_addr.map(|a| a.to_string());
    tracing::info!(%proxy_addr, admin = admin_text.as_deref(), routes = shared.runtime().routes.routes().len(), "sidekey listening");
    Ok(Server {
        proxy_addr,
        admin_addr,
        login_addr,
        login,
        shared,
        proxy_stop,
        proxy_task,
        admin,
        _watcher: watcher,
    })
}

/// Probes and a Prometheus scraper need a handful; the rest of the cap is
/// headroom, so that hundreds of idle or slow connections (a scanner, a
/// misbehaving client) do not keep a liveness probe from being accepted
/// and get the pod restarted.
const ADMIN_MAX_CONNECTIONS: usize = 1024;
/// A probe sends its request as soon as it connects and does not reuse the
/// connection; a scraper that does reconnects cheaply. So the admin port
/// frees a silent or trickling connection's slot within seconds, however
/// long the proxy's own timeouts are.
const ADMIN_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const ADMIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn admin_limits(proxy: config::ConnLimits) -> config::ConnLimits {
    let mut l = proxy;
    l.max_connections = ADMIN_MAX_CONNECTIONS;
    l.header_read_timeout = proxy.header_read_timeout.min(ADMIN_HEADER_READ_TIMEOUT);
    l.idle_timeout = proxy.idle_timeout.min(ADMIN_IDLE_TIMEOUT);
    l
}

impl Server {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file (as SIGHUP does); false if it was rejected.
    pub fn reload(&self) -> bool {
        self.shared.reload()
    }

    /// The SPEC's SIGTERM sequence: `/readyz` turns 503 at once; after
    /// `shutdown_delay` the proxy stops accepting; in-flight requests,
    /// tunnels and WebSockets get `drain_timeout` to finish, idle
    /// connections close now; what is left then is cut, counted and
    /// logged. The admin port answers until the end.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        let proxy = self.shared.runtime().config.proxy.clone();
        if !proxy.shutdown_delay.is_zero() {
            tracing::info!(
                delay_ms = proxy.shutdown_delay.as_millis() as u64,
                "draining: still accepting during shutdown_delay"
            );
            tokio::time::sleep(proxy.shutdown_delay).await;
        }
        self.proxy_stop.cancel();
        let _ = self.proxy_task.await;
        let open = self.shared.drain.open();
        tracing::info!(
            open,
            timeout_ms = proxy.drain_timeout.as_millis() as u64,
            "draining: no longer accepting, waiting for open connections"
        );
        let cut = self.shared.drain.drain(proxy.drain_timeout).await;
        if cut > 0 {
            self.shared.metrics.connections_cut.inc_by(cut as u64);
            tracing::warn!(cut, "drain timeout: connections still open were cut");
        } else {
            tracing::info!("drained: every connection finished");
        }
        if let Some((stop, task)) = self.login {
            stop.cancel();
            let _ = task.await;
        }
        if let Some((stop, drain, task)) = self.admin {
            stop.cancel();
            let _ = task.await;
            drain.drain(std::time::Duration::from_secs(1)).await;
        }
    }
}
