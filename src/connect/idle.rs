//! `copy_bidirectional` with an idle timeout: a tunnel where neither side
//! has sent a byte for `idle` is closed, so dead peers do not hold sockets.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

pub async fn copy_bidirectional<A, B>(a: A, b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity {
        inner: a,
        last: Arc::clone(&last),
        start,
    };
    let mut b = Activity {
        inner: b,
        last: Arc::clone(&last),
        start,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        tokio::select! {
            r = &mut copy => return r,
            _ = tokio::time::sleep_until(deadline) => {
                let now_since = Duration::from_millis(last.load(Ordering::Relaxed));
                if now_since == since {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "tunnel idle"));
                }
            }
        }
    }
}

/// Records the time of the last successful read on either side.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = self.start.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
