//! Connect's pipelined Redis client for our shard executors (glommio or tokio, via the `runtime`
//! seam): one connection per shard, many requests in
//! flight, replies matched in order.
//!
//! The protocol half is sans-I/O ([`codec`], [`pipeline`]: no socket, no clock,
//! tested byte by byte); [`Client`] is the thin runtime glue around it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), resp_client::Error> {
//! use resp_client::{Client, Config};
//! let client = Client::new(Config::from_url("redis://127.0.0.1:6379")?);
//! client.wait_connected(std::time::Duration::from_secs(1)).await?;
//! // Both commands are queued here, in this order, before anything is awaited.
//! let set = client.submit(&[b"SET", b"k", b"v"]);
//! let get = client.submit(&[b"GET", b"k"]);
//! set.await?;
//! assert_eq!(get.await?.as_bytes().map(|b| &b[..]), Some(&b"v"[..]));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`codec`]: command encoding into a `BytesMut`, the [`Int`] argument formatter, and the
//!   bounded reply [`Decoder`] (RESP2 via `redis-protocol`, after the `scan` module has
//!   checked every announced length against the limits).
//! - `scan` (private): the bounded, resumable scan that finds where one reply ends.
//! - [`reply`]: [`Reply`], one decoded reply (RESP2 today, RESP3 variants reserved).
//! - [`pipeline`]: [`Pipeline`], the FIFO of pending requests with deadlines and in-flight
//!   bound; time comes in as an argument.
//! - [`Backoff`] (from `runtime`): jittered exponential reconnect delays.
//! - [`config`]: [`Config`] and its `redis://` URL parser.
//! - [`client`]: [`Client`] (the cheap `Clone` handle whose `submit*` calls queue at call time),
//!   [`ReplyFuture`], [`BatchFuture`], [`Batch`], [`Stats`].
//! - `conn` (private): the state shared by a client's clones and the background task
//!   (writer, reader, watchdog, reconnect with backoff).
//! - `connect` (private): opening one connection (TCP connect, `AUTH`/`SELECT`).
//! - [`error`]: [`Error`], the crate's one error type.
//!
//! # Failure behaviour
//! Requests made during the first connection attempt wait for it (at most
//! [`Config::connect_timeout`]). After that, while disconnected, requests fail at once with
//! [`Error::Disconnected`]; requests in flight when the connection dies get [`Error::ConnectionLost`]; a request without a reply after
//! [`Config::command_timeout`] gets [`Error::Timeout`] and resets the connection; beyond
//! [`Config::max_in_flight`] requests fail with [`Error::Overloaded`]. Nothing ever waits
//! longer than the command timeout.

pub mod client;
mod cluster;
pub mod codec;
pub mod config;
mod conn;
mod connect;
pub mod error;
pub mod pipeline;
pub mod redirect;
pub mod reply;
pub mod route;
mod scan;
pub mod slot;
mod tls;
pub mod topology;

pub use client::{Batch, BatchFuture, Client, ReplyFuture, Stats};
pub use codec::{Decoder, Int};
pub use config::{Config, TlsConfig};
pub use error::Error;
pub use pipeline::Pipeline;
pub use reply::Reply;
pub use runtime::backoff::Backoff;
