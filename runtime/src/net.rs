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
