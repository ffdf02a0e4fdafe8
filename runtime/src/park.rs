//! Parking idle sockets: one epoll set per shard holds the descriptors of connections that have
//! been quiet for a while, so that the event loop keeps no per-socket state for them.
//!
//! A live [`Stream`] costs the shard an `Rc` around the backend's stream object and the backend's
//! readiness state: glommio keeps an io_uring `POLL_ADD` source (about 500 bytes) per socket at
//! all times, tokio a registration. At hundreds of thousands of mostly idle clients that is most
//! of the user-space memory per connection. A parked socket is only its descriptor, registered
//! (edge-triggered) in the shard's [`ParkSet`] with a caller-chosen token; one task per shard
//! waits on the set and learns which tokens became readable. Unparking rebuilds the stream on
//! the shard's backend. Neither step moves bytes, so nothing is lost in between: data that
//! arrives while parked stays in the kernel's socket buffer.
//!
//! Waiting on the set: on tokio it is an `AsyncFd`. glommio has no public "wait until this
//! descriptor is readable", but every glommio stream arms an io_uring `POLL_ADD` on its
//! descriptor when it is built; a glommio stream over a duplicate of the epoll descriptor is thus
//! woken when the set has a ready socket, and its `recv` then fails with `ENOTSOCK`: that error
//! is the signal. The duplicate is closed and the set drained with a non-blocking `epoll_wait`.

