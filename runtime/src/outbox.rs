//! A batching write buffer with one writer task.
//!
//! Producers append encoded frames synchronously; the writer task wakes once, swaps the buffer
//! out and sends everything gathered so far in one write. Under load many frames share a syscall;
//! when idle the buffers are released so that a quiet connection keeps no memory.

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
    limit: usize,
    keep_capacity: usize,
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
    /// `limit`: bytes that may wait before pushes are refused (the slow-consumer bound).
    /// `keep_capacity`: buffers larger than this are freed once drained (0: every buffer is
    /// freed once drained, so an idle connection holds none).
    pub fn new(limit: usize, keep_capacity: usize) -> Self {
        Outbox {
            buf: RefCell::new(BytesMut::new()),
            signal: Signal::default(),
            closed: Cell::new(false),
            limit,
            keep_capacity,
        }
    }

    /// Appends bytes written by `f` and wakes the writer.
    pub fn push(&self, f: impl FnOnce(&mut BytesMut)) -> Result<(), PushError> {
        if self.closed.get() {
            return Err(PushError::Closed);
        }
        let mut buf = self.buf.borrow_mut();
        if buf.len() > self.limit {
            return Err(PushError::Full);
        }
        f(&mut buf);
        drop(buf);
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
        drop(buf);
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
        std::mem::swap(out, &mut *self.buf.borrow_mut());
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
            let res = stream.write_all(&out).await;
            out.clear();
            if out.capacity() > self.keep_capacity {
                out = BytesMut::new();
            }
            if let Err(e) = res {
                self.closed.set(true);
                self.buf.borrow_mut().clear();
                return Err(e);
            }
        }
    }
}
