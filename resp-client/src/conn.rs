//! The runtime glue: the state shared by a [`crate::Client`]'s clones and the one background
//! task that connects, writes, reads, times out and reconnects.
//!
//! The task runs one connection at a time as three loops raced in the same task: the writer
//! (takes the whole shared write buffer and writes it in one go, so commands queued by many
//! tasks between two writes share one syscall), the reader (decodes replies and hands each to
//! the oldest pending request), and the watchdog (sleeps until the oldest request's deadline).
//! The first loop to end names the cause; every pending request is failed with it and the task
//! reconnects after a jittered backoff.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncWrite};

use crate::client::{register, Slot, Stats};
use crate::codec::Decoder;
use crate::connect;
use crate::pipeline::Pipeline;
use crate::tls::Stream;
use crate::{Config, Error, Reply};
use runtime::backoff::Backoff;

/// The round-trip latency is sampled on one socket read in this many (a clock read each).
const LATENCY_SAMPLE_EVERY: u32 = 8;

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Shared {
    pub config: Config,
    pub state: RefCell<State>,
}

pub(crate) struct State {
    pub connected: bool,
    /// The first connection attempt is still running: requests queue (their timeout starts
    /// once it succeeds) instead of failing, so a client used right after
    /// [`crate::Client::new`] works. Bounded by `connect_timeout` and `max_in_flight`.
    starting: bool,
    shutdown: bool,
    pub pipeline: Pipeline<Slot>,
    /// The reply cells of single requests (`Slot::One`), pooled.
    pub cells: Cells,
    /// Tasks in [`crate::Client::ready`], waiting for room in the pipeline.
    room_waiters: Vec<Waker>,
    /// Encoded commands not yet handed to the writer. Every command in it has its slot in
    /// `pipeline`, behind the slots of the commands already written.
    pub wbuf: BytesMut,
    /// The background task, when it waits for state to change (new commands, shutdown).
    driver: Option<Waker>,
    /// Tasks in [`crate::Client::wait_connected`].
    connect_waiters: Vec<Waker>,
    connects: u64,
    connect_errors: u64,
    writes: u64,
    pub commands: u64,
    /// EWMA of the request round trip, in nanoseconds (0 before the first reply).
    latency_ns: u64,
    timeouts: u64,
    overloaded: u64,
}

impl State {
    /// `Ok` if `n` more requests may be queued now.
    #[inline]
    pub fn admit(&mut self, n: usize) -> Result<(), Error> {
        let r = self.check_admit(n);
        if matches!(r, Err(Error::Overloaded { .. })) {
            self.overloaded += 1;
        }
        r
    }

    /// Like [`State::admit`], counting nothing.
    pub fn check_admit(&self, n: usize) -> Result<(), Error> {
        if self.shutdown {
            return Err(Error::Closed);
        }
        if !self.connected && !self.starting {
            return Err(Error::Disconnected);
        }
        self.pipeline.check_room(n)
    }

    /// Wakes the tasks waiting for room (after replies or failures emptied some).
    fn wake_room_waiters(&mut self) {
        if !self.room_waiters.is_empty() {
            self.room_waiters.drain(..).for_each(Waker::wake);
        }
    }

    /// Completes every slot in `slots` with its error.
    fn fail(&mut self, failed: impl IntoIterator<Item = (Slot, Error)>) {
        for (slot, err) in failed {
            slot.complete(&mut self.cells, Err(err));
        }
        self.wake_room_waiters();
    }

