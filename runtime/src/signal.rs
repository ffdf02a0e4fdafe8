//! A one-waiter wake-up flag for shard-local tasks.
//!
//! A writer task sleeps on it; anyone who appends to its buffer raises it. Raising an already
//! raised flag is free, which is what coalesces many frames into one write.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Shard-local (not `Send`) wake-up flag with at most one waiter.
#[derive(Default)]
pub struct Signal {
    raised: Cell<bool>,
    /// A `Cell` (taken and put back) rather than a `RefCell`: 8 bytes less in every
    /// connection's outbox.
    waker: Cell<Option<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes the waiter, if any.
    pub fn raise(&self) {
        if !self.raised.replace(true) {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Waits until the flag is raised, then lowers it.
    pub fn wait(&self) -> Wait<'_> {
        Wait(self)
    }
}

/// Future returned by [`Signal::wait`].
pub struct Wait<'a>(&'a Signal);

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.raised.replace(false) {
            return Poll::Ready(());
        }
        let w = match self.0.waker.take() {
            Some(old) if old.will_wake(cx.waker()) => old,
            _ => cx.waker().clone(),
        };
        self.0.waker.set(Some(w));
        Poll::Pending
    }
}
