//! Accept loops: the proxy port (HTTP/1.1 with upgrades for CONNECT and
//! WebSocket, keep-alive) and the admin port, both draining gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::runtime::Shared;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long in-flight requests may take to finish after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` with `handler` until `shutdown` flips, then drains.
pub async fn serve<H, F>(
    listener: TcpListener,
    shared: Arc<Shared>,
    count_connections: bool,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Arc<Shared>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that trickles its request head (slowloris) is cut off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gauge = count_connections.then(|| ConnGauge::new(&shared));
        let shared = Arc::clone(&shared);
        let handler = handler.clone();
        let svc = service_fn(move |req| {
            let fut = handler(Arc::clone(&shared), req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _gauge = gauge;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections drained"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timeout: closing remaining connections"),
    }
}

/// `sidekey_connections_open`, decremented however the connection ends.
struct ConnGauge(Arc<Shared>);

impl ConnGauge {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.metrics.connections_open.inc();
        Self(Arc::clone(shared))
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.metrics.connections_open.dec();
    }
}