    pub fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    fn park_driver(&mut self, cx: &Context<'_>) {
        match &self.driver {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.driver = Some(cx.waker().clone()),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connected: self.connected,
            in_flight: self.pipeline.len(),
            reconnects: self.connects.saturating_sub(1),
            connect_errors: self.connect_errors,
            writes: self.writes,
            commands: self.commands,
            latency_us: self.latency_ns / 1000,
            redirects: 0,
            topology_refreshes: 0,
            nodes: 1,
            timeouts: self.timeouts,
            overloaded: self.overloaded,
        }
    }
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        let pipeline = Pipeline::new(config.command_timeout, config.max_in_flight);
        Shared {
            config,
            state: RefCell::new(State {
                connected: false,
                starting: true,
                shutdown: false,
                pipeline,
                cells: Cells::default(),
                room_waiters: Vec::new(),
                wbuf: BytesMut::new(),
                driver: None,
                connect_waiters: Vec::new(),
                connects: 0,
                connect_errors: 0,
                writes: 0,
                commands: 0,
                latency_ns: 0,
                timeouts: 0,
                overloaded: 0,
            }),
        }
    }

    pub fn shut_down(&self) {
        let mut st = self.state.borrow_mut();
        st.shutdown = true;
        st.wake_driver();
    }

    pub fn poll_connected(&self, cx: &Context<'_>) -> Poll<()> {
        let mut st = self.state.borrow_mut();
        if st.connected {
            return Poll::Ready(());
        }
        if !st.connect_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.connect_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// `Ready(Ok)` when `n` more requests fit, `Pending` while the pipeline is full, else the
    /// error a request would get now.
    pub fn poll_room(&self, n: usize, cx: &Context<'_>) -> Poll<Result<(), Error>> {
        let mut st = self.state.borrow_mut();
        match st.check_admit(n) {
            Err(Error::Overloaded { max_in_flight }) if n <= max_in_flight => {
                if !st.room_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    st.room_waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            r => Poll::Ready(r),
        }
    }

    /// Resolves once the client is shut down.
    async fn shutdown_signal(&self) {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.shutdown {
                Poll::Ready(())
            } else {
                st.park_driver(cx);
                Poll::Pending
            }
        })
        .await
    }
}

/// The background task: connect, serve, fail what was pending, back off, repeat.
pub(crate) async fn run(shared: Rc<Shared>) {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (Rc::as_ptr(&shared) as u64);
    let cfg = &shared.config;
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max, seed);
    let mut failing = false; // log the first failure of an outage loudly, the rest quietly
    loop {
        let attempt = or(async { Some(connect::connect(cfg).await) }, async {
            shared.shutdown_signal().await;
            None
        })
        .await;
        let cause = match attempt {
            None => break,
            Some(Err(reason)) => {
                {
                    let mut st = shared.state.borrow_mut();
                    st.connect_errors += 1;
                    st.starting = false;
                    st.wbuf.clear();
                    // Queued during the first attempt, never sent.
                    let failed = st.pipeline.take_all();
                    st.fail(failed.into_iter().map(|s| (s, Error::Disconnected)));
                }
                if failing {
                    tracing::debug!(addr = %cfg.addr, %reason, "Redis connection attempt failed");
                } else {
                    tracing::warn!(addr = %cfg.addr, %reason, "Redis connection attempt failed");
                }
                failing = true;
                reason
            }
            Some(Ok((stream, resp3))) => {
                backoff.reset();
                failing = false;
                let waiters = {
                    let mut st = shared.state.borrow_mut();
                    st.connected = true;
                    st.starting = false;
                    st.connects += 1;
                    st.pipeline.restart_deadlines(Instant::now());
                    std::mem::take(&mut st.connect_waiters)
                };
                waiters.into_iter().for_each(Waker::wake);
                tracing::info!(addr = %cfg.addr, "connected to Redis");
                let cause = serve(&shared, stream, resp3).await;
                {
                    let mut st = shared.state.borrow_mut();
                    st.connected = false;
                    st.wbuf.clear();
                    if cause == Error::Timeout {
                        st.timeouts += 1;
                    }
                    let rest = if st.shutdown {
                        Error::Closed
                    } else {
                        Error::ConnectionLost
                    };
                    let failed = st.pipeline.fail_all(cause.clone(), rest, Instant::now());
                    st.fail(failed);
                }
                if shared.state.borrow().shutdown {
                    break;
                }
                tracing::warn!(addr = %cfg.addr, %cause, "Redis connection reset");
                cause.to_string()
            }
        };
        let delay = backoff.next_delay();
        tracing::debug!(addr = %cfg.addr, ?delay, %cause, "reconnecting to Redis after backoff");
        let stop = or(
            async {
                runtime::rt::sleep(delay).await;
                false
            },
            async {
                shared.shutdown_signal().await;
                true
            },
        )
        .await;
        if stop {
            break;
        }
    }
    {
        let mut st = shared.state.borrow_mut();
        st.connected = false;
        st.starting = false;
        st.wbuf.clear();
        let failed = st.pipeline.take_all();
        st.fail(failed.into_iter().map(|s| (s, Error::Closed)));
    }
    tracing::debug!(addr = %cfg.addr, "Redis client shut down");
}