use std::cell::{Cell, OnceCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::io::{IntoFdError, Stream};
use crate::rt::{self, Backend};

/// Events fetched per `epoll_wait` while draining the set.
const DRAIN_BATCH: usize = 64;

/// A per-shard epoll set of parked sockets (shard-local, like the streams it holds).
pub struct ParkSet {
    /// tokio's registration of `epfd` (epoll backend only), made on the first wait. Declared
    /// first so that it is dropped (deregistered) before `epfd` is closed.
    tokio: OnceCell<tokio::io::unix::AsyncFd<RawFdRef>>,
    epfd: OwnedFd,
}

/// `epfd` as tokio's `AsyncFd` wants it; the descriptor itself is owned by [`ParkSet::epfd`].
struct RawFdRef(RawFd);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`cvt`] for the byte counts `send`/`recv` return.
fn cvt_len(r: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

impl ParkSet {
    /// A new, empty set.
    pub fn new() -> io::Result<ParkSet> {
        // SAFETY: plain syscall; the descriptor is owned from here on.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(ParkSet {
            // SAFETY: a fresh descriptor nobody else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            tokio: OnceCell::new(),
        })
    }

    /// Watches `fd` for input, end of input or errors, reported as `token`. Edge-triggered: a
    /// socket that is already readable when added is reported too (epoll checks on insert).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `ev` outlives the call.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Stops watching `fd` (a readiness already fetched may still be reported once).
    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; an error (not registered) is moot.
        unsafe {
            libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev);
        }
    }

    /// Appends the tokens of every socket reported ready so far, without waiting.
    fn drain(&self, tokens: &mut Vec<u64>) -> io::Result<()> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; DRAIN_BATCH];
        loop {
            // SAFETY: `evs` has room for DRAIN_BATCH events; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    evs.as_mut_ptr(),
                    DRAIN_BATCH as libc::c_int,
                    0,
                )
            };
            let n = match cvt(n) {
                Ok(n) => n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            tokens.extend(evs[..n].iter().map(|e| e.u64));
            if n < DRAIN_BATCH {
                return Ok(());
            }
        }
    }

    /// Waits until at least one parked socket is ready and puts the tokens of all that are
    /// into `tokens` (cleared first). One waiter per set.
    pub async fn wait(&self, tokens: &mut Vec<u64>) -> io::Result<()> {
        tokens.clear();
        loop {
            self.drain(tokens)?;
            if !tokens.is_empty() {
                return Ok(());
            }
            match rt::current() {
                Backend::Epoll => {
                    let afd = match self.tokio.get() {
                        Some(a) => a,
                        None => {
                            // SAFETY: `epfd` stays open for as long as the `AsyncFd` lives
                            // (same struct, dropped first).
                            let a = unsafe {
                                tokio::io::unix::AsyncFd::register_with_interest(
                                    RawFdRef(self.epfd.as_raw_fd()),
                                    tokio::io::Interest::READABLE,
                                )
                            }?;
                            self.tokio.get_or_init(|| a)
                        }
                    };
                    let mut ready = afd.readable().await?;
                    self.drain(tokens)?;
                    // Drained to empty: tokio's readiness is edge-triggered, so it must be
                    // cleared now (a later event bumps its tick and survives this clear).
                    ready.clear_ready();
                    if !tokens.is_empty() {
                        return Ok(());
                    }
                }
                Backend::Uring => {
                    // SAFETY: duplicating a descriptor we own; the duplicate is owned below.
                    let dup = cvt(unsafe {
                        libc::fcntl(self.epfd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0)
                    })?;
                    // SAFETY: `dup` is ours; glommio closes it when the stream is dropped. Its
                    // constructor arms the POLL_ADD that is our wake-up.
                    let s = unsafe { glommio::net::TcpStream::from_raw_fd(dup) };
                    let waited = UringReadable {
                        stream: s,
                        pending: false,
                    }
                    .await;
                    if !waited {
                        // Ready on the first poll with nothing to drain (not expected: the poll
                        // is only submitted after the first poll): never spin on it.
                        self.drain(tokens)?;
                        if tokens.is_empty() {
                            rt::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
        }
    }
}

/// Resolves once glommio's poll on a duplicate of the epoll descriptor fired (any outcome of
/// the `recv` that follows: `ENOTSOCK` is the expected one); true if it was pending first.
struct UringReadable {
    stream: glommio::net::TcpStream,
    pending: bool,
}

impl Future for UringReadable {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut byte = [0u8; 1];
        let this = &mut *self;
        match futures_lite::AsyncRead::poll_read(Pin::new(&mut this.stream), cx, &mut byte) {
            Poll::Pending => {
                this.pending = true;
                Poll::Pending
            }
            Poll::Ready(_) => Poll::Ready(this.pending),
        }
    }
}

/// A connection's socket that can be parked: live (a [`Stream`] on the event loop) or parked
/// (only its descriptor, owned here and registered in a [`ParkSet`]). 16 bytes.
pub struct Parkable {
    live: Cell<Option<Stream>>,
    /// The parked descriptor, -1 when not parked.
    parked: Cell<RawFd>,
}

impl Parkable {
    /// A live socket.
    pub fn new(s: Stream) -> Self {
        Parkable {
            live: Cell::new(Some(s)),
            parked: Cell::new(-1),
        }
    }

    /// Another handle to the live stream; `None` while parked (or after a failed unpark).
    pub fn stream(&self) -> Option<Stream> {
        let s = self.live.take();
        self.live.set(s.clone());
        s
    }

    /// Whether the socket is parked.
    pub fn is_parked(&self) -> bool {
        self.parked.get() >= 0
    }

    /// Shuts the socket down in both directions, live or parked (a parked one then reports
    /// ready, which is how its owner learns of it).
    pub fn shutdown(&self) {
        let fd = self.parked.get();
        if fd >= 0 {
            // SAFETY: a descriptor we own; errors are moot.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        } else if let Some(s) = self.stream() {
            s.shutdown();
        }
    }

    /// Parks the socket in `set` under `token`: the backend's stream is dropped, only the
    /// descriptor stays. `Ok(false)` (still live) if other handles share the stream. On an
    /// error the socket is still live, unless rebuilding it failed too (then [`Parkable::stream`]
    /// is `None` and the connection is lost).
    pub fn park(&self, set: &ParkSet, token: u64) -> io::Result<bool> {
        if self.is_parked() {
            return Ok(true);
        }
        let Some(s) = self.live.take() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "no socket"));
        };
        let fd = match s.into_fd() {
            Ok(fd) => fd,
            Err(IntoFdError::Shared(s)) => {
                self.live.set(Some(s));
                return Ok(false);
            }
            Err(IntoFdError::Failed(s, e)) => {
                self.live.set(s);
                return Err(e);
            }
        };
        if let Err(e) = set.add(fd.as_raw_fd(), token) {
            self.live.set(Stream::from_fd(fd).ok());
            return Err(e);
        }
        self.parked.set(fd.into_raw_fd());
        Ok(true)
    }

    /// The parked descriptor; an error when live.
    fn parked_fd(&self) -> io::Result<RawFd> {
        let fd = self.parked.get();
        if fd < 0 {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not parked"));
        }
        Ok(fd)
    }

    /// Writes `data` straight to the parked socket, which stays parked: the bytes written,
    /// possibly fewer than `data` (0 when its send buffer is full).
    pub fn send_parked(&self, data: &[u8]) -> io::Result<usize> {
        let fd = self.parked_fd()?;
        // SAFETY: a descriptor we own; `data` is valid for its length.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match cvt_len(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        }
    }

    /// Copies the parked socket's pending input into `buf` without consuming it (0: none, or
    /// the peer closed: the caller cannot tell, and unparks to find out).
    pub fn peek_parked(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.parked_fd()?;
        // SAFETY: a descriptor we own; `buf` is valid for its length.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        cvt_len(n)
    }

    /// Consumes up to `n` (at most 64) pending input bytes of the parked socket, as
    /// [`Parkable::peek_parked`] showed them; returns how many.
    pub fn discard_parked(&self, n: usize) -> io::Result<usize> {
        let fd = self.parked_fd()?;
        let mut buf = [0u8; 64];
        let n = n.min(buf.len());
        // SAFETY: a descriptor we own; `buf` has room for `n` bytes.
        let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), n, libc::MSG_DONTWAIT) };
        cvt_len(got)
    }

    /// Takes the socket out of `set` and rebuilds its stream on the shard's backend; a no-op
    /// when not parked. On an error the socket is closed and lost.
    pub fn unpark(&self, set: &ParkSet) -> io::Result<()> {
        let fd = self.parked.replace(-1);
        if fd < 0 {
            return Ok(());
        }
        set.remove(fd);
        // SAFETY: the parked descriptor was ours; ownership moves into the stream.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.live.set(Some(Stream::from_fd(fd)?));
        Ok(())
    }
}

