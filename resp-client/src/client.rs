//! [`Client`]: the shard-local handle callers use. Every `submit*` call encodes its command into
//! the connection's shared write buffer and queues its reply slot *before returning*, so the
//! order of calls is the order on the wire and the order of replies, whichever order the
//! returned futures are awaited in.
//!
//! A `Client` is either one node's connection (`NodeClient`, this file) or a cluster
//! client (`crate::cluster`), which keeps one `NodeClient` per master and routes each command
//! by its key's slot.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;

use crate::cluster::{ClusterClient, RoutedReply};
use crate::codec::encode_command;
use crate::conn::{self, Cells, Shared};
use crate::{Config, Error, Reply};

/// A pipelined Redis client owned by one shard executor: one connection to one
/// Redis, or (with [`Config::cluster`]) one connection per Redis Cluster master.
///
/// Cloning is cheap (an `Rc`); all clones share the connections, write buffers and reply
/// queues. Connections are made and remade in background tasks; when the last clone is
/// dropped they are closed, and requests still pending fail with [`Error::Closed`].
#[derive(Clone)]
pub struct Client {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Node(NodeClient),
    Cluster(ClusterClient),
}

/// One node's pipelined connection: the whole client in single-node mode, one per master in
/// cluster mode.
#[derive(Clone)]
pub(crate) struct NodeClient {
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
    /// Request round trip (written to the socket to reply received), in microseconds: an
    /// exponentially weighted moving average (weight 1/8 per sample; one sample, the oldest
    /// request answered, per 8 socket reads), 0 before the first reply. In cluster mode, the
    /// slowest node's.
    pub latency_us: u64,
    /// Cluster mode: `MOVED`/`ASK`/retry redirects followed. 0 for one node.
    pub redirects: u64,
    /// Cluster mode: slot maps loaded (the first one included). 0 for one node.
    pub topology_refreshes: u64,
    /// Nodes connected to (1 for one node; the masters in cluster mode).
    pub nodes: usize,
    /// Connections reset because a request got no reply within
    /// [`Config::command_timeout`] (a slow or stuck server). Per-call timeouts
    /// ([`Client::submit_with_timeout`], [`Batch::with_timeout`]) do not reset anything and are
    /// not counted.
    pub timeouts: u64,
    /// Requests refused with [`Error::Overloaded`] ([`Config::max_in_flight`] reached).
    pub overloaded: u64,
}

impl Client {
    /// Creates the client and starts connecting in the background: to `config.addr`, or in
    /// cluster mode to the seed nodes, to learn the slot map, and then to every master.
    ///
    /// Requests made during the first connection attempt are queued and sent once it
    /// succeeds (they fail with [`Error::Disconnected`] if it fails; the attempt is bounded by
    /// [`Config::connect_timeout`]), so a client can be used right away. After that, requests
    /// made while disconnected fail at once (in cluster mode they are retried on the slot's
    /// new master until the command timeout). [`Client::wait_connected`] waits for a
    /// connection.
    ///
    /// # Panics
    /// When called outside a shard executor (glommio, or tokio in a `LocalSet`) (it spawns the connection tasks there).
    pub fn new(config: Config) -> Client {
        let inner = if config.cluster {
            Inner::Cluster(ClusterClient::new(config))
        } else {
            Inner::Node(NodeClient::new(config))
        };
        Client { inner }
    }

    /// Queues one command now and returns the future of its reply.
    ///
    /// The command is in the write buffer when this returns (or the future is already
    /// failed: [`Error::Disconnected`], [`Error::Overloaded`], [`Error::InvalidCommand`]);
    /// nothing happens on first poll. A Redis error reply (`-ERR ...`) is `Ok(Reply::Error)`.
    /// Commands that change the connection's reply pattern (`SUBSCRIBE`, `MONITOR`) are not
    /// supported.
    ///
    /// In cluster mode the command goes to the master of its key's slot (see
    /// [`crate::route`]); `MOVED`/`ASK` redirects are followed when the future is polled, so
    /// the order of two commands on one key is kept unless a redirect comes between them.
    pub fn submit(&self, args: &[&[u8]]) -> ReplyFuture {
        match &self.inner {
            Inner::Node(n) => n.submit(args),
            Inner::Cluster(c) => c.submit(args),
        }
    }