/// Runs one established connection until it fails; returns the cause.
async fn serve(shared: &Shared, stream: Stream, resp3: bool) -> Error {
    let stream = RefCell::new(stream);
    let io = or(
        read_loop(shared, &stream, resp3),
        write_loop(shared, &stream),
    );
    let control = or(watchdog(shared), async {
        shared.shutdown_signal().await;
        Error::Closed
    });
    or(io, control).await
}

async fn write_loop(shared: &Shared, stream: &RefCell<Stream>) -> Error {
    let mut out = BytesMut::new();
    loop {
        poll_fn(|cx| {
            let mut st = shared.state.borrow_mut();
            if st.wbuf.is_empty() {
                st.park_driver(cx);
                Poll::Pending
            } else {
                std::mem::swap(&mut out, &mut st.wbuf);
                // Their timeouts start now (one clock read per write, not per request).
                st.pipeline.mark_sent(Instant::now());
                Poll::Ready(())
            }
        })
        .await;
        while !out.is_empty() {
            let written =
                poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, &out)).await;
            match written {
                Ok(0) => return Error::ConnectionLost,
                Ok(n) => {
                    out.advance(n);
                    shared.state.borrow_mut().writes += 1;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Redis write failed");
                    return Error::ConnectionLost;
                }
            }
        }
        // TLS may still hold records the socket did not take yet.
        if let Err(e) = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_flush(cx)).await {
            tracing::debug!(error = %e, "Redis write failed");
            return Error::ConnectionLost;
        }
        out.clear();
    }
}

async fn read_loop(shared: &Shared, stream: &RefCell<Stream>, resp3: bool) -> Error {
    let cfg = &shared.config;
    let mut dec = Decoder::new(cfg.max_reply_bytes, cfg.max_array_len).with_resp3(resp3);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut reads = 0u32;
    loop {
        // One latency sample (a clock read) per [`LATENCY_SAMPLE_EVERY`] socket reads: the
        // oldest request the read answers. Not per reply.
        let mut sample = reads.is_multiple_of(LATENCY_SAMPLE_EVERY);
        reads = reads.wrapping_add(1);
        let mut answered = false;
        loop {
            let reply = match dec.decode(&mut rbuf) {
                Ok(Some(Reply::Push(push))) => {
                    // Out of band (RESP3): never the answer to a request.
                    tracing::debug!(len = push.len(), "ignoring a RESP3 push from Redis");
                    continue;
                }
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(e) => return e,
            };
            let mut st = shared.state.borrow_mut();
            let st = &mut *st;
            if sample || st.latency_ns == 0 {
                sample = false;
                if let Some(sent) = st.pipeline.sent_at_front() {
                    let ns = Instant::now().saturating_duration_since(sent).as_nanos() as u64;
                    let old = st.latency_ns;
                    st.latency_ns = if old == 0 { ns } else { old - old / 8 + ns / 8 };
                }
            }
            match st.pipeline.on_reply() {
                Some(slot) => slot.complete(&mut st.cells, Ok(reply)),
                None => return Error::Protocol("a reply arrived with no request pending".into()),
            }
            answered = true;
        }
        if answered {
            shared.state.borrow_mut().wake_room_waiters();
        }
        let read =
            poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut scratch)).await;
        match read {
            Ok(0) => return Error::ConnectionLost,
            Ok(n) => rbuf.extend_from_slice(&scratch[..n]),
            Err(e) => {
                tracing::debug!(error = %e, "Redis read failed");
                return Error::ConnectionLost;
            }
        }
    }
}

