//! The serving layer: one set-up for every connection, whether a TCP
//! stream from the accept loop or the decrypted stream of an intercepted
//! CONNECT. Same hyper set-up (HTTP/1.1 with upgrades, HTTP/2 by
//! preface), same timeouts (first byte, request head, idle, HTTP/2
//! keep-alive), same drain. It knows nothing of what the requests mean.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// PINGs at least twice per idle timeout (not below a second), so a dead
/// peer of a long request is noticed before an idle one would be closed.
/// They never count as activity (see `Tracked::h2`).
fn h2_keepalive(idle_timeout: Duration) -> Duration {
    H2_KEEPALIVE
        .min(idle_timeout / 2)
        .max(Duration::from_secs(1))
}

/// An accepted client connection. Whatever carries its bytes (the served
/// connection, then a tunnel or an intercepted stream after CONNECT) holds
/// this, so `max_connections` counts it until the last of them ends.
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
}

/// Accepts until `stop`, serving each connection as a task of `drain`.
pub(crate) async fn accept_loop<H, F>(
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
pub(crate) async fn serve_connection<IO, H, F>(
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
    let h2 = prefix.starts_with(H2_PREFACE);
    let clock = Clock::new();
    let io = if h2 {
        Tracked::h2(io, prefix, Arc::clone(&clock))
    } else {
        Tracked::new(io, prefix, Arc::clone(&clock))
    };
    let io = TokioIo::new(io);
    let inflight = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&inflight);
    let busy_clock = Arc::clone(&clock);
    let svc = service_fn(move |req| {
        let busy = Busy::enter(&counted, &busy_clock);
        // hyper keeps the slot for a request's future for the life of the
        // connection; the pipeline's future is ~3 KiB. Boxed, the slot is a
        // pointer and an idle keep-alive connection does not hold the rest.
        let fut = Box::pin(handler(req));
        async move {
            let resp = fut.await;
            // On HTTP/2 sidekey's writes are not activity (`Tracked::h2`):
            // a response still streaming keeps its request in flight.
            let resp = if h2 {
                resp.map(|b| crate::body::boxed(Streaming::new(b, busy)))
            } else {
                drop(busy);
                resp
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let closer = Closer {
        idle_timeout: limits.idle_timeout,
        drain,
        clock,
        inflight,
    };
    // The sniff already knows the protocol, so each gets its own hyper
    // connection rather than hyper-util's `auto` (which would sniff again
    // and size every connection for HTTP/2's state). HTTP/2 is boxed: an
    // HTTP/1.1 connection's task carries only HTTP/1.1's state.
    if h2 {
        let mut conn = Box::pin(
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(h2_keepalive(limits.idle_timeout)))
                .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
                .serve_connection(io, svc),
        );
        closer.drive(conn.as_mut()).await;
    } else {
        // Pinned here and lent to `drive`: passed by value, it would be
        // held twice in this task (`drive`'s argument, then its pinned
        // local), which an idle keep-alive connection pays for.
        let conn = std::pin::pin!(http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout.max(limits.header_read_timeout))
            .serve_connection(io, svc)
            .with_upgrades());
        closer.drive(conn).await;
    }
}

/// A hyper server connection that can be asked to finish gracefully.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S> Graceful for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Future: Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// What ends a served connection besides the client: the drain, and the
/// idle watchdog (no request in flight and no byte moved).
struct Closer {
    idle_timeout: Duration,
    drain: Arc<Drain>,
    clock: Arc<Clock>,
    inflight: Arc<AtomicUsize>,
}

impl Closer {
    async fn drive<C: Graceful>(self, mut conn: Pin<&mut C>) {
        let idle_timeout = self.idle_timeout;
        let mut closing = false;
        let mut check_at = self.clock.last() + idle_timeout;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = self.drain.stopping(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(check_at), if !closing => {
                    let now = Instant::now();
                    let idle_at = self.clock.last() + idle_timeout;
                    if self.inflight.load(Ordering::Relaxed) > 0 {
                        // Not idle, whatever the clock says; look again
                        // later (a request's end touches the clock), never
                        // at a time already past, which would spin.
                        check_at = now + idle_timeout;
                    } else if idle_at <= now {
                        tracing::debug!("idle connection closed");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        check_at = idle_at;
                    }
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
            tracing::debug!(
                after_ms = within.as_millis() as u64,
                "no complete request head within the header read timeout: closing"
            );
            None
        }
    }
}

/// Past this, the head is hyper's to judge (and refuse as too large).
const MAX_SNIFF: usize = 64 * 1024;

mod busy;
use busy::{Busy, Streaming};

#[cfg(test)]
mod tests;