    /// Like [`Client::submit`], with a deadline of its own: the future fails with
    /// [`Error::Timeout`] if the reply has not arrived `timeout` after this call (the command
    /// may have executed). The connection is not reset for it: a late reply is read and
    /// dropped. The connection-wide [`Config::command_timeout`] still applies too, so a
    /// `timeout` longer than that does not extend it (cluster mode: the command's usual bound,
    /// redirects and failover waits included, see the crate doc).
    ///
    /// Costs one timer per call; [`Client::submit`] (the connection-wide timeout) costs none.
    pub fn submit_with_timeout(&self, args: &[&[u8]], timeout: Duration) -> ReplyFuture {
        self.submit(args).with_timeout(timeout)
    }

    /// Waits until `n` more requests can be queued without [`Error::Overloaded`] (cluster mode:
    /// on every master's connection): backpressure for a producer that would rather wait than
    /// shed load. Resolves at once when there is room; fails at once with
    /// [`Error::Disconnected`] / [`Error::Closed`] when requests would fail for another reason,
    /// and with [`Error::Overloaded`] when `n` exceeds [`Config::max_in_flight`]. Not bounded
    /// in time: wrap it in a timeout. On one shard executor nothing else runs between this
    /// resolving and the caller's next `submit*`, so the room is still there.
    pub async fn ready(&self, n: usize) -> Result<(), Error> {
        match &self.inner {
            Inner::Node(node) => node.ready(n).await,
            Inner::Cluster(c) => c.ready(n).await,
        }
    }

    /// Queues several commands now, in order, all or none; the future yields their replies in
    /// the same order. A transport failure fails the whole batch with the first error.
    ///
    /// In cluster mode the batch is split per node and the replies are put back in order.
    pub fn submit_many(&self, cmds: &[&[&[u8]]]) -> BatchFuture {
        match &self.inner {
            Inner::Node(n) => n.submit_many(cmds),
            Inner::Cluster(c) => {
                let mut batch = Batch::new();
                for args in cmds {
                    batch.push(args);
                }
                c.submit_batch(batch)
            }
        }
    }

    /// Queues a [`Batch`] built earlier, like [`Client::submit_many`]. With
    /// [`Batch::with_timeout`], the future fails with [`Error::Timeout`] if the replies have not
    /// all arrived in time (see [`Client::submit_with_timeout`]).
    pub fn submit_batch(&self, batch: Batch) -> BatchFuture {
        let timeout = batch.timeout;
        let future = match &self.inner {
            Inner::Node(n) => n.submit_batch(batch),
            Inner::Cluster(c) => c.submit_batch(batch),
        };
        match timeout {
            Some(t) => future.with_timeout(t),
            None => future,
        }
    }

    /// Sends one command and waits for its reply. The command is queued on first poll; use
    /// [`Client::submit`] to queue at call time.
    pub async fn cmd(&self, args: &[&[u8]]) -> Result<Reply, Error> {
        self.submit(args).await
    }

    /// Waits until a connection is up (cluster mode: the slot map is known and every master
    /// is connected), at most `timeout`; [`Error::Disconnected`] if it is not.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        match &self.inner {
            Inner::Node(n) => n.wait_connected(timeout).await,
            Inner::Cluster(c) => c.wait_connected(timeout).await,
        }
    }

    /// True while connected (cluster mode: slot map known, every master connected).
    pub fn is_connected(&self) -> bool {
        match &self.inner {
            Inner::Node(n) => n.is_connected(),
            Inner::Cluster(c) => c.is_connected(),
        }
    }

    /// Current health figures (cluster mode: summed over the nodes).
    pub fn stats(&self) -> Stats {
        match &self.inner {
            Inner::Node(n) => n.stats(),
            Inner::Cluster(c) => c.stats(),
        }
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &Config {
        match &self.inner {
            Inner::Node(n) => n.config(),
            Inner::Cluster(c) => c.config(),
        }
    }
}

