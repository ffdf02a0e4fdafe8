//! The crate's one error type.

/// Everything that can go wrong between a caller and Redis.
///
/// Each variant says whether the connection survives it and what a caller should do. "Retryable"
/// means nothing was sent, so retrying any command is safe; "may have executed" means the command
/// may have reached Redis, so retry only idempotent commands (`SET`, `ZADD`, `ZREM`, reads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Source: client. Not connected to Redis right now (the first connection attempt failed,
    /// or Redis went away and the client is reconnecting with backoff). Nothing was sent.
    /// Retryable: retry later, or wait with [`crate::Client::wait_connected`].
    #[error("not connected to Redis (reconnecting); nothing was sent")]
    Disconnected,

    /// Source: Redis / network. The connection dropped (or was reset after another request's
    /// timeout or a protocol error) while this request was queued or in flight. It may have
    /// executed. The client reconnects on its own.
    #[error("connection to Redis lost with the request in flight; it may have executed")]
    ConnectionLost,

    /// Source: Redis. No reply within [`crate::Config::command_timeout`]. It may have executed.
    /// In-order reply matching cannot recover from a missing reply, so the connection is reset
    /// (other in-flight requests get [`Error::ConnectionLost`]) and re-established.
    ///
    /// Also: no reply within a call's own deadline ([`crate::Client::submit_with_timeout`],
    /// [`crate::Batch::with_timeout`]). Then only that call ends: the connection is kept and
    /// the late reply is dropped.
    #[error("no reply from Redis within the command timeout")]
    Timeout,

    /// Source: client (backpressure). [`crate::Config::max_in_flight`] requests are already
    /// waiting for replies. Nothing was sent; the connection is fine. Shed load or retry later.
    #[error("{max_in_flight} Redis requests already in flight; nothing was sent")]
    Overloaded {
        /// The configured limit that was reached.
        max_in_flight: usize,
    },

    /// Source: Redis (or whatever listens on its address). It sent bytes that are not valid
    /// RESP2, a reply nobody asked for, or a reply over [`crate::Config::max_reply_bytes`] /
    /// [`crate::Config::max_array_len`] (rejected from its announced length, before anything
    /// that large is allocated). Fatal for the connection: it is reset and re-established;
    /// every other in-flight request gets [`Error::ConnectionLost`]. Raise the limits if such
    /// replies are expected.
    #[error("Redis protocol violation: {0}")]
    Protocol(String),

    /// Source: configuration. A `redis://` URL or [`crate::Config`] value is malformed; the
    /// message says which part. Not retryable: fix the configuration.
    #[error("invalid Redis configuration: {0}")]
    InvalidConfig(String),

    /// Source: Redis Cluster. The command could not be served: its slot has no reachable
    /// master (failover in progress, `CLUSTERDOWN`, `TRYAGAIN` during a migration) until the
    /// command timeout passed, or it was redirected more than [`crate::Config::max_redirects`]
    /// times. Redis did not execute it. Retryable: the client reloads the slot map by itself.
    #[error("Redis Cluster cannot serve the command now: {0}; it was not executed")]
    ClusterUnavailable(String),

    /// Source: configuration. A valid form this client does not support yet (unix sockets).
    /// Not retryable.
    #[error("unsupported Redis configuration: {0}")]
    Unsupported(String),

    /// Source: caller. The command cannot be sent (e.g. it has no arguments: Redis would
    /// silently ignore an empty command and every later reply would be matched to the wrong
    /// request). Nothing was sent; the connection is fine. Fix the caller.
    #[error("invalid command: {0}")]
    InvalidCommand(&'static str),

    /// Source: client. The [`crate::Client`] was shut down (its last handle dropped) before
    /// this request completed. Not retryable on this client.
    #[error("Redis client shut down")]
    Closed,
}

impl Error {
    /// True when nothing was sent and retrying later is safe for any command.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Disconnected | Error::Overloaded { .. } | Error::ClusterUnavailable(_)
        )
    }

    /// True when the error ended (or will end) the connection it happened on.
    pub fn is_connection_fatal(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLost | Error::Timeout | Error::Protocol(_)
        )
    }
}
