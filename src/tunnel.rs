//! Byte splicing for blind CONNECT tunnels and upgraded (WebSocket)
//! connections: both ways until both sides close, or until neither side
//! has sent a byte for `idle`, so dead peers do not hold sockets. During a
//! drain the limit drops to a second: an idle pooled connection would
//! otherwise hold the pod for the whole `drain_timeout`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain::Drain;
use crate::io::{Clock, Tracked};

/// Idle limit of an upgraded (WebSocket) connection.
const UPGRADE_IDLE: Duration = Duration::from_secs(3600);

/// Idle limit of every tunnel once a drain began: what moves no bytes for
/// this long is a pooled connection waiting for a request that will not
/// come, closed as an idle keep-alive connection is.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

pub(crate) async fn copy_bidirectional<A, B>(
    a: A,
    b: B,
    idle: Duration,
    drain: &Drain,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock::new();
    let mut a = Tracked::new(a, Bytes::new(), clock.clone());
    let mut b = Tracked::new(b, Bytes::new(), clock.clone());
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let mut idle = idle;
    loop {
        let last = clock.last();
        tokio::select! {
            r = &mut copy => return r,
            // Counted from the last byte, so a tunnel idle when the drain
            // begins closes at once.
            () = drain.stopping(), if idle > DRAIN_IDLE => idle = DRAIN_IDLE,
            () = tokio::time::sleep_until(last + idle) => {
                if clock.last() == last {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                }
            }
        }
    }
}

/// Splices an upgraded client connection to the upgraded upstream one.
pub(crate) async fn splice_upgrades(client: OnUpgrade, upstream: OnUpgrade, drain: Arc<Drain>) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let (c, u) = (TokioIo::new(c), TokioIo::new(u));
            if let Err(e) = copy_bidirectional(c, u, UPGRADE_IDLE, &drain).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_tunnels_close_active_ones_do_not() {
        let (client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            copy_bidirectional(proxy_a, proxy_b, Duration::from_secs(10), &Drain::new()).await
        });
        let mut client = client;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.unwrap();
        }
        assert!(!task.is_finished(), "active tunnel must stay open");
        tokio::time::sleep(Duration::from_secs(11)).await;
        let r = task.await.unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn during_a_drain_a_tunnel_idle_for_a_second_closes() {
        let drain = Arc::new(Drain::new());
        let t0 = tokio::time::Instant::now();
        // Tunnel 1: pooled and idle since it opened.
        let (_idle_client, a) = tokio::io::duplex(64);
        let (b, _idle_server) = tokio::io::duplex(64);
        let d = Arc::clone(&drain);
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        drain.spawn(async move {
            let r = copy_bidirectional(a, b, Duration::from_secs(3600), &d).await;
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
            let _ = closed_tx.send(t0.elapsed());
        });
        // Tunnel 2: a byte every 500 ms until 6.5 s, across the drain's
        // start at 5 s.
        let (mut busy_client, a) = tokio::io::duplex(64);
        let (b, mut busy_server) = tokio::io::duplex(64);
        let d = Arc::clone(&drain);
        drain.spawn(async move {
            let _ = copy_bidirectional(a, b, Duration::from_secs(3600), &d).await;
        });
        let writer = tokio::spawn(async move {
            for _ in 0..14 {
                busy_client.write_all(b"x").await.unwrap();
                let mut buf = [0u8; 1];
                busy_server.read_exact(&mut buf).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (busy_client, busy_server)
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cut = drain.drain(Duration::from_secs(30)).await;
        assert_eq!(cut, 0, "both tunnels closed by themselves");
        // The idle one at once (not after the 30 s drain timeout); the busy
        // one a second after its last byte at 6.5 s.
        let idle_closed = closed_rx.await.unwrap();
        assert!(idle_closed < Duration::from_millis(5100), "{idle_closed:?}");
        let all_closed = t0.elapsed();
        assert!(
            (Duration::from_millis(7400)..Duration::from_millis(7700)).contains(&all_closed),
            "{all_closed:?}"
        );
        let _ = writer.await.unwrap();
    }
}