impl NodeClient {
    /// Creates the client and starts connecting to `config.addr` in the background.
    ///
    /// Requests made during the first connection attempt are queued and sent once it
    /// succeeds (they fail with [`Error::Disconnected`] if it fails; the attempt is bounded by
    /// [`Config::connect_timeout`]), so a client can be used right away. After that, requests
    /// made while disconnected fail at once. [`Client::wait_connected`] waits for a connection.
    ///
    /// # Panics
    /// When called outside a shard executor (glommio, or tokio in a `LocalSet`) (it spawns the connection task there).
    pub fn new(config: Config) -> NodeClient {
        let shared = Rc::new(Shared::new(config));
        runtime::rt::spawn(conn::run(shared.clone())).detach();
        NodeClient {
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
        let idx = st.cells.alloc();
        encode_command(&mut st.wbuf, args);
        st.commands += 1;
        st.pipeline.push_unsent(Slot::One(idx));
        st.wake_driver();
        drop(st);
        ReplyFuture::waiting(ReplyCell {
            shared: shared.clone(),
            idx,
        })
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

    /// Waits until a connection is up, at most `timeout`; [`Error::Disconnected`] if it is not.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let shared = self.handle.shared.clone();
        let up = async move {
            std::future::poll_fn(|cx| shared.poll_connected(cx)).await;
            Ok(())
        };
        let late = async {
            runtime::rt::sleep(timeout).await;
            Err(Error::Disconnected)
        };
        futures_lite::future::or(up, late).await
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        self.handle.shared.state.borrow().connected
    }

    /// See [`Client::ready`].
    pub async fn ready(&self, n: usize) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.handle.shared.poll_room(n, cx)).await
    }

    /// Current health figures.
    pub fn stats(&self) -> Stats {
        self.handle.shared.state.borrow().stats()
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &Config {
        &self.handle.shared.config
    }

    /// `Ok` if `n` more requests may be queued now (all-or-none checks across nodes).
    pub fn admit(&self, n: usize) -> Result<(), Error> {
        self.handle.shared.state.borrow_mut().admit(n)
    }

    /// Queues one command already encoded (`encoded`, concatenated) and returns its reply
    /// cell: the cluster's fast path.
    pub fn queue_encoded_one(&self, encoded: &[u8]) -> Result<ReplyCell, Error> {
        let shared = &self.handle.shared;
        let mut st = shared.state.borrow_mut();
        st.admit(1)?;
        let idx = st.cells.alloc();
        st.wbuf.extend_from_slice(encoded);
        st.commands += 1;
        st.pipeline.push_unsent(Slot::One(idx));
        st.wake_driver();
        drop(st);
        Ok(ReplyCell {
            shared: shared.clone(),
            idx,
        })
    }

    /// Queues `n` commands already encoded in `parts` (concatenated in order), all or none.
    pub fn queue_encoded<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        n: usize,
    ) -> BatchFuture {
        let mut st = self.handle.shared.state.borrow_mut();
        if let Err(e) = st.admit(n) {
            return BatchFuture::failed(e);
        }
        for part in parts {
            st.wbuf.extend_from_slice(part);
        }
        BatchFuture::queue(&mut st, n)
    }
}

/// Commands encoded ahead of time and queued together with [`Client::submit_batch`]. Sans-I/O:
/// building one touches no connection.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) buf: BytesMut,
    pub(crate) count: usize,
    pub(crate) error: Option<Error>,
    pub(crate) timeout: Option<Duration>,
}

/// What a [`Batch`] reserves on its first command: the registry's 4-command `register`
/// pipeline fits.
const BATCH_START_CAPACITY: usize = 512;

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
            if self.buf.capacity() == 0 {
                // One allocation for a typical batch instead of a few reallocations.
                self.buf.reserve(BATCH_START_CAPACITY);
            }
            encode_command(&mut self.buf, args);
            self.count += 1;
        }
        self
    }

    /// Gives the batch a deadline of its own: its future fails with [`Error::Timeout`] if the
    /// replies have not all arrived `timeout` after [`Client::submit_batch`] (see
    /// [`Client::submit_with_timeout`]: the connection is not reset, the connection-wide
    /// timeout still applies).
    pub fn with_timeout(&mut self, timeout: Duration) -> &mut Batch {
        self.timeout = Some(timeout);
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
    /// A [`ReplyFuture`]'s cell: an index into the connection's [`Cells`] (pooled, no
    /// allocation per request).
    One(u32),
    Batch(Rc<RefCell<BatchState>>),
}

