//! The operations surface shared by the `gateway` and `router` binaries: Prometheus metrics,
//! the admin HTTP port (`/livez`, `/readyz`, `/metrics`), and signal-driven draining.
//!
//! None of this is on the message path: shards bump relaxed atomics in their own [`metrics`]
//! structs (one cache line region per shard, no sharing between cores while serving), and a
//! plain thread answers the admin port by reading them.
//!
//! # Layout
//! - [`metrics`]: counters, gauges and fixed-bucket histograms over atomics, and their
//!   Prometheus text rendering.
//! - [`admin`]: the admin HTTP server thread.
//! - [`drain`]: the process-wide draining flag and deadline, set on SIGTERM.
//! - [`signals`]: block SIGTERM/SIGINT for every thread and wait for one in `main`.

pub mod admin;
pub mod drain;
pub mod metrics;
pub mod signals;
