//! A batching write buffer with one writer task.
//!
//! Producers append encoded frames synchronously; the writer task wakes once, swaps the buffer
//! out and sends everything gathered so far in one write. Under load many frames share a syscall;
//! when idle the buffers are released so that a quiet connection keeps no memory.
//!
//! Every outbox counts itself and its queued bytes into process-wide totals per [`Class`]
//! ([`totals`]), so that a gateway's or router's metrics show whether queues drain (a soak
//! judges their growth) without each call site keeping its own gauge.

use std::cell::{Cell, RefCell};
use std::io;

use bytes::BytesMut;

use crate::io::Stream;
use crate::signal::Signal;

/// Write buffer shared by the producers of one connection and its writer task.
pub struct Outbox {
    buf: RefCell<BytesMut>,
    signal: Signal,
    closed: Cell<bool>,
    // u32 (4 GiB is far beyond any queue bound): the gateway's per-connection state must fit
    // one 224-byte allocation, and this outbox is inside it.
    limit: u32,
    keep_capacity: u32,
    class: Class,
    /// Queued bytes as last added to the totals (u32 like the limit: the queue never holds
    /// more than the limit and one frame; saturating, it only feeds a gauge).
    counted: Cell<u32>,
}

/// What an outbox carries, for the process-wide totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A client connection's send queue.
    Client = 0,
    /// A link between processes (router <-> gateway), and anything else.
    Link = 1,
}

/// Outboxes alive and bytes queued in them, over every thread of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub outboxes: i64,
    pub queued_bytes: i64,
}

/// The totals of one class of outboxes.
pub fn totals(class: Class) -> Totals {
    tally::totals(class as usize)
}

/// Per-thread counters, summed when read. Outboxes are shard-local, so each thread writes only
/// its own slot (a plain load and store, no locked instruction or shared cache line on the
/// message path); the admin thread reads them all.
mod tally {
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    use super::Totals;

    #[derive(Default)]
    struct Slot {
        outboxes: [AtomicI64; 2],
        bytes: [AtomicI64; 2],
    }

    static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

    thread_local! {
        static MINE: Arc<Slot> = {
            let s = Arc::new(Slot::default());
            SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push(s.clone());
            s
        };
    }

    fn bump(pick: impl FnOnce(&Slot) -> &AtomicI64, delta: i64) {
        // During thread teardown the slot may be gone; losing that last figure is harmless.
        let _ = MINE.try_with(|s| {
            let a = pick(s);
            a.store(a.load(Relaxed) + delta, Relaxed);
        });
    }

    pub(super) fn outboxes(class: usize, delta: i64) {
        bump(|s| &s.outboxes[class], delta);
    }

    pub(super) fn bytes(class: usize, delta: i64) {
        bump(|s| &s.bytes[class], delta);
    }

    pub(super) fn totals(class: usize) -> Totals {
        let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().fold(Totals::default(), |t, s| Totals {
            outboxes: t.outboxes + s.outboxes[class].load(Relaxed),
            queued_bytes: t.queued_bytes + s.bytes[class].load(Relaxed),
        })
    }
}

/// Why [`Outbox::push`] refused bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing or closed.
    Closed,
    /// More than the configured limit is queued: the peer does not read fast enough.
    Full,
}

impl Outbox {
    /// A link's outbox ([`Class::Link`]).
    /// `limit`: bytes that may wait before pushes are refused (the slow-consumer bound).
    /// `keep_capacity`: buffers larger than this are freed once drained (0: every buffer is
    /// freed once drained, so an idle connection holds none).
    pub fn new(limit: usize, keep_capacity: usize) -> Self {
        Self::with_class(Class::Link, limit, keep_capacity)
    }

    /// A client connection's outbox ([`Class::Client`]); otherwise as [`Outbox::new`].
    pub fn for_client(limit: usize, keep_capacity: usize) -> Self {
        Self::with_class(Class::Client, limit, keep_capacity)
    }

    fn with_class(class: Class, limit: usize, keep_capacity: usize) -> Self {
        tally::outboxes(class as usize, 1);
        Outbox {
            buf: RefCell::new(BytesMut::new()),
            signal: Signal::default(),
            closed: Cell::new(false),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            keep_capacity: u32::try_from(keep_capacity).unwrap_or(u32::MAX),
            class,
            counted: Cell::new(0),
        }
    }

    /// Brings the totals up to date with `len` bytes queued now.
    fn account(&self, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let before = self.counted.replace(len);
        if before != len {
            tally::bytes(self.class as usize, len as i64 - before as i64);
        }
    }

