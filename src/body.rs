//! Bodies: streamed both ways; only a request body up to
//! `retry_body_limit` is kept, so that a 401 can be retried with it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use tokio::sync::Notify;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

pub(crate) fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(crate) fn boxed<B>(b: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// A request body on a route that may retry on 401: it goes upstream as it
/// arrives (client-streaming gRPC and interactive uploads must not wait),
/// while its first `limit` bytes are copied aside. Only a body that ended
/// within the limit can be replayed.
pub(crate) fn tee<B>(body: B, limit: u64) -> (ProxyBody, Arc<Capture>)
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let state = if body.is_end_stream() {
        // No body (a GET): nothing will poll it, and nothing needs keeping.
        Kept::Complete(Bytes::new())
    } else if body.size_hint().lower() > limit {
        Kept::Overflowed
    } else {
        Kept::Filling(BytesMut::new())
    };
    let capture = Arc::new(Capture {
        state: Mutex::new(state),
        limit,
        done: Notify::new(),
    });
    let tee = Tee {
        inner: body,
        capture: Arc::clone(&capture),
    };
    (boxed(tee), capture)
}

/// The copy of a request body that `tee` keeps.
pub(crate) struct Capture {
    state: Mutex<Kept>,
    limit: u64,
    done: Notify,
}

enum Kept {
    Filling(BytesMut),
    Complete(Bytes),
    /// Past the limit, trailers, or an error: not replayable.
    Overflowed,
}

impl Capture {
    /// The whole body, if it ended within the limit. An upstream may answer
    /// before the last bytes went out; give those up to `wait` to finish.
    pub(crate) async fn replayable(&self, wait: std::time::Duration) -> Option<Bytes> {
        let notified = self.done.notified();
        if let Some(done) = self.finished() {
            return done;
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.finished().flatten()
    }

    /// `Some(body or None)` once the outcome is known.
    fn finished(&self) -> Option<Option<Bytes>> {
        match &*self.lock() {
            Kept::Complete(b) => Some(Some(b.clone())),
            Kept::Overflowed => Some(None),
            Kept::Filling(_) => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, frame: Option<&Frame<Bytes>>, ended: bool) {
        let mut st = self.lock();
        let next = match (&mut *st, frame) {
            (Kept::Filling(buf), Some(f)) => match f.data_ref() {
                Some(d) if (buf.len() + d.len()) as u64 <= self.limit => {
                    buf.extend_from_slice(d);
                    None
                }
                // Too long, or trailers (which `full` cannot replay).
                _ => Some(Kept::Overflowed),
            },
            (Kept::Filling(buf), None) => Some(Kept::Complete(std::mem::take(buf).freeze())),
            _ => None,
        };
        if let Some(next) = next {
            *st = next;
        }
        if let (true, Kept::Filling(buf)) = (ended, &mut *st) {
            *st = Kept::Complete(std::mem::take(buf).freeze());
        }
        let known = !matches!(*st, Kept::Filling(_));
        drop(st);
        if known {
            self.done.notify_waiters();
        }
    }

    fn fail(&self) {
        *self.lock() = Kept::Overflowed;
        self.done.notify_waiters();
    }
}

struct Tee<B> {
    inner: B,
    capture: Arc<Capture>,
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let ended = self.inner.is_end_stream();
                self.capture.record(Some(frame), ended);
            }
            Poll::Ready(None) => self.capture.record(None, true),
            Poll::Ready(Some(Err(_))) => self.capture.fail(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    use std::time::Duration;

    type Chunks = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    fn chunks(n: usize, size: usize) -> StreamBody<Chunks> {
        let v: Vec<Result<Frame<Bytes>, BoxError>> = (0..n)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; size]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn small_bodies_stream_and_are_kept_for_a_replay() {
        let (body, kept) = tee(Full::new(Bytes::from_static(b"hello")), 10);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
        let kept = kept.replayable(Duration::ZERO).await.unwrap();
        assert_eq!(&kept[..], b"hello");
        let (body, kept) = tee(Empty::<Bytes>::new(), 10);
        assert!(
            kept.replayable(Duration::ZERO).await.unwrap().is_empty(),
            "no body: known at once"
        );
        drop(body);
        let (body, kept) = tee(chunks(2, 4), 10);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 8);
        assert_eq!(kept.replayable(Duration::ZERO).await.unwrap().len(), 8);
    }

    #[tokio::test]
    async fn long_bodies_stream_whole_but_are_not_replayable() {
        let (body, kept) = tee(chunks(4, 8), 10);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 32);
        assert!(kept.replayable(Duration::ZERO).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_body_is_not_replayed() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let (mut body, kept) = tee(StreamBody::new(Box::pin(stream)), 100);
        tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .await
            .unwrap();
        // The first frame goes on before the body ends.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"part");
        assert!(kept.replayable(Duration::from_secs(1)).await.is_none());
        drop(tx);
    }
}
