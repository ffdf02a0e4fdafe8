//! The executor seam: spawn, sleep and time out on whichever backend runs this shard.
//!
//! Two backends run the same shard code:
//! - [`Backend::Uring`]: glommio (io_uring), the default where the kernel allows it;
//! - [`Backend::Epoll`]: a tokio current-thread runtime with a `LocalSet`, one per shard and
//!   pinned like glommio's executors (no work stealing), for hosts whose seccomp profile denies
//!   io_uring (AWS Fargate).
//!
//! Each shard thread records its backend in a thread-local when it starts; the functions here
//! dispatch on it (a predictable branch, no allocation). Threads that never set it (unit tests
//! that start a bare glommio executor) count as glommio.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Which event loop a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// glommio over io_uring.
    Uring,
    /// tokio current-thread over epoll.
    Epoll,
}

impl Backend {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

thread_local! {
    static CURRENT: Cell<Backend> = const { Cell::new(Backend::Uring) };
}

/// The backend of the calling shard thread.
pub fn current() -> Backend {
    CURRENT.with(|c| c.get())
}

pub(crate) fn set_current(b: Backend) {
    CURRENT.with(|c| c.set(b));
}

/// A spawned shard-local task. Awaiting it yields its output; dropping it cancels it;
/// [`Task::detach`] lets it run on its own.
pub struct Task<T: 'static>(Option<Inner<T>>);

enum Inner<T: 'static> {
    Uring(glommio::Task<T>),
    Epoll(tokio::task::JoinHandle<T>),
}

impl<T: 'static> Task<T> {
    /// Lets the task run to completion unobserved.
    pub fn detach(mut self) {
        match self.0.take() {
            Some(Inner::Uring(t)) => {
                t.detach();
            }
            Some(Inner::Epoll(h)) => drop(h), // a dropped JoinHandle detaches in tokio
            None => {}
        }
    }
}

impl<T: 'static> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(Inner::Epoll(h)) = &self.0 {
            h.abort();
        }
        // glommio cancels a task whose handle is dropped.
    }
}

impl<T: 'static> Future for Task<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.0.as_mut() {
            Some(Inner::Uring(t)) => Pin::new(t).poll(cx),
            Some(Inner::Epoll(h)) => match Pin::new(h).poll(cx) {
                Poll::Ready(Ok(v)) => Poll::Ready(v),
                Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only an abort cancels a tokio task, and only Drop aborts: unreachable while
                // someone awaits. Stay pending rather than invent an output.
                Poll::Ready(Err(_)) => Poll::Pending,
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// Spawns `fut` on the calling shard.
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    Task(Some(match current() {
        Backend::Uring => Inner::Uring(glommio::spawn_local(fut)),
        Backend::Epoll => Inner::Epoll(tokio::task::spawn_local(fut)),
    }))
}

/// Sleeps on the calling shard's timer.
pub async fn sleep(d: Duration) {
    match current() {
        Backend::Uring => glommio::timer::sleep(d).await,
        Backend::Epoll => tokio::time::sleep(d).await,
    }
}

/// Runs `fut` for at most `d`; `None` if the time ran out first (the future is dropped).
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}