    /// Appends bytes written by `f` and wakes the writer.
    pub fn push(&self, f: impl FnOnce(&mut BytesMut)) -> Result<(), PushError> {
        if self.closed.get() {
            return Err(PushError::Closed);
        }
        let mut buf = self.buf.borrow_mut();
        if buf.len() > self.limit as usize {
            return Err(PushError::Full);
        }
        f(&mut buf);
        let len = buf.len();
        drop(buf);
        self.account(len);
        self.signal.raise();
        Ok(())
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued(&self) -> usize {
        self.buf.borrow().len()
    }

    /// Whether [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Refuses further pushes; the writer sends what is queued, then returns.
    pub fn close(&self) {
        self.closed.set(true);
        self.signal.raise();
    }

    /// Drops everything queued (whole frames; a batch already handed to the socket goes on),
    /// queues `f`'s bytes regardless of the limit, and closes: the writer sends them last.
    /// For a final message to a peer that stopped reading, e.g. a close frame.
    pub fn replace_and_close(&self, f: impl FnOnce(&mut BytesMut)) {
        if self.closed.get() {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        buf.clear();
        f(&mut buf);
        let len = buf.len();
        drop(buf);
        self.account(len);
        self.close();
    }

    /// Appends `f`'s bytes after everything queued, regardless of the limit, and closes: the
    /// writer sends them last. For a close frame that must follow the replies already queued.
    pub fn push_and_close(&self, f: impl FnOnce(&mut BytesMut)) {
        if self.closed.get() {
            return;
        }
        f(&mut self.buf.borrow_mut());
        self.close();
    }

    /// Moves everything queued into `out` (for writers that transform bytes, e.g. TLS).
    pub fn take_into(&self, out: &mut BytesMut) {
        let mut buf = self.buf.borrow_mut();
        std::mem::swap(out, &mut *buf);
        let len = buf.len();
        drop(buf);
        self.account(len);
    }

    /// Wakes the writer without queuing anything (e.g. TLS has records of its own to send).
    pub fn wake(&self) {
        self.signal.raise();
    }

    /// Waits until something was queued or [`Outbox::wake`] / [`Outbox::close`] was called.
    pub async fn wait(&self) {
        self.signal.wait().await
    }

    /// Marks the outbox failed after a write error: nothing more is queued.
    pub fn fail(&self) {
        self.closed.set(true);
        self.buf.borrow_mut().clear();
        self.account(0);
    }

    /// The writer loop: sends queued bytes until closed and drained, or the socket fails.
    pub async fn run_writer(&self, stream: &Stream) -> io::Result<()> {
        let mut out = BytesMut::new();
        loop {
            if self.buf.borrow().is_empty() {
                if self.closed.get() {
                    return Ok(());
                }
                self.signal.wait().await;
                continue;
            }
            std::mem::swap(&mut out, &mut *self.buf.borrow_mut());
            // Handed to the socket: no longer queued here, whether or not the write completes.
            self.account(0);
            let res = stream.write_all(&out).await;
            out.clear();
            if out.capacity() > self.keep_capacity as usize {
                out = BytesMut::new();
            }
            if let Err(e) = res {
                self.fail();
                return Err(e);
            }
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.account(0);
        tally::outboxes(self.class as usize, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test in this crate that makes client outboxes, so the totals are its own.
    #[test]
    fn totals_follow_queued_bytes_and_live_outboxes() {
        let before = totals(Class::Client);
        let a = Outbox::for_client(1 << 20, 1024);
        let b = Outbox::for_client(1 << 20, 1024);
        a.push(|buf| buf.extend_from_slice(&[0; 100])).unwrap();
        b.push(|buf| buf.extend_from_slice(&[0; 7])).unwrap();
        let t = totals(Class::Client);
        assert_eq!(t.outboxes - before.outboxes, 2);
        assert_eq!(t.queued_bytes - before.queued_bytes, 107);
        let mut out = BytesMut::new();
        a.take_into(&mut out);
        assert_eq!(totals(Class::Client).queued_bytes - before.queued_bytes, 7);
        b.replace_and_close(|buf| buf.extend_from_slice(&[0; 3]));
        assert_eq!(totals(Class::Client).queued_bytes - before.queued_bytes, 3);
        // Dropped with bytes still queued (a connection that ended before they went out).
        drop(b);
        a.push(|buf| buf.extend_from_slice(&[0; 5])).unwrap();
        a.fail();
        drop(a);
        assert_eq!(totals(Class::Client), before);
    }
}
