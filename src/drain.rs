//! Drain: every task that carries a client's bytes (a served connection,
//! an intercepted TLS stream, a blind tunnel, a WebSocket splice) is
//! spawned here, so shutdown can ask them to finish, wait for them within
//! `drain_timeout`, and cut what is left. Nothing is detached.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

pub(crate) struct Drain {
    tracker: TaskTracker,
    /// Finish what is in flight, take nothing new (graceful).
    stop: CancellationToken,
    /// The drain timeout passed: end now.
    cut: CancellationToken,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            cut: CancellationToken::new(),
        }
    }

    /// Spawns a tracked task. At the deadline it is dropped (the socket
    /// closes) unless it has finished.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Not an async block with a `select!`: it would keep the task's
        // future twice in the spawned task, once as the block's capture and
        // once inside the select (rustc does not overlap them), which for a
        // served connection was ~2 KiB more per idle keep-alive client.
        self.tracker.spawn(Cut {
            task,
            cut: self.cut.clone().cancelled_owned(),
        });
    }

    /// Resolves when a graceful stop begins: connections stop taking new
    /// requests and close once idle.
    pub(crate) fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Open client connections (tracked tasks), for the gauge.
    pub(crate) fn open(&self) -> usize {
        self.tracker.len()
    }

    /// Asks every task to finish, waits up to `timeout`, then cuts what is
    /// left. Returns how many were cut.
    pub(crate) async fn drain(&self, timeout: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.tracker.len();
        self.cut.cancel();
        // Cut tasks end at their next poll; do not hang on a stuck one.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        left
    }
}

pin_project_lite::pin_project! {
    /// A task that ends when it finishes or when the drain cuts it.
    struct Cut<F> {
        #[pin]
        task: F,
        #[pin]
        cut: WaitForCancellationFutureOwned,
    }
}

impl<F: Future<Output = ()>> Future for Cut<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.cut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finishes_what_finishes_and_cuts_the_rest() {
        let d = Drain::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        d.spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.send(());
        });
        d.spawn(std::future::pending());
        assert_eq!(d.open(), 2);
        let cut = d.drain(Duration::from_secs(5)).await;
        assert_eq!(cut, 1, "the stuck task is cut");
        assert!(rx.await.is_ok(), "the finishing task completed");
        assert_eq!(d.open(), 0);
    }
}