impl Drop for Parkable {
    fn drop(&mut self) {
        let fd = self.parked.get();
        if fd >= 0 {
            // Closing the last descriptor of the socket also takes it out of the epoll set.
            // SAFETY: a descriptor we own, closed once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A loopback pair: our end as a backend stream, the peer's as a blocking std stream.
    fn pair() -> (Stream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        let s = match rt::current() {
            // SAFETY: an accepted socket whose ownership moves into glommio's stream.
            Backend::Uring => Stream::from_glommio(unsafe {
                glommio::net::TcpStream::from_raw_fd(ours.into_raw_fd())
            }),
            Backend::Epoll => {
                ours.set_nonblocking(true).unwrap();
                Stream::from_tokio(tokio::net::TcpStream::from_std(ours).unwrap())
            }
        };
        (s, peer)
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    async fn read_some(s: &Stream) -> Vec<u8> {
        let mut got = Vec::new();
        let n = rt::timeout(
            Duration::from_secs(5),
            s.read_with(|b| got.extend_from_slice(b)),
        )
        .await
        .expect("read timed out")
        .unwrap();
        assert_eq!(n, got.len());
        got
    }

    /// What every backend must do: no wake-up without input, a wake-up (with the token) for
    /// data and for the peer's FIN, nothing lost across park and unpark, a shared stream is
    /// not parked, and a parked socket dropped is closed.
    async fn scenario() {
        let set = ParkSet::new().unwrap();
        let mut ready = Vec::new();
        let (s, mut peer) = pair();
        let p = Parkable::new(s);

        // Shared: stays live.
        let extra = p.stream().unwrap();
        assert!(!p.park(&set, 7).unwrap(), "a shared stream must not park");
        assert!(!p.is_parked() && p.stream().is_some());
        drop(extra);

        // A read pending before parking (its waker registered with the backend) is not woken
        // by the park: the connection's task would unpark at once.
        let wakes = Arc::new(CountWakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let s = p.stream().unwrap();
        let pending = s.poll_read_with(&mut Context::from_waker(&waker), &mut |_| {});
        assert!(pending.is_pending());
        // Let the backend submit its poll (glommio: the io_uring POLL_ADD).
        rt::sleep(Duration::from_millis(20)).await;
        drop(s);
        assert!(p.park(&set, 7).unwrap());
        assert!(p.is_parked() && p.stream().is_none());
        assert!(
            rt::timeout(Duration::from_millis(200), set.wait(&mut ready))
                .await
                .is_none(),
            "woken with no input: {ready:?}"
        );
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            0,
            "parking woke the reader"
        );

        peer.write_all(b"hello").unwrap();
        rt::timeout(Duration::from_secs(5), set.wait(&mut ready))
            .await
            .expect("no wake-up for data")
            .unwrap();
        assert_eq!(ready, [7]);
        p.unpark(&set).unwrap();
        assert!(!p.is_parked());
        let s = p.stream().unwrap();
        assert_eq!(read_some(&s).await, b"hello");
        // Writes work after the unpark.
        let mut out: &[u8] = b"back";
        while !out.is_empty() {
            let n = std::future::poll_fn(|cx| s.poll_write(cx, out))
                .await
                .unwrap();
            out = &out[n..];
        }
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"back");
        drop(s);

        // Input that arrived just before parking is reported too (epoll checks on insert).
        peer.write_all(b"early").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(p.park(&set, 8).unwrap());
        rt::timeout(Duration::from_secs(5), set.wait(&mut ready))
            .await
            .expect("no wake-up for data there before parking")
            .unwrap();
        assert_eq!(ready, [8]);
        p.unpark(&set).unwrap();
        assert_eq!(read_some(&p.stream().unwrap()).await, b"early");

        // While parked: written to, and its input peeked and partly consumed, all without
        // unparking (keep-alive pings and their pongs); a live socket refuses these.
        assert!(p.send_parked(b"x").is_err() && p.peek_parked(&mut [0u8; 4]).is_err());
        assert!(p.park(&set, 11).unwrap());
        assert_eq!(p.send_parked(b"ping").unwrap(), 4);
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        peer.write_all(b"pong!").unwrap();
        rt::timeout(Duration::from_secs(5), set.wait(&mut ready))
            .await
            .expect("no wake-up for the pong")
            .unwrap();
        assert_eq!(ready, [11]);
        let mut peeked = [0u8; 8];
        assert_eq!(p.peek_parked(&mut peeked).unwrap(), 5);
        assert_eq!(
            p.peek_parked(&mut peeked).unwrap(),
            5,
            "a peek consumes nothing"
        );
        assert_eq!(&peeked[..5], b"pong!");
        assert_eq!(p.discard_parked(4).unwrap(), 4);
        assert!(p.is_parked());
        p.unpark(&set).unwrap();
        assert_eq!(read_some(&p.stream().unwrap()).await, b"!");

        // The peer's FIN wakes a parked socket; the read then sees the end.
        assert!(p.park(&set, 9).unwrap());
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        rt::timeout(Duration::from_secs(5), set.wait(&mut ready))
            .await
            .expect("no wake-up for FIN")
            .unwrap();
        assert_eq!(ready, [9]);
        p.unpark(&set).unwrap();
        assert_eq!(read_some(&p.stream().unwrap()).await, b"");

        // Dropped while parked: the socket is closed (the peer reads its end).
        assert!(p.park(&set, 10).unwrap());
        drop(p);
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "parked socket not closed");

        // Wait cycles close what they open (glommio's duplicate of the epoll descriptor).
        let before = open_fds();
        for _ in 0..50 {
            let (s, mut peer) = pair();
            let p = Parkable::new(s);
            assert!(p.park(&set, 1).unwrap());
            peer.write_all(b"x").unwrap();
            rt::timeout(Duration::from_secs(5), set.wait(&mut ready))
                .await
                .unwrap()
                .unwrap();
            p.unpark(&set).unwrap();
        }
        let after = open_fds();
        // Other tests may hold a few descriptors meanwhile; a leak would be one per cycle.
        assert!(after < before + 10, "descriptors leak: {before} -> {after}");
    }

    #[test]
    fn park_set_on_glommio() {
        glommio::LocalExecutorBuilder::default()
            .io_memory(64 * 1024)
            .spawn(scenario)
            .expect("glommio executor")
            .join()
            .expect("executor thread");
    }

    #[test]
    fn park_set_on_tokio() {
        let rtm = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rtm, async {
            rt::set_current(Backend::Epoll);
            scenario().await
        });
    }
}
