//! [`RegistryFuture`]: the named, `'static` future every registry operation returns. Its
//! Redis commands were queued when it was created; polling only waits for and parses replies.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use resp_client::{BatchFuture, Reply, ReplyFuture};

use crate::Error;

/// The result of one registry operation, ready (memory, validation errors) or in flight (Redis).
#[must_use = "the operation was issued either way; await the future to see its result"]
pub struct RegistryFuture<T> {
    state: State<T>,
}

enum State<T> {
    Ready(Option<Result<T, Error>>),
    One {
        reply: ReplyFuture,
        ctx: String,
        finish: fn(&str, Reply) -> Result<T, Error>,
    },
    Batch {
        replies: BatchFuture,
        finish: fn(Vec<Reply>) -> Result<T, Error>,
    },
}

impl<T> RegistryFuture<T> {
    pub(crate) fn ready(result: Result<T, Error>) -> Self {
        RegistryFuture {
            state: State::Ready(Some(result)),
        }
    }

    /// One reply, parsed by `finish` with `ctx` (e.g. the user id of a lookup).
    pub(crate) fn one(
        reply: ReplyFuture,
        ctx: String,
        finish: fn(&str, Reply) -> Result<T, Error>,
    ) -> Self {
        RegistryFuture {
            state: State::One { reply, ctx, finish },
        }
    }

    /// A pipelined batch's replies, checked by `finish`.
    pub(crate) fn batch(replies: BatchFuture, finish: fn(Vec<Reply>) -> Result<T, Error>) -> Self {
        RegistryFuture {
            state: State::Batch { replies, finish },
        }
    }
}

impl<T: Unpin> Future for RegistryFuture<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Ready(r) => {
                Poll::Ready(r.take().expect("RegistryFuture polled after completion"))
            }
            State::One { reply, ctx, finish } => match Pin::new(reply).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(r)) => Poll::Ready(finish(ctx, r)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Redis(e))),
            },
            State::Batch { replies, finish } => match Pin::new(replies).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(r)) => Poll::Ready(finish(r)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Redis(e))),
            },
        }
    }
}
