//! Byte streams as the serving layer sees them: bytes already read while
//! sniffing the protocol are replayed in front, and the peer's traffic
//! marks the stream active, so idle connections and tunnels can be closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a stream last moved a byte, in either direction.
pub(crate) struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The instant of the last byte moved (the start if none was).
    pub(crate) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream with a replayed prefix and an activity clock.
pub(crate) struct Tracked<T> {
    inner: T,
    prefix: Bytes,
    clock: Arc<Clock>,
    /// HTTP/2 only: what counts is the peer's frames, not bytes.
    h2: Option<FrameScan>,
}

impl<T> Tracked<T> {
    /// Every byte read or written counts (HTTP/1.1 and tunnels, where
    /// sidekey sends nothing of its own accord).
    pub(crate) fn new(inner: T, prefix: Bytes, clock: Arc<Clock>) -> Self {
        Self {
            inner,
            prefix,
            clock,
            h2: None,
        }
    }

    /// An HTTP/2 connection (`prefix` starts with the preface): only the
    /// peer's frames count, except ACKs of sidekey's own keep-alive PINGs,
    /// and sidekey's writes do not. Else its PINGs and their ACKs would
    /// keep a connection that sends no request open forever.
    pub(crate) fn h2(inner: T, prefix: Bytes, clock: Arc<Clock>) -> Self {
        Self {
            h2: Some(FrameScan::new()),
            ..Self::new(inner, prefix, clock)
        }
    }
}

/// Follows HTTP/2 frame boundaries in what the peer sends (RFC 9113 §4.1:
/// a 9-byte header holding the payload length, type and flags).
struct FrameScan {
    /// Bytes of the preface or of a frame's payload still to pass.
    skip: usize,
    head: [u8; 9],
    have: usize,
}

const H2_PREFACE_LEN: usize = 24;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

impl FrameScan {
    fn new() -> Self {
        Self {
            skip: H2_PREFACE_LEN,
            head: [0; 9],
            have: 0,
        }
    }

    /// True when `bytes` complete the header of a frame that is the peer's
    /// own doing (anything but a PING ACK).
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut active = false;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let [l0, l1, l2, kind, flags, ..] = self.head;
                active |= !(kind == PING && flags & ACK != 0);
                self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                self.have = 0;
            }
        }
        active
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            if let Some(scan) = &mut this.h2 {
                // The sniffed preface and first frames: they set where the
                // next frame starts.
                scan.feed(&this.prefix[..n]);
            }
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Free the sniffed bytes' buffer, not just its view: an idle
                // keep-alive connection should hold as little as it can.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let fresh = &buf.filled()[before..];
            if this.h2.as_mut().is_none_or(|scan| scan.feed(fresh)) {
                this.clock.touch();
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if self.h2.is_none() && matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if self.h2.is_none() && matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::FrameScan;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn only_ping_acks_are_not_the_peers_activity() {
        let mut scan = FrameScan::new();
        assert!(!scan.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        // SETTINGS, split at every byte: one header, one activity.
        let settings = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
        let seen: Vec<bool> = settings.iter().map(|b| scan.feed(&[*b])).collect();
        assert_eq!(seen.iter().filter(|a| **a).count(), 1);
        // The ACK of sidekey's PING: not activity. The peer's own PING is.
        assert!(!scan.feed(&frame(0x6, 0x1, &[7; 8])));
        assert!(scan.feed(&frame(0x6, 0x0, &[7; 8])));
        // Several frames in one read: a HEADERS after an ACK counts.
        let mut two = frame(0x6, 0x1, &[1; 8]);
        two.extend(frame(0x1, 0x4, b"hpack"));
        assert!(scan.feed(&two));
        // A payload that holds bytes looking like a PING header is skipped.
        let mut data = frame(0x0, 0x0, &frame(0x6, 0x1, &[0; 8]));
        let tail = data.split_off(12);
        assert!(scan.feed(&data));
        assert!(!scan.feed(&tail));
        assert!(!scan.feed(&frame(0x6, 0x1, &[2; 8])));
    }
}
