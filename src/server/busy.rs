//! Requests in flight on a served connection, which keep it from idling
//! out: counted from the request's arrival to its response's head, or on
//! HTTP/2 to the end of the response's body.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::io::Clock;

/// A request being handled on a connection: it is not idle meanwhile,
/// and its end is the connection's last activity.
pub(super) struct Busy(Arc<AtomicUsize>, Arc<Clock>);

impl Busy {
    pub(super) fn enter(n: &Arc<AtomicUsize>, clock: &Arc<Clock>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(n), Arc::clone(clock))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.1.touch();
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's `Busy` until hyper drops it
/// (the body ended, or the stream was reset).
pub(super) struct Streaming {
    body: ProxyBody,
    _busy: Busy,
}

impl Streaming {
    pub(super) fn new(body: ProxyBody, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
