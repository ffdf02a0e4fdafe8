//! A TCP stream shared by a reader task and a writer task on the same shard, on either backend.
//!
//! Reads go into one per-thread scratch buffer and are handed to a sink closure at once, so an
//! idle connection holds no read buffer at all: at millions of mostly idle sockets this is the
//! difference between kilobytes and bytes per connection. glommio keeps separate readiness
//! sources for reading and writing, so its stream can be polled from two tasks as long as
//! neither holds it across an `.await`: every method here borrows it only inside `poll`. tokio's
//! readiness API (`readable` + `try_read`) works on a shared reference directly.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Size of the per-thread read scratch: one read takes at most this much.
pub const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_SIZE]);
}

enum Inner {
    Uring(RefCell<glommio::net::TcpStream>),
    Epoll(tokio::net::TcpStream),
}

/// Shared-ownership TCP stream (clone = another handle to the same socket).
#[derive(Clone)]
pub struct Stream(Rc<Inner>);

impl Stream {
    /// Wraps a glommio stream; sets `TCP_NODELAY` since we batch ourselves.
    pub fn from_glommio(s: glommio::net::TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Stream(Rc::new(Inner::Uring(RefCell::new(s))))
    }

    /// Wraps a tokio stream; sets `TCP_NODELAY` since we batch ourselves.
    pub fn from_tokio(s: tokio::net::TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Stream(Rc::new(Inner::Epoll(s)))
    }

    /// Gives up the event loop's state for this socket (glommio's stream and its poll source,
    /// tokio's registration) and returns the bare descriptor, for [`crate::park`].
    pub(crate) fn into_fd(self) -> Result<OwnedFd, IntoFdError> {
        let inner = Rc::try_unwrap(self.0).map_err(|rc| IntoFdError::Shared(Stream(rc)))?;
        match inner {
            Inner::Uring(s) => {
                // glommio's stream has no `into_raw_fd`: keep a duplicate and drop the stream,
                // which closes the original and cancels its pending poll.
                let mut s = s.into_inner();
                // glommio wakes a source's waiter when its cancellation completes: swap the
                // task's waker for a no-op one first (an empty read: it registers the waker if
                // the poll is pending and consumes no data otherwise), or the task would be
                // woken, and unparked, right after parking.
                let mut noop = Context::from_waker(std::task::Waker::noop());
                let _ = Pin::new(&mut s).poll_read(&mut noop, &mut []);
                // SAFETY: duplicating a descriptor we own; the duplicate is owned below.
                let dup = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    let e = io::Error::last_os_error();
                    return Err(IntoFdError::Failed(
                        Some(Stream(Rc::new(Inner::Uring(RefCell::new(s))))),
                        e,
                    ));
                }
                drop(s);
                // SAFETY: a fresh descriptor nobody else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(dup) })
            }
            Inner::Epoll(s) => s
                .into_std()
                .map(OwnedFd::from)
                .map_err(|e| IntoFdError::Failed(None, e)),
        }
    }

    /// Rebuilds a stream on the calling shard's backend from a descriptor given up by
    /// [`Stream::into_fd`] (socket options such as `TCP_NODELAY` stay with the socket).
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Stream> {
        let inner = match crate::rt::current() {
            // SAFETY: an open TCP socket whose ownership moves into the stream.
            crate::rt::Backend::Uring => Inner::Uring(RefCell::new(unsafe {
                glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd())
            })),
            crate::rt::Backend::Epoll => {
                // Non-blocking, as tokio requires: it came from tokio's `into_std`.
                Inner::Epoll(tokio::net::TcpStream::from_std(fd.into())?)
            }
        };
        Ok(Stream(Rc::new(inner)))
    }

    /// Reads what is available (at most [`SCRATCH_SIZE`]) and passes it to `sink`, mutable so
    /// that a decoder can work in place (e.g. unmask WebSocket payloads) without a copy.
    /// Resolves to the byte count; 0 means the peer closed.
    pub async fn read_with<F: FnMut(&mut [u8]) + Unpin>(&self, sink: F) -> io::Result<usize> {
        ReadWith { stream: self, sink }.await
    }

    /// [`Stream::read_with`] as a poll, for hand-written futures that read and write from one
    /// task without storing a future per direction.
    pub fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        sink: &mut impl FnMut(&mut [u8]),
    ) -> Poll<io::Result<usize>> {
        match &*self.0 {
            Inner::Uring(s) => SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut st = s.borrow_mut();
                match Pin::new(&mut *st).poll_read(cx, &mut scratch[..]) {
                    Poll::Ready(Ok(n)) => {
                        drop(st);
                        sink(&mut scratch[..n]);
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            }),
            Inner::Epoll(s) => loop {
                match s.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                let r = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    s.try_read(&mut scratch[..])
                        .inspect(|&n| sink(&mut scratch[..n]))
                });
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
        }
    }

    /// Writes some of `data` (as a poll, see [`Stream::poll_read_with`]).
    pub fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &*self.0 {
            Inner::Uring(s) => Pin::new(&mut *s.borrow_mut()).poll_write(cx, data),
            Inner::Epoll(s) => loop {
                match s.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                match s.try_write(data) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = match &*self.0 {
                Inner::Uring(s) => WriteSome { stream: s, data }.await?,
                Inner::Epoll(s) => match s.try_write(data) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        s.writable().await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
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
        match &*self.0 {
            Inner::Uring(s) => s.borrow().as_raw_fd(),
            Inner::Epoll(s) => s.as_raw_fd(),
        }
    }

    /// The remote address, if still connected.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match &*self.0 {
            Inner::Uring(s) => s.borrow().peer_addr().ok(),
            Inner::Epoll(s) => s.peer_addr().ok(),
        }
    }
}

/// Why [`Stream::into_fd`] kept or lost the stream.
pub(crate) enum IntoFdError {
    /// Other handles share the stream: it stays as it is.
    Shared(Stream),
    /// The descriptor could not be taken out; the stream, if it survived.
    Failed(Option<Stream>, io::Error),
}

struct ReadWith<'a, F> {
    stream: &'a Stream,
    sink: F,
}

impl<F: FnMut(&mut [u8]) + Unpin> Future for ReadWith<'_, F> {
    type Output = io::Result<usize>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.stream.poll_read_with(cx, &mut this.sink)
    }
}

struct WriteSome<'a> {
    stream: &'a RefCell<glommio::net::TcpStream>,
    data: &'a [u8],
}

impl Future for WriteSome<'_> {
    type Output = io::Result<usize>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.stream.borrow_mut();
        Pin::new(&mut *s).poll_write(cx, self.data)
    }
}
