//! [`Reply`]: one decoded Redis reply, owning its bytes as cheap [`Bytes`] slices of the read
//! buffer.

use bytes::Bytes;

/// One reply from Redis.
///
/// A RESP2 connection yields the first six variants. A connection that negotiated RESP3
/// (`HELLO 3`, see [`crate::Config::resp3`]) also yields the RESP3 ones; RESP3 nulls are
/// `Nil`, blob errors are `Error`, and attributes are dropped (the value they annotate is
/// kept). Pushes are never handed to a request. The enum is `#[non_exhaustive]` for what
/// later protocol versions add (streamed aggregates are refused today).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// `$-1` / `*-1` (RESP2) or `_` (RESP3): no value, e.g. `GET` of a missing key.
    Nil,
    /// `+OK`: a status line.
    Simple(Bytes),
    /// `-ERR ...`: Redis refused this one command. Not a transport failure: the connection
    /// and other requests are unaffected.
    Error(Bytes),
    /// `:42`.
    Int(i64),
    /// `$3\r\nfoo`: a binary-safe string.
    Bulk(Bytes),
    /// `*N`: N nested replies.
    Array(Vec<Reply>),
    /// RESP3 `,`: a double.
    Double(f64),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `(`: an integer beyond 64 bits, as its decimal text.
    BigNumber(Bytes),
    /// RESP3 `=`: a string with a three-letter format (`txt`, `mkd`).
    Verbatim {
        /// The format, e.g. `b"txt"`.
        format: Bytes,
        /// The text.
        text: Bytes,
    },
    /// RESP3 `%`: key/value pairs in the order Redis sent them.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`.
    Set(Vec<Reply>),
    /// RESP3 `>`: an out-of-band push (pub/sub, client tracking).
    Push(Vec<Reply>),
}

impl Reply {
    /// The bytes of a `Bulk` or `Simple` reply.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Bulk(b) | Reply::Simple(b) => Some(b),
            _ => None,
        }
    }

    /// The value of an `Int` reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// True for `Nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }

    /// True for `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s.as_ref() == b"OK")
    }

    /// The message of an `Error` reply, lossily as text.
    pub fn error_message(&self) -> Option<String> {
        match self {
            Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }
    }

    /// The elements of an `Array`, `Set` or `Push` reply.
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(v) | Reply::Set(v) | Reply::Push(v) => Some(v),
            _ => None,
        }
    }
}