impl Slot {
    /// Delivers the reply (or failure) and wakes the waiting task.
    pub(crate) fn complete(self, cells: &mut Cells, result: Result<Reply, Error>) {
        match self {
            Slot::One(idx) => cells.complete(idx, result),
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

/// The reply slot of one request queued on a node connection: a cell in its pool, given back
/// when both the reply has arrived and the future is done with it.
pub(crate) struct ReplyCell {
    shared: Rc<Shared>,
    /// [`TAKEN`] once the result was taken.
    idx: u32,
}

const TAKEN: u32 = u32::MAX;

impl ReplyCell {
    /// The result if it arrived; else registers `cx`'s waker.
    #[inline]
    pub(crate) fn poll_take(&mut self, cx: &Context<'_>) -> Poll<Result<Reply, Error>> {
        assert!(self.idx != TAKEN, "ReplyFuture polled after completion");
        let ready = self.shared.state.borrow_mut().cells.poll_take(self.idx, cx);
        if ready.is_ready() {
            self.idx = TAKEN;
        }
        ready
    }
}

impl Drop for ReplyCell {
    fn drop(&mut self) {
        if self.idx != TAKEN {
            // Never borrowed here while the state is (no drop of a reply future inside the
            // client's own borrows); if it were, the cell would only stay unused.
            if let Ok(mut st) = self.shared.state.try_borrow_mut() {
                st.cells.abandon(self.idx);
            }
        }
    }
}

pub(crate) struct BatchState {
    replies: Vec<Reply>,
    expected: usize,
    error: Option<Error>,
    waker: Option<Waker>,
}

pub(crate) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
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
    Waiting(ReplyCell),
    /// Cluster mode, no redirect yet.
    Routed(RoutedReply),
    /// Cluster mode, following a redirect or waiting for a new master (rare: boxed).
    Retrying(Pin<Box<dyn Future<Output = Result<Reply, Error>>>>),
}

impl ReplyFuture {
    pub(crate) fn failed(e: Error) -> ReplyFuture {
        ReplyFuture(ReplyState::Failed(Some(e)))
    }

    pub(crate) fn waiting(cell: ReplyCell) -> ReplyFuture {
        ReplyFuture(ReplyState::Waiting(cell))
    }

    /// This future, failing with [`Error::Timeout`] `timeout` from now if still pending then.
    pub(crate) fn with_timeout(self, timeout: Duration) -> ReplyFuture {
        if matches!(self.0, ReplyState::Failed(_)) {
            return self;
        }
        ReplyFuture::retrying(async move {
            runtime::rt::timeout(timeout, self)
                .await
                .unwrap_or(Err(Error::Timeout))
        })
    }

    pub(crate) fn routed(r: RoutedReply) -> ReplyFuture {
        ReplyFuture(ReplyState::Routed(r))
    }

    pub(crate) fn retrying(f: impl Future<Output = Result<Reply, Error>> + 'static) -> ReplyFuture {
        ReplyFuture(ReplyState::Retrying(Box::pin(f)))
    }
}

impl Future for ReplyFuture {
    type Output = Result<Reply, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.0 {
            ReplyState::Failed(e) => {
                Poll::Ready(Err(e.take().expect("ReplyFuture polled after completion")))
            }
            ReplyState::Waiting(cell) => cell.poll_take(cx),
            ReplyState::Routed(routed) => match routed.poll(cx) {
                Ok(ready) => ready,
                Err(retry) => {
                    this.0 = ReplyState::Retrying(retry);
                    Pin::new(this).poll(cx)
                }
            },
            ReplyState::Retrying(f) => f.as_mut().poll(cx),
        }
    }
}

/// The replies to one [`Client::submit_many`] / [`Client::submit_batch`], in command order.
#[must_use = "the commands are sent either way; await the future to see their replies"]
pub struct BatchFuture(BatchFutureState);

enum BatchFutureState {
    Done(Option<Result<Vec<Reply>, Error>>),
    Waiting(Rc<RefCell<BatchState>>),
    /// Cluster mode: per-node parts and redirects, reassembled (one box per batch); or a batch
    /// with a timeout of its own.
    Cluster(Pin<Box<dyn Future<Output = Result<Vec<Reply>, Error>>>>),
}

impl BatchFuture {
    pub(crate) fn failed(e: Error) -> BatchFuture {
        BatchFuture(BatchFutureState::Done(Some(Err(e))))
    }

    pub(crate) fn ready(r: Result<Vec<Reply>, Error>) -> BatchFuture {
        BatchFuture(BatchFutureState::Done(Some(r)))
    }

    pub(crate) fn cluster(
        f: impl Future<Output = Result<Vec<Reply>, Error>> + 'static,
    ) -> BatchFuture {
        BatchFuture(BatchFutureState::Cluster(Box::pin(f)))
    }

    /// This future, failing with [`Error::Timeout`] `timeout` from now if still pending then.
    pub(crate) fn with_timeout(self, timeout: Duration) -> BatchFuture {
        if matches!(self.0, BatchFutureState::Done(_)) {
            return self;
        }
        BatchFuture::cluster(async move {
            runtime::rt::timeout(timeout, self)
                .await
                .unwrap_or(Err(Error::Timeout))
        })
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
        st.commands += n as u64;
        for _ in 0..n {
            st.pipeline.push_unsent(Slot::Batch(cell.clone()));
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
            BatchFutureState::Cluster(f) => f.as_mut().poll(cx),
        }
    }
}
