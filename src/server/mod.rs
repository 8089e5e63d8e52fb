//! The serving layer: one set-up for every connection, whether a TCP
//! stream from the accept loop or the decrypted stream of an intercepted
//! CONNECT. Same hyper builder (HTTP/1.1 with upgrades, HTTP/2 by
//! preface), same timeouts (first byte, request head, idle, HTTP/2
//! keep-alive), same drain. It knows nothing of what the requests mean.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::config::ConnLimits;
use crate::drain::Drain;
use crate::io::{Clock, Tracked};

/// HTTP/2 PINGs on an otherwise quiet connection; a peer that does not
/// answer within the timeout is gone.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted client connection. Whatever carries its bytes (the served
/// connection, then a tunnel or an intercepted stream after CONNECT) holds
/// this, so `max_connections` counts it until the last of them ends.
pub struct ConnInfo {
    pub peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
}

/// Accepts until `stop`, serving each connection as a task of `drain`.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    limits: ConnLimits,
    drain: Arc<Drain>,
    stop: CancellationToken,
    handler: H,
) where
    H: Fn(Arc<ConnInfo>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At the cap, stop accepting: new clients wait in the backlog.
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnInfo { peer, _slot: slot });
        let handler = handler.clone();
        let d = Arc::clone(&drain);
        drain.spawn(serve_connection(stream, limits, d, move |req| {
            handler(Arc::clone(&conn), req)
        }));
    }
}

/// Serves HTTP on `io` until the client closes it, it idles out, or the
/// drain stops it (in-flight requests finish; idle connections close).
pub async fn serve_connection<IO, H, F>(
    mut io: IO,
    limits: ConnLimits,
    drain: Arc<Drain>,
    handler: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let Some(prefix) = sniff(&mut io, limits.header_read_timeout).await else {
        return;
    };
    let clock = Clock::new();
    let io = Tracked::new(io, prefix, Arc::clone(&clock));
    let inflight = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&inflight);
    let svc = service_fn(move |req| {
        let busy = Busy::enter(&counted);
        let fut = handler(req);
        async move {
            let resp = fut.await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout.max(limits.header_read_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEPALIVE))
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = clock.last() + limits.idle_timeout;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = drain.stopping(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_at), if !closing => {
                let idle = inflight.load(Ordering::Relaxed) == 0
                    && clock.last() + limits.idle_timeout <= Instant::now();
                if idle {
                    tracing::debug!("idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Reads a connection's opening within `within`: the HTTP/2 preface, or
/// the whole first HTTP/1.1 request head. A client that sends nothing, half
/// a preface or half a head does not hold a socket. Later request heads
/// are bounded by the idle timeout (hyper's header timer, which also runs
/// while a keep-alive connection waits for its next request).
async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO, within: Duration) -> Option<Bytes> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            let n = buf.len().min(H2_PREFACE.len());
            let h2 = H2_PREFACE.starts_with(&buf[..n]);
            if (h2 && n == H2_PREFACE.len())
                || (!h2 && (buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_SNIFF))
            {
                return Some(());
            }
            if io.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(Some(())) => Some(buf.freeze()),
        Ok(None) => None,
        Err(_) => {
            tracing::debug!(after = ?within, "no complete request head within the header read timeout: closing");
            None
        }
    }
}

/// Past this, the head is hyper's to judge (and refuse as too large).
const MAX_SNIFF: usize = 64 * 1024;

/// A request being handled on a connection: it is not idle meanwhile.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(n))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
