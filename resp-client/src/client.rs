//! [`Client`]: the shard-local handle callers use. Every `submit*` call encodes its command into
//! the connection's shared write buffer and queues its reply slot *before returning*, so the
//! order of calls is the order on the wire and the order of replies, whichever order the
//! returned futures are awaited in.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::codec::encode_command;
use crate::conn::{self, Shared};
use crate::{Config, Error, Reply};

/// A pipelined Redis connection owned by one glommio executor (shard).
///
/// Cloning is cheap (an `Rc`); all clones share one connection, one write buffer and one reply
/// queue. The connection is made and remade in a background task; when the last clone is
/// dropped that task closes it, and requests still pending fail with [`Error::Closed`].
#[derive(Clone)]
pub struct Client {
    handle: Rc<Handle>,
}

/// Shuts the background task down when the last [`Client`] clone goes.
struct Handle {
    shared: Rc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

/// Health figures of a [`Client`], e.g. for a metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// A connection is established and serving requests.
    pub connected: bool,
    /// Requests sent (or queued to be written) and waiting for their reply.
    pub in_flight: usize,
    /// Connections established after the first one, i.e. recoveries from a lost connection.
    pub reconnects: u64,
    /// Connection attempts that failed (refused, timed out, handshake rejected).
    pub connect_errors: u64,
    /// Socket writes issued. `commands / writes` is the coalescing factor.
    pub writes: u64,
    /// Commands queued for sending (accepted by `submit*`).
    pub commands: u64,
}

impl Client {
    /// Creates the client and starts connecting to `config.addr` in the background.
    ///
    /// Requests made during the first connection attempt are queued and sent once it
    /// succeeds (they fail with [`Error::Disconnected`] if it fails; the attempt is bounded by
    /// [`Config::connect_timeout`]), so a client can be used right away. After that, requests
    /// made while disconnected fail at once. [`Client::wait_connected`] waits for a connection.
    ///
    /// # Panics
    /// When called outside a glommio executor (it spawns the connection task there).
    pub fn new(config: Config) -> Client {
        let shared = Rc::new(Shared::new(config));
        glommio::spawn_local(conn::run(shared.clone())).detach();
        Client {
            handle: Rc::new(Handle { shared }),
        }
    }

    /// Queues one command now and returns the future of its reply.
    ///
    /// The command is in the write buffer when this returns (or the future is already
    /// failed: [`Error::Disconnected`], [`Error::Overloaded`], [`Error::InvalidCommand`]);
    /// nothing happens on first poll. A Redis error reply (`-ERR ...`) is `Ok(Reply::Error)`.
    /// Commands that change the connection's reply pattern (`SUBSCRIBE`, `MONITOR`) are not
    /// supported.
    pub fn submit(&self, args: &[&[u8]]) -> ReplyFuture {
        let shared = &self.handle.shared;
        if args.is_empty() {
            return ReplyFuture::failed(Error::InvalidCommand(
                "a command needs at least one argument",
            ));
        }
        let mut st = shared.state.borrow_mut();
        if let Err(e) = st.admit(1) {
            return ReplyFuture::failed(e);
        }
        let cell = Rc::new(RefCell::new(OneState::default()));
        encode_command(&mut st.wbuf, args);
        st.commands += 1;
        st.pipeline.push(Slot::One(cell.clone()), Instant::now());
        st.wake_driver();
        ReplyFuture(ReplyState::Waiting(cell))
    }

    /// Queues several commands now, in order, all or none; the future yields their replies in
    /// the same order. A transport failure fails the whole batch with the first error.
    pub fn submit_many(&self, cmds: &[&[&[u8]]]) -> BatchFuture {
        let shared = &self.handle.shared;
        if cmds.iter().any(|args| args.is_empty()) {
            return BatchFuture::failed(Error::InvalidCommand(
                "a command needs at least one argument",
            ));
        }
        let mut st = shared.state.borrow_mut();
        if let Err(e) = st.admit(cmds.len()) {
            return BatchFuture::failed(e);
        }
        for args in cmds {
            encode_command(&mut st.wbuf, args);
        }
        BatchFuture::queue(&mut st, cmds.len())
    }

    /// Queues a [`Batch`] built earlier, like [`Client::submit_many`].
    pub fn submit_batch(&self, batch: Batch) -> BatchFuture {
        if let Some(e) = batch.error {
            return BatchFuture::failed(e);
        }
        let mut st = self.handle.shared.state.borrow_mut();
        if let Err(e) = st.admit(batch.count) {
            return BatchFuture::failed(e);
        }
        st.wbuf.extend_from_slice(&batch.buf);
        BatchFuture::queue(&mut st, batch.count)
    }

    /// Sends one command and waits for its reply. The command is queued on first poll; use
    /// [`Client::submit`] to queue at call time.
    pub async fn cmd(&self, args: &[&[u8]]) -> Result<Reply, Error> {
        self.submit(args).await
    }

