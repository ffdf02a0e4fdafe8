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
//! Cluster mode (`redis-cluster://h1:p1,h2:p2`, ElastiCache cluster mode) keeps one such
//! pipelined connection per master and routes every command by its key's slot; TLS
//! (`rediss://`, `rediss-cluster://`) runs rustls over the same sockets.
//!
//! # Layout
//! Sans-I/O (no socket, no clock; unit-tested byte by byte):
//! - [`codec`]: command encoding into a `BytesMut`, the [`Int`] argument formatter, and the
//!   bounded reply [`Decoder`] (RESP2, RESP3 when enabled; built in one pass after the
//!   `scan` module has checked every announced length against the limits).
//! - `scan` (private): the bounded, resumable scan that finds where one reply ends.
//! - [`reply`]: [`Reply`], one decoded reply (RESP2, or RESP3 after `HELLO 3`).
//! - [`pipeline`]: [`Pipeline`], the FIFO of pending requests with deadlines and in-flight
//!   bound; time comes in as an argument.
//! - [`slot`]: CRC16 key slots and `{hash tag}` rules.
//! - [`route`]: which key routes a command (from its arguments or its encoded bytes).
//! - [`redirect`]: `MOVED`/`ASK`/`TRYAGAIN`/`CLUSTERDOWN`... error replies.
//! - [`topology`]: [`topology::Topology`], the slot map parsed from `CLUSTER SHARDS` or
//!   `CLUSTER SLOTS` replies.
//! - [`config`]: [`Config`], [`TlsConfig`] and the URL parser.
//! - [`error`]: [`Error`], the crate's one error type.
//! - [`Backoff`] (from `runtime`): jittered exponential reconnect delays.
//!
//! Runtime glue (tasks, timers and sockets through the `runtime` seam):
//! - [`client`]: [`Client`] (the cheap `Clone` handle whose `submit*` calls queue at call time),
//!   [`ReplyFuture`], [`BatchFuture`], [`Batch`], [`Stats`]; one node's client.
//! - `cluster` (private): the cluster client: slot table, per-master node clients, redirect
//!   and failover retries, batch split and reassembly, slot map reloads.
//! - `conn` (private): the state shared by a node client's clones and the background task
//!   (writer, reader, watchdog, reconnect with backoff).
//! - `connect` (private): opening one connection (TCP connect, TLS, `HELLO 3` or `AUTH`,
//!   `SELECT`).
//! - `tls` (private): rustls' sans-I/O connection driven over the runtime's TCP stream.
//!
//! # Failure behaviour
//! Requests made during the first connection attempt wait for it (at most
//! [`Config::connect_timeout`]). After that, while disconnected, requests fail at once with
//! [`Error::Disconnected`]; requests in flight when the connection dies get
//! [`Error::ConnectionLost`]; a request without a reply after [`Config::command_timeout`] gets
//! [`Error::Timeout`] and resets the connection; beyond [`Config::max_in_flight`] requests fail
//! with [`Error::Overloaded`] ([`Client::ready`] waits for room instead). Nothing ever waits
//! longer than the command timeout. A call may have a shorter deadline of its own
//! ([`Client::submit_with_timeout`], [`Batch::with_timeout`]): it then fails with
//! [`Error::Timeout`] at that deadline, and the connection is kept (the late reply is dropped).
//!
//! In cluster mode a command is resent only when Redis certainly did not run it (`MOVED`,
//! `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, or its node disconnected before sending):
//! redirects are followed at once (at most [`Config::max_redirects`]), and a command whose
//! master is unreachable waits for the slot map to show a new one, within another command
//! timeout, before failing with [`Error::Disconnected`] or [`Error::ClusterUnavailable`]. A
//! cluster command therefore completes within about twice the command timeout. Commands that
//! may have run ([`Error::ConnectionLost`], [`Error::Timeout`]) are never resent.

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
