//! The crate's one error type.

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Source: configuration. The registry URL is malformed or names an unknown scheme (known:
    /// `memory://`, `redis://`, `rediss://`, `redis-cluster://`, `rediss-cluster://`), or its
    /// TLS CA file is unreadable. Not retryable: fix the configuration.
    #[error("invalid registry URL: {0}")]
    InvalidUrl(String),

    /// Source: configuration. A recognised form not supported yet (unix sockets). Not
    /// retryable.
    #[error("unsupported registry URL: {0}")]
    Unsupported(String),

    /// Source: caller. The user id is empty or contains `{`, `}` or `|`, which would break the
    /// key's cluster hash tag or the member encoding. Nothing was sent; not retryable.
    #[error("invalid user id {0:?}: must be non-empty without '{{', '}}' or '|'")]
    InvalidUser(String),

    /// Source: caller. The instance id or address contains `|` (the member separator).
    /// Nothing was sent; not retryable.
    #[error("invalid session entry: {0}")]
    InvalidEntry(String),

    /// Source: the Redis connection (down, timed out, overloaded, protocol violation). The
    /// connection recovers by itself; [`Error::is_retryable`] tells whether nothing was sent.
    /// Every registry operation is idempotent, so retrying after a timeout is safe as well.
    #[error("registry Redis unavailable: {0}")]
    Redis(#[from] resp_client::Error),

    /// Source: Redis. It refused a command (e.g. `WRONGTYPE`: a foreign key of another type
    /// under Connect's key name, or a Redis older than 7.0 without `PEXPIRE NX/GT`). The
    /// connection is fine; retrying will not help until the data or server is fixed.
    #[error("registry Redis refused a command: {0}")]
    Command(String),

    /// Source: Redis. A reply of an unexpected shape (not what the command returns). The
    /// connection is fine; this points at a server that is not Redis 7 or a bug.
    #[error("unexpected registry reply: {0}")]
    UnexpectedReply(String),
}

impl Error {
    /// True when nothing was sent and trying again later is reasonable (Redis disconnected or
    /// the client's in-flight bound reached).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Redis(e) if e.is_retryable())
    }
}