/// Ends with [`Error::Timeout`] once the oldest pending request is past its deadline.
async fn watchdog(shared: &Shared) -> Error {
    loop {
        let next = shared.state.borrow().pipeline.next_deadline();
        match next {
            None => {
                // Nothing pending, or nothing sent yet: the writer marks requests sent (and
                // this task is polled again) when it takes them.
                poll_fn(|cx| {
                    let mut st = shared.state.borrow_mut();
                    if st.pipeline.next_deadline().is_none() {
                        st.park_driver(cx);
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await
            }
            Some(deadline) => {
                let now = Instant::now();
                if deadline <= now {
                    return Error::Timeout;
                }
                // This future shares its task (and waker) with the reader and the writer, so
                // it is polled on every reply and every write. Polling a timer re-arms it
                // (glommio: a timer-map removal and insertion each time) and comparing with
                // the clock costs a clock read, so the timer is polled once to arm it, with a
                // waker that flags its firing, and then only once flagged.
                let mut timer = std::pin::pin!(runtime::rt::sleep(deadline - now));
                let mut flag: Option<(Arc<TimerFlag>, Waker)> = None;
                poll_fn(|cx| {
                    let (flag, waker) = flag.get_or_insert_with(|| {
                        let f = Arc::new(TimerFlag {
                            fired: AtomicBool::new(true), // poll once to arm
                            task: cx.waker().clone(),
                        });
                        (f.clone(), Waker::from(f))
                    });
                    if !flag.fired.swap(false, Ordering::Relaxed) {
                        return Poll::Pending;
                    }
                    timer.as_mut().poll(&mut Context::from_waker(waker))
                })
                .await;
            }
        }
    }
}

/// The waker a watchdog timer is polled with: notes that it fired, then wakes the connection's
/// task.
struct TimerFlag {
    fired: AtomicBool,
    task: Waker,
}

impl std::task::Wake for TimerFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Relaxed);
        self.task.wake_by_ref();
    }
}

/// The reply cells of one connection's single requests, reused: a request takes a free cell,
/// the reader fills it, the future empties it and gives it back.
#[derive(Default)]
pub(crate) struct Cells {
    cells: Vec<Cell>,
    free: Vec<u32>,
}

enum Cell {
    Free,
    /// The request is pending; the waker of the task awaiting it.
    Waiting(Option<Waker>),
    /// The reply (or failure) arrived; the future has not taken it yet.
    Done(Result<Reply, Error>),
    /// The future was dropped before the reply arrived: free the cell when it does.
    Abandoned,
}

impl Cells {
    /// A cell for a new request.
    #[inline]
    pub fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.cells[i as usize] = Cell::Waiting(None);
                i
            }
            None => {
                self.cells.push(Cell::Waiting(None));
                (self.cells.len() - 1) as u32
            }
        }
    }

    /// Delivers the request's result and wakes its task.
    #[inline]
    pub fn complete(&mut self, idx: u32, result: Result<Reply, Error>) {
        let cell = &mut self.cells[idx as usize];
        match cell {
            Cell::Waiting(waker) => {
                let waker = waker.take();
                *cell = Cell::Done(result);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Cell::Abandoned => {
                *cell = Cell::Free;
                self.free.push(idx);
            }
            Cell::Free | Cell::Done(_) => debug_assert!(false, "reply cell {idx} completed twice"),
        }
    }

    /// The result if it arrived (the cell is then free); else registers `cx`'s waker.
    #[inline]
    pub fn poll_take(&mut self, idx: u32, cx: &Context<'_>) -> Poll<Result<Reply, Error>> {
        let cell = &mut self.cells[idx as usize];
        match cell {
            Cell::Waiting(waker) => {
                register(waker, cx);
                Poll::Pending
            }
            Cell::Done(_) => {
                let Cell::Done(result) = std::mem::replace(cell, Cell::Free) else {
                    unreachable!()
                };
                self.free.push(idx);
                Poll::Ready(result)
            }
            Cell::Free | Cell::Abandoned => Poll::Ready(Err(Error::Closed)),
        }
    }

    /// The future of cell `idx` is gone: free the cell now, or when its reply arrives.
    pub fn abandon(&mut self, idx: u32) {
        let cell = &mut self.cells[idx as usize];
        match cell {
            Cell::Waiting(_) => *cell = Cell::Abandoned,
            Cell::Done(_) => {
                *cell = Cell::Free;
                self.free.push(idx);
            }
            Cell::Free | Cell::Abandoned => {}
        }
    }
}
