//! Byte splicing for blind CONNECT tunnels and upgraded (WebSocket)
//! connections: both ways until both sides close, or until neither side
//! has sent a byte for `idle`, so dead peers do not hold sockets.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::io::{Clock, Tracked};

/// Idle limit of an upgraded (WebSocket) connection.
const UPGRADE_IDLE: Duration = Duration::from_secs(3600);

pub(crate) async fn copy_bidirectional<A, B>(a: A, b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock::new();
    let mut a = Tracked::new(a, Bytes::new(), clock.clone());
    let mut b = Tracked::new(b, Bytes::new(), clock.clone());
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let last = clock.last();
        tokio::select! {
            r = &mut copy => return r,
            () = tokio::time::sleep_until(last + idle) => {
                if clock.last() == last {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                }
            }
        }
    }
}

/// Splices an upgraded client connection to the upgraded upstream one.
pub(crate) async fn splice_upgrades(client: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            if let Err(e) = copy_bidirectional(TokioIo::new(c), TokioIo::new(u), UPGRADE_IDLE).await
            {
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
        let task = tokio::spawn(copy_bidirectional(
            proxy_a,
            proxy_b,
            Duration::from_secs(10),
        ));
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
}
