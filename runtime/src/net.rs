//! Listening and connecting on the calling shard's backend.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use socket2::Socket;

use crate::io::Stream;
use crate::rt::{self, Backend};

/// A listener owned by one shard.
pub enum Listener {
    /// glommio's.
    Uring(glommio::net::TcpListener),
    /// tokio's.
    Epoll(tokio::net::TcpListener),
}

impl Listener {
    /// Hands a listener bound by [`crate::listen`] to the calling shard.
    pub fn from_socket(s: Socket) -> io::Result<Listener> {
        match rt::current() {
            Backend::Uring => {
                // SAFETY: the descriptor comes from a bound, listening socket that we own.
                Ok(Listener::Uring(unsafe {
                    glommio::net::TcpListener::from_raw_fd(s.into_raw_fd())
                }))
            }
            Backend::Epoll => {
                s.set_nonblocking(true)?;
                let std: std::net::TcpListener = s.into();
                Ok(Listener::Epoll(tokio::net::TcpListener::from_std(std)?))
            }
        }
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Uring(l) => l
                .accept()
                .await
                .map(Stream::from_glommio)
                .map_err(io::Error::from),
            Listener::Epoll(l) => l.accept().await.map(|(s, _)| Stream::from_tokio(s)),
        }
    }
}

/// Connects to `addr`, giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
    match rt::current() {
        Backend::Uring => glommio::net::TcpStream::connect_timeout(addr, timeout)
            .await
            .map(Stream::from_glommio)
            .map_err(io::Error::from),
        Backend::Epoll => match rt::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Some(r) => r.map(Stream::from_tokio),
            None => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        },
    }
}

/// A plain TCP connection on either backend, as `futures-lite` `AsyncRead + AsyncWrite`, for
/// clients that drive their own buffering (the Redis client, its TLS layer).
pub enum TcpConn {
    /// glommio's stream.
    Uring(glommio::net::TcpStream),
    /// tokio's stream, driven through its readiness API.
    Epoll(tokio::net::TcpStream),
}

impl TcpConn {
    /// Connects to `addr` on the calling shard's backend, giving up after `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpConn> {
        let c = match rt::current() {
            Backend::Uring => glommio::net::TcpStream::connect_timeout(addr, timeout)
                .await
                .map(TcpConn::Uring)
                .map_err(io::Error::from)?,
            Backend::Epoll => {
                match rt::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Some(r) => TcpConn::Epoll(r?),
                    None => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                    }
                }
            }
        };
        c.set_nodelay(true)?;
        Ok(c)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            TcpConn::Uring(s) => s.set_nodelay(on).map_err(io::Error::from),
            TcpConn::Epoll(s) => s.set_nodelay(on),
        }
    }
}

impl futures_lite::AsyncRead for TcpConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::Poll;
        match self.get_mut() {
            TcpConn::Uring(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            TcpConn::Epoll(s) => loop {
                match s.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                match s.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
        }
    }
}

impl futures_lite::AsyncWrite for TcpConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::Poll;
        match self.get_mut() {
            TcpConn::Uring(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            TcpConn::Epoll(s) => loop {
                match s.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                match s.try_write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            TcpConn::Uring(s) => std::pin::Pin::new(s).poll_flush(cx),
            TcpConn::Epoll(_) => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            TcpConn::Uring(s) => std::pin::Pin::new(s).poll_close(cx),
            TcpConn::Epoll(s) => {
                use std::os::fd::AsRawFd;
                // SAFETY: half-closing a socket we own.
                unsafe {
                    libc::shutdown(s.as_raw_fd(), libc::SHUT_WR);
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
    }
}
