//! The runtime seam: everything Connect's servers need from the executor, in one place.
//!
//! Gateways and routers are thread-per-core: one single-threaded executor per shard, each with its
//! own `SO_REUSEPORT` listener, no work stealing and no locks on the hot path. This crate holds the
//! thin glue between that model and its two event loops, glommio (io_uring) and tokio
//! current-thread (epoll, for hosts that deny io_uring), so that the protocol crates stay free of
//! I/O and the same shard code runs on both.
//!
//! # Layout
//! - [`rt`]: the backends (glommio over io_uring, tokio over epoll); spawn, sleep, timeout.
//! - [`probe`]: the `--io` setting and the start-up io_uring probe.
//! - [`shards`]: start one pinned executor per shard and join them.
//! - [`net`]: listeners and connects on the shard's backend.
//! - [`listen`]: bind `SO_REUSEPORT` listeners up front, so bind errors surface before start-up.
//! - [`io`]: a shared-ownership TCP stream whose read and write halves may live in different
//!   tasks, or be polled from one hand-written future (`poll_read_with`, `poll_write`: the
//!   gateway's one task per client); reads go into a per-shard scratch buffer handed out
//!   mutably, so decoders work in place and an idle connection holds no read buffer.
//! - [`park`]: parking idle sockets in a per-shard epoll set, so the event loop keeps no state
//!   for them (glommio's poll source, tokio's registration, the stream object).
//! - [`outbox`]: a batching write buffer drained by one writer task (many frames per syscall).
//! - [`signal`]: a one-waiter wake-up flag, cheaper than a channel.
//! - [`backoff`]: jittered exponential backoff (pure, time passed in).
//! - [`deadlines`]: a FIFO of same-timeout deadlines (pure, time passed in).
//! - [`link`]: writer task and frame read loop shared by router<->gateway links.
//! - [`log`]: the binaries' log set-up.
//! - [`clock`]: wall-clock milliseconds for timestamps.

pub mod backoff;
pub mod clock;
pub mod deadlines;
pub mod io;
pub mod link;
pub mod listen;
pub mod log;
pub mod net;
pub mod outbox;
pub mod park;
pub mod probe;
pub mod rt;
pub mod shards;
pub mod signal;

pub use glommio;
