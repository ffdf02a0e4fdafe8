//! A TCP stream shared by a reader task and a writer task on the same shard.
//!
//! glommio's stream keeps separate readiness sources for reading and writing, so the two halves
//! can be polled from different tasks as long as neither holds the stream across an `.await`:
//! every method here borrows it only inside `poll`.
//!
//! Reads go into one per-thread scratch buffer and are handed to a sink closure at once, so an idle
//! connection holds no read buffer at all: at millions of mostly idle sockets this is the
//! difference between kilobytes and bytes per connection.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// Size of the per-thread read scratch: one read takes at most this much.
pub const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_SIZE]);
}

/// Shared-ownership TCP stream (clone = another handle to the same socket).
#[derive(Clone)]
pub struct Stream(Rc<RefCell<TcpStream>>);

impl Stream {
    /// Wraps an accepted or connected stream; sets `TCP_NODELAY` since we batch ourselves.
    pub fn new(s: TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Stream(Rc::new(RefCell::new(s)))
    }

    /// Reads what is available (at most [`SCRATCH_SIZE`]) and passes it to `sink`.
    /// Resolves to the byte count; 0 means the peer closed.
    pub fn read_with<F: FnMut(&[u8])>(&self, sink: F) -> ReadWith<'_, F> {
        ReadWith { stream: self, sink }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = WriteSome { stream: self, data }.await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// Shuts down both directions now; pending reads and writes on the socket then fail or end.
    pub fn shutdown(&self) {
        // SAFETY: plain syscall on a descriptor we own; errors (e.g. already closed) are moot.
        unsafe {
            libc::shutdown(self.fd(), libc::SHUT_RDWR);
        }
    }

    /// The raw descriptor (for logging and socket options).
    pub fn fd(&self) -> RawFd {
        self.0.borrow().as_raw_fd()
    }

    /// The remote address, if still connected.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.0.borrow().peer_addr().ok()
    }
}

/// Future of [`Stream::read_with`].
pub struct ReadWith<'a, F> {
    stream: &'a Stream,
    sink: F,
}

impl<F: FnMut(&[u8]) + Unpin> Future for ReadWith<'_, F> {
    type Output = io::Result<usize>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut s = this.stream.0.borrow_mut();
            match Pin::new(&mut *s).poll_read(cx, &mut scratch[..]) {
                Poll::Ready(Ok(n)) => {
                    drop(s);
                    (this.sink)(&scratch[..n]);
                    Poll::Ready(Ok(n))
                }
                other => other,
            }
        })
    }
}

struct WriteSome<'a> {
    stream: &'a Stream,
    data: &'a [u8],
}

impl Future for WriteSome<'_> {
    type Output = io::Result<usize>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.stream.0.borrow_mut();
        Pin::new(&mut *s).poll_write(cx, self.data)
    }
}