    /// Waits until a connection is up, at most `timeout`; [`Error::Disconnected`] if it is not.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let shared = self.handle.shared.clone();
        let up = async move {
            std::future::poll_fn(|cx| shared.poll_connected(cx)).await;
            Ok(())
        };
        let late = async {
            glommio::timer::sleep(timeout).await;
            Err(Error::Disconnected)
        };
        futures_lite::future::or(up, late).await
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        self.handle.shared.state.borrow().connected
    }

    /// Current health figures.
    pub fn stats(&self) -> Stats {
        self.handle.shared.state.borrow().stats()
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &Config {
        &self.handle.shared.config
    }
}

/// Commands encoded ahead of time and queued together with [`Client::submit_batch`]. Sans-I/O:
/// building one touches no connection.
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
    count: usize,
    error: Option<Error>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends one command. An empty `args` poisons the batch: submitting it fails with
    /// [`Error::InvalidCommand`] and sends nothing.
    pub fn push(&mut self, args: &[&[u8]]) -> &mut Batch {
        if args.is_empty() {
            self.error = Some(Error::InvalidCommand(
                "a command needs at least one argument",
            ));
        } else {
            encode_command(&mut self.buf, args);
            self.count += 1;
        }
        self
    }

    /// Number of commands in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the batch holds no command.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Where one request's reply goes.
pub(crate) enum Slot {
    One(Rc<RefCell<OneState>>),
    Batch(Rc<RefCell<BatchState>>),
}

impl Slot {
    /// Delivers the reply (or failure) and wakes the waiting task.
    pub(crate) fn complete(self, result: Result<Reply, Error>) {
        match self {
            Slot::One(cell) => {
                let mut st = cell.borrow_mut();
                st.result = Some(result);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
            Slot::Batch(cell) => {
                let mut st = cell.borrow_mut();
                if st.error.is_some() {
                    return; // the batch already failed; later slots are moot
                }
                match result {
                    Ok(reply) => st.replies.push(reply),
                    Err(e) => st.error = Some(e),
                }
                if st.error.is_some() || st.replies.len() == st.expected {
                    if let Some(w) = st.waker.take() {
                        w.wake();
                    }
                }
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct OneState {
    result: Option<Result<Reply, Error>>,
    waker: Option<Waker>,
}

pub(crate) struct BatchState {
    replies: Vec<Reply>,
    expected: usize,
    error: Option<Error>,
    waker: Option<Waker>,
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The reply to one [`Client::submit`]: `'static`, not `Send` (shard-local).
#[must_use = "the command is sent either way; await the future to see its reply"]
pub struct ReplyFuture(ReplyState);

enum ReplyState {
    Failed(Option<Error>),
    Waiting(Rc<RefCell<OneState>>),
}

impl ReplyFuture {
    fn failed(e: Error) -> ReplyFuture {
        ReplyFuture(ReplyState::Failed(Some(e)))
    }
}

impl Future for ReplyFuture {
    type Output = Result<Reply, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            ReplyState::Failed(e) => {
                Poll::Ready(Err(e.take().expect("ReplyFuture polled after completion")))
            }
            ReplyState::Waiting(cell) => {
                let mut st = cell.borrow_mut();
                match st.result.take() {
                    Some(r) => Poll::Ready(r),
                    None => {
                        register(&mut st.waker, cx);
                        Poll::Pending
                    }
                }
            }
        }
    }
}

/// The replies to one [`Client::submit_many`] / [`Client::submit_batch`], in command order.
#[must_use = "the commands are sent either way; await the future to see their replies"]
pub struct BatchFuture(BatchFutureState);

enum BatchFutureState {
    Done(Option<Result<Vec<Reply>, Error>>),
    Waiting(Rc<RefCell<BatchState>>),
}

impl BatchFuture {
    fn failed(e: Error) -> BatchFuture {
        BatchFuture(BatchFutureState::Done(Some(Err(e))))
    }

    /// Pushes `n` slots (their commands are already in the write buffer).
    fn queue(st: &mut conn::State, n: usize) -> BatchFuture {
        if n == 0 {
            return BatchFuture(BatchFutureState::Done(Some(Ok(Vec::new()))));
        }
        let cell = Rc::new(RefCell::new(BatchState {
            replies: Vec::with_capacity(n),
            expected: n,
            error: None,
            waker: None,
        }));
        let now = Instant::now();
        st.commands += n as u64;
        for _ in 0..n {
            st.pipeline.push(Slot::Batch(cell.clone()), now);
        }
        st.wake_driver();
        BatchFuture(BatchFutureState::Waiting(cell))
    }
}

impl Future for BatchFuture {
    type Output = Result<Vec<Reply>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            BatchFutureState::Done(r) => {
                Poll::Ready(r.take().expect("BatchFuture polled after completion"))
            }
            BatchFutureState::Waiting(cell) => {
                let mut st = cell.borrow_mut();
                if let Some(e) = &st.error {
                    return Poll::Ready(Err(e.clone()));
                }
                if st.replies.len() == st.expected {
                    return Poll::Ready(Ok(std::mem::take(&mut st.replies)));
                }
                register(&mut st.waker, cx);
                Poll::Pending
            }
        }
    }
}
